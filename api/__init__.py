"""The REST API under /api/v1, on top of actions: the HTTP surface that data owners call.

It owns the views and the request helpers only; every check and state change is a service
function of the layers below (registry, sessions, jobs, actions), which this package calls:

- ``urls.py``: the ``api_v1`` URL list, included by moai_site/urls.py under ``api/v1/``;
- ``models_views.py``: the model list, one model, its client bundle and preprocessing file;
- ``sessions.py``: opening a session with its evaluation keys, reading it, closing it;
- ``jobs.py``: submitting jobs (optionally waiting for the output), reading, cancelling, results;
- ``lookup.py``: a client's own session for a request (expired at request time once its TTL
  has passed), and the request's audit actor.

Its serializers (the OpenAPI shapes) stay with their apps: sessions/serializers.py,
jobs/serializers.py. compat's example-server protocols, above this package, reuse lookup.py
and the key checks' error mapping of sessions.py.
"""
