"""Key sessions, above keys and registry: evaluation keys of one client for one model
version, with a TTL; opening one, suspension, the status-to-error mapping and the
request lookup. Ending sessions (which stops their jobs) is in actions.services.

The app label is ``key_sessions``: ``sessions`` belongs to ``django.contrib.sessions``.
"""
