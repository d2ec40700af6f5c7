"""gunicorn settings for the web process, read from the environment."""

from __future__ import annotations

import os

bind = os.environ.get("MOAI_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("MOAI_WEB_WORKERS", "2"))
# Threads let one process keep serving polls while another request streams a large key upload.
threads = int(os.environ.get("MOAI_WEB_THREADS", "4"))
worker_class = "gthread"
# A 512 MiB key upload on a slow link takes a while; the socket timeout is per read, not per request.
timeout = int(os.environ.get("MOAI_WEB_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("MOAI_WEB_GRACEFUL_TIMEOUT", "30"))
accesslog = "-"
errorlog = "-"
# Request lines and headers are tiny in this API; anything large is hostile.
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190
