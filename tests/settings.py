"""Settings for the test run: real PostgreSQL and Redis where they are reachable.

``make test`` points ``MOAI_TEST_DATABASE_URL`` and ``MOAI_TEST_REDIS_URL`` at the
machine's services. When they are unreachable, a developer's run falls back to the
embedded defaults with a warning, but with ``CI`` or ``MOAI_TEST_REQUIRE_SERVICES``
set the run fails instead of quietly testing something else.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from urllib.parse import urlparse

DATABASE_URL = os.environ.get("MOAI_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/moai")
REDIS_URL = os.environ.get("MOAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE = any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("CI", "MOAI_TEST_REQUIRE_SERVICES"))


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=2):
            return True
    except OSError:
        return False


USING_SERVICES = _reachable(DATABASE_URL) and _reachable(REDIS_URL)
if not USING_SERVICES:
    message = f"PostgreSQL ({DATABASE_URL}) or Redis ({REDIS_URL}) is unreachable"
    if REQUIRE:
        raise RuntimeError(message + "; CI requires both (start them, or unset CI to use the embedded defaults)")
    print(f"WARNING: {message}; testing on SQLite and the filesystem broker", file=sys.stderr)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
else:
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ["REDIS_URL"] = REDIS_URL

# One data folder per test run (and per xdist worker), shared with the processes the tests start.
os.environ.setdefault("MOAI_DATA_DIR", tempfile.mkdtemp(prefix="moai-test-"))
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-with-enough-length-for-hmac-0123456789")
os.environ.setdefault("MOAI_AUDIT_KEY", "test-only-audit-key-with-enough-length-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("MOAI_WORKER_POOL_SIZE", "2")

# MOAI_TEST_BLOB_STORAGE=s3 runs the suite with blobs in an S3 bucket: moto's S3 server on
# loopback (scripts/s3local.py; no object store runs on these machines), started by the
# conftest's session fixture. Set here, before the settings read it, so that the processes
# the end-to-end tests start inherit the same configuration.
BLOB_STORAGE = os.environ.get("MOAI_TEST_BLOB_STORAGE", "filesystem")
if BLOB_STORAGE == "s3":
    from scripts.s3local import LocalS3

    S3: LocalS3 | None = LocalS3()
    os.environ.update(S3.env())
elif BLOB_STORAGE == "filesystem":
    S3 = None
else:
    raise RuntimeError(f"MOAI_TEST_BLOB_STORAGE must be filesystem or s3, got {BLOB_STORAGE!r}")

from moai_site.settings import *  # noqa: E402,F403

# In-process tests run tasks inline when they choose to execute on_commit callbacks;
# the end-to-end tests start real workers with the plain settings instead.
CELERY_TASK_ALWAYS_EAGER = True
# No pool process warms keys in process, so opening a session would hold for the whole wait
# (15 s) for a notice that never comes; the end-to-end tests' workers do warm them.
MOAI_SESSION_WARMUP_WAIT_SECONDS = 0.0

# A file, not memory, so that the processes the end-to-end tests start see the same data.
DATABASES["default"].setdefault("TEST", {})  # noqa: F405
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = str(MOAI_DATA_DIR / "test.sqlite3")  # noqa: F405
