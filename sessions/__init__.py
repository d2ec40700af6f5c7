"""Key sessions, above keys and registry: evaluation keys of one client for one model
version, with a TTL; opening one, lifting a suspension, the status-to-error mapping.
Ending sessions (which stops their jobs) is in jobs.ending; their REST views and the
request lookup are in api; their admin and the expiry sweep are in actions.

The app label is ``key_sessions``: ``sessions`` belongs to ``django.contrib.sessions``.
"""
