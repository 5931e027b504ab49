"""CRM sync, the store's edge towards the CRMs a team lives in (HubSpot, Salesforce, a signed webhook).

``outbox`` writes a row for every change a CRM must hear of, in the transaction of the change; ``worker`` claims
and delivers those rows through the adapters (``hubspot``, ``salesforce``, ``webhook``) with retries, and pulls
contacts back (``pull``). Nothing here imports the app (``voice``): it is handed a :class:`SyncSettings`.
"""
