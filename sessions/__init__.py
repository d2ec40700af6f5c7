"""Key sessions: evaluation keys of one client for one model version, with a TTL.

The app label is ``key_sessions``: ``sessions`` belongs to ``django.contrib.sessions``.
"""
