"""The rep console: server-rendered pages under ``/console`` on the app's own port, with a little plain JavaScript
(``static/console.js``) that keeps the live panels current and submits the controls with fetch.

Modules: ``sessions`` (the cookie: who is signed in, the CSRF token), ``wire`` (the services' views as JSON, for the
pages, ``/console/state``, the reps' API and the live-events server), ``auth`` (signing in and out), ``pages``,
``actions`` (the controls' fetch calls), ``app`` (the blueprint that holds them, its checks, and ``install``).
"""
