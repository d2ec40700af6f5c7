"""Operator actions that cross layers, above jobs; an installed app without models.

- ``services.py``: rotating a client's keys, disabling or enabling it, ending a selection of
  sessions, the expiry sweep, expiring a lapsed session at request time. Ending sessions
  together with their jobs is below, in ``jobs.ending``.
- ``admin.py``: the admin of API clients and of key sessions, whose actions end sessions
  (moved here from keys and sessions, which cannot import this package).
- ``management/commands/``: ``disable_client``, ``enable_client``, ``rotate_client_keys``,
  ``expire_sessions``, ``invalidate_sessions``.
- ``tasks.py``: the beat task that runs the sweep, still named ``sessions.tasks.expire_sessions``.
"""
