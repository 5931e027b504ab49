"""The console's live updates: an asyncio Server-Sent Events server (``server``) fed by the store's change signals
(``feeds``), run by ``warmline console-events`` beside gunicorn's workers."""
