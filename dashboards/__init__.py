"""Dashboards, the top of the stack: read-only views over every app's tables.

The admin site with its overview page, the queue report (``queue_status``), the
shared-state metric collectors and the ``/metrics``, ``/healthz`` and ``/readyz``
endpoints. Nothing here changes state; every app may be imported, none imports this.
"""
