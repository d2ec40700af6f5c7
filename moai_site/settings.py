"""Django settings, all read from the environment (see API.md "Configuration").

With neither ``DATABASE_URL`` nor ``REDIS_URL`` set, the service runs on embedded
defaults (SQLite and a filesystem Celery broker under ``MOAI_DATA_DIR``) so that
``make demo`` works on a bare machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

from base.env import ConfigError, env_bool, env_data_dir, env_float, env_int, env_list, env_str
from moai_site.logs import JSON_FORMATTER

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
_secret = env_str("SECRET_KEY")
if not _secret:
    if not DEBUG:
        raise ConfigError("SECRET_KEY must be set when DEBUG is off")
    _secret = "moai-development-only-secret-key-not-for-production-use"
SECRET_KEY: str = _secret
# The audit log's HMAC key, its own and not derived from SECRET_KEY (which every pod
# holds for sessions and CSRF). Keys rotated out stay here so older records still verify.
_audit_key = env_str("MOAI_AUDIT_KEY")
if not _audit_key:
    if not DEBUG:
        raise ConfigError("MOAI_AUDIT_KEY must be set when DEBUG is off (README: Configuration)")
    _audit_key = "moai-development-only-audit-key-not-for-production-use"
if len(_audit_key) < 32 and not DEBUG:
    raise ConfigError("MOAI_AUDIT_KEY must be at least 32 characters (e.g. openssl rand -hex 32)")
MOAI_AUDIT_KEY: str = _audit_key
MOAI_AUDIT_PREVIOUS_KEYS = env_list("MOAI_AUDIT_PREVIOUS_KEYS", [])
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

# Folders under it are created when a process starts (base.folders), never on import.
MOAI_DATA_DIR = env_data_dir()

MOAI_SESSION_TTL_SECONDS = env_int("MOAI_SESSION_TTL_SECONDS", 3600, minimum=1)
MOAI_WORKER_POOL_SIZE = env_int("MOAI_WORKER_POOL_SIZE", os.cpu_count() or 1, minimum=1)
MOAI_WORKER_METRICS_PORT = env_int("MOAI_WORKER_METRICS_PORT", 9808, minimum=0)
MOAI_MAX_KEY_BYTES = env_int("MOAI_MAX_KEY_BYTES", 512 * 1024 * 1024, minimum=1)
MOAI_MAX_CIPHERTEXT_BYTES = env_int("MOAI_MAX_CIPHERTEXT_BYTES", 16 * 1024 * 1024, minimum=1)
# A job's ciphertexts this small (all of them together) travel in its broker message as well as
# to storage, and its outputs in the job-end notice to waiting requests: the worker and the
# waiting request skip a read from the store each. 0 sends them through storage only.
MOAI_INLINE_CIPHERTEXT_BYTES = env_int("MOAI_INLINE_CIPHERTEXT_BYTES", 256 * 1024, minimum=0)
# Uploaded evaluation keys are deserialized once, each upload in a process of its own
# (keys.validator): at most MOAI_KEY_CHECKS at a time per web process, each for at most
# MOAI_KEY_CHECK_SECONDS and with an address space of MOAI_KEY_CHECK_MEMORY_FACTOR times
# the model's key size plus MOAI_KEY_CHECK_BASE_MB over what the runtime's libraries map.
# Deserializing 34 MB of keys adds about 70 MB (the bytes read and the object built).
MOAI_KEY_CHECKS = env_int("MOAI_KEY_CHECKS", 2, minimum=1)
MOAI_KEY_CHECK_SECONDS = env_float("MOAI_KEY_CHECK_SECONDS", 30.0, minimum=1.0)
MOAI_KEY_CHECK_MEMORY_FACTOR = env_int("MOAI_KEY_CHECK_MEMORY_FACTOR", 4, minimum=1)
MOAI_KEY_CHECK_BASE_MB = env_int("MOAI_KEY_CHECK_BASE_MB", 256, minimum=16)
# Keys stored with no open session (a web process died mid-upload, a store failed an erasure)
# are removed by the expiry sweep once this old: longer than an upload and its checks take.
MOAI_ORPHAN_KEYS_SECONDS = env_int("MOAI_ORPHAN_KEYS_SECONDS", 3600, minimum=60)
# A warm key object holds about 8x its serialized size (DESIGN.md), so the cache
# is bounded by that estimate, not by the bytes on disk.
MOAI_KEY_CACHE_BYTES = env_int("MOAI_KEY_CACHE_BYTES", 4 * 1024 * 1024 * 1024, minimum=0)
MOAI_KEY_MEMORY_FACTOR = 8
# Inputs of one batch run side by side in this many threads of a pool process, each
# with its share of the process's OpenMP threads; 1 runs them one after the other
# with all of them. 0: one input per OpenMP thread of the process. The runtime lets go
# of the GIL while a circuit runs; `python -m bench` measures both ways (README).
MOAI_BATCH_PARALLELISM = env_int("MOAI_BATCH_PARALLELISM", 0, minimum=0)
# A pool process prefers queued jobs of sessions whose keys it holds warm, unless the
# oldest queued job has waited this long: then that one goes first. 0: oldest first always.
MOAI_AFFINITY_MAX_WAIT_SECONDS = env_float("MOAI_AFFINITY_MAX_WAIT_SECONDS", 2.0, minimum=0.0)
MOAI_KEY_REVOCATION_SECONDS = env_int("MOAI_KEY_REVOCATION_SECONDS", 2, minimum=1)
# How often a pool process looks for newly registered model versions to load ahead of jobs
# (a Redis notice usually tells it at once; the poll catches a lost one).
MOAI_MODEL_PRELOAD_SECONDS = env_float("MOAI_MODEL_PRELOAD_SECONDS", 30.0, minimum=0.1)
# How long opening a session holds its answer until a worker has warmed the keys (0: not at all).
MOAI_SESSION_WARMUP_WAIT_SECONDS = env_float("MOAI_SESSION_WARMUP_WAIT_SECONDS", 15.0, minimum=0.0)
MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT = env_int("MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT", 100, minimum=1)
# A session whose jobs abort the runtime this many times is suspended (sessions.services).
MOAI_MAX_CIRCUIT_ABORTS = env_int("MOAI_MAX_CIRCUIT_ABORTS", 3, minimum=1)
MOAI_RATE_LIMIT_SESSIONS = env_str("MOAI_RATE_LIMIT_SESSIONS", "60/min")
MOAI_RATE_LIMIT_JOBS = env_str("MOAI_RATE_LIMIT_JOBS", "1200/min")
# Every API call of one client, any endpoint: a client cannot hold the web tier with cheap GETs.
MOAI_RATE_LIMIT_REQUESTS = env_str("MOAI_RATE_LIMIT_REQUESTS", "3000/min")
# Requests one client may hold waiting (GET /jobs/{id}?wait=N and .../result?wait=N) across all
# web processes; past it a request is answered at once with the current state. Each held wait
# occupies a gunicorn thread, so this keeps one client from taking every thread.
MOAI_MAX_WAITS_PER_CLIENT = env_int("MOAI_MAX_WAITS_PER_CLIENT", 4, minimum=0)
# Requests one web process holds waiting, whichever clients sent them: half its threads by
# default. A gunicorn gthread worker goes on accepting connections (and nginx reuses kept-alive
# ones) while every thread is busy, and queues them behind the held waits; the per-client cap
# alone lets a few clients' waits land on one process and freeze it for everybody sent there.
MOAI_MAX_WAITS_PER_PROCESS = env_int(
    "MOAI_MAX_WAITS_PER_PROCESS", max(1, env_int("MOAI_WEB_THREADS", 16, minimum=1) // 2), minimum=0
)
MOAI_MAX_BATCH_INPUTS = env_int("MOAI_MAX_BATCH_INPUTS", 256, minimum=1)
MOAI_RESULT_RETENTION_SECONDS = env_int("MOAI_RESULT_RETENTION_SECONDS", 3600, minimum=0)

INSTALLED_APPS = [
    "dashboards.apps.MoaiAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_otp",
    "base.vendor_apps.AuthenticatorDevicesConfig",
    "base.vendor_apps.BackupCodeDevicesConfig",
    "base.vendor_apps.LoginAttemptsConfig",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    # Swagger UI's scripts and styles, served by the project itself (no CDN).
    "drf_spectacular_sidecar",
    # Bottom up: an app imports only apps listed before it (tests/test_layers.py). The REST
    # API (api/, between actions and compat) is a plain package that moai_site/urls.py includes.
    "base",
    "keys",
    "registry",
    "sessions.apps.KeySessionsConfig",
    "jobs",
    # Above jobs: operator actions (admin, commands, the sweep's beat task); listed before
    # compat, whose admin registers ApiClient again over this app's registration.
    "actions",
    "compat",
    "dashboards",
]

MIDDLEWARE = [
    # First, so that everything after it (audit records, admin lockouts) sees the client's address.
    "base.security.ProxyAddressMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "base.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: it turns a lockout into the response.
    "axes.middleware.AxesMiddleware",
]

# The admin console: password plus a TOTP code (or a static backup code), and
# lockout after repeated failures (django-axes) per username and address.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("MOAI_ADMIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("MOAI_ADMIN_LOCKOUT_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/moai/locked_out.html"
OTP_TOTP_ISSUER = "MOAI"
LOGIN_URL = "admin:login"

ROOT_URLCONF = "moai_site.urls"
WSGI_APPLICATION = "moai_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
    # A connection kept open across requests is checked before reuse once it has sat idle
    # (moai_site.postgresql), so a database restart costs one reconnect instead of one failed
    # request per process.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Readiness must answer within seconds, not wait on a dead server's TCP timeout.
        DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
        # The statements every request or job runs are prepared on the server after 5 runs
        # (moai_site.postgresql's prepared_cursor; Django's own cursors never prepare). Off
        # (0) behind a pooler that hands out connections per transaction and cannot carry
        # prepared statements (PgBouncer before 1.21, or without max_prepared_statements).
        if env_bool("MOAI_DATABASE_PREPARED_STATEMENTS", True):
            DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(MOAI_DATA_DIR / "moai.sqlite3"),
            # Web and worker processes share the file: wait for a lock instead of failing.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
# Read only by `manage.py apply_database_grants`, which the migration job runs as the schema's
# owner (DATABASE_URL there): the service's own role, which gets least privilege (docs/runbook.md).
MOAI_SERVICE_DATABASE_URL = env_str("MOAI_SERVICE_DATABASE_URL") or None
# django-prometheus's wrappers of the same backends add query and connection metrics.
# PostgreSQL's also health-checks only connections that sat idle (moai_site.postgresql).
_ENGINES = {
    "django.db.backends.postgresql": "moai_site.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = _ENGINES.get(DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL") or None
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django_prometheus.cache.backends.redis.NativeRedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(MOAI_DATA_DIR / "cache"),
        }
    }

# Blobs (model bundles, evaluation keys, ciphertexts, results, audit checkpoints): a folder
# under MOAI_DATA_DIR by default, or an S3-compatible bucket, where every pod of a cluster
# reaches them without a shared (ReadWriteMany) volume. Credentials may be left out to use
# the SDK's own chain (workload identity, IRSA, instance profile).
MOAI_BLOB_STORAGE = env_str("MOAI_BLOB_STORAGE", "filesystem") or "filesystem"
if MOAI_BLOB_STORAGE == "filesystem":
    _blobs: dict[str, Any] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MOAI_DATA_DIR / "blobs"), "file_permissions_mode": 0o600},
    }
elif MOAI_BLOB_STORAGE == "s3":
    _bucket = env_str("MOAI_S3_BUCKET")
    if not _bucket:
        raise ConfigError("MOAI_BLOB_STORAGE=s3 needs MOAI_S3_BUCKET")
    _blobs = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _bucket,
            "endpoint_url": env_str("MOAI_S3_ENDPOINT_URL") or None,
            "region_name": env_str("MOAI_S3_REGION") or None,
            "access_key": env_str("MOAI_S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("MOAI_S3_SECRET_ACCESS_KEY") or None,
            # "path" for most self-hosted stores (MinIO, Ceph); AWS takes either.
            "addressing_style": env_str("MOAI_S3_ADDRESSING_STYLE") or None,
            "location": env_str("MOAI_S3_PREFIX", "") or "",
            # Names are unique by construction; an existing object is an error (base.blobs.save).
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": False,
            # Reads past this spool to an unnamed temporary file instead of memory.
            "max_memory_size": 8 * 1024 * 1024,
        },
    }
else:
    raise ConfigError(f"MOAI_BLOB_STORAGE must be filesystem or s3, got {MOAI_BLOB_STORAGE!r}")
# How long a versioned bucket may keep an erased blob as a noncurrent version before
# `manage.py check --deploy` warns (registry.checks).
MOAI_S3_NONCURRENT_DAYS_MAX = env_int("MOAI_S3_NONCURRENT_DAYS_MAX", 1, minimum=1)
STORAGES = {
    "default": _blobs,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Uploads larger than this go to a temporary file, never to memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
FILE_UPLOAD_TEMP_DIR = str(MOAI_DATA_DIR / "tmp")
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = MOAI_MAX_BATCH_INPUTS

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# HTTPS hardening, on where the service is reached over TLS (gunicorn's own, or a proxy
# that sets X-Forwarded-Proto). Probes and metrics stay reachable over plain HTTP. On by
# itself whenever gunicorn serves TLS (MOAI_TLS_CERT); the chart sets it with TLS on.
# gunicorn listens on loopback behind the service's own nginx (the chart, `make stack`): the
# client's address is the X-Real-IP header nginx sets. Never on for a gunicorn reachable directly.
MOAI_BEHIND_PROXY = env_bool("MOAI_BEHIND_PROXY", False)
MOAI_HTTPS = env_bool("MOAI_HTTPS", bool(env_str("MOAI_TLS_CERT")))
if MOAI_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("MOAI_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = str(MOAI_DATA_DIR / "static")
# The admin's CSS and scripts are served by the web process itself (WhiteNoise), from
# the apps when they were not collected: no CDN and no extra server.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["keys.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["keys.authentication.IsApiClient"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
    "EXCEPTION_HANDLER": "base.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Counted per API client in Redis (keys.throttling; the file cache without it), so limits hold
    # across web processes: every call (requests), and on top of it opening sessions and submitting jobs.
    "DEFAULT_THROTTLE_CLASSES": ["keys.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "requests": MOAI_RATE_LIMIT_REQUESTS,
        "sessions": MOAI_RATE_LIMIT_SESSIONS,
        "jobs": MOAI_RATE_LIMIT_JOBS,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MOAI encrypted inference API",
    "DESCRIPTION": "Run Concrete-ML models on TFHE ciphertexts. The server never sees a plaintext.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI from drf-spectacular-sidecar's files, served here (WhiteNoise): no CDN, and the
    # page's own script comes from a URL of this origin, so the page needs no inline script (CSP).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ModelStatusEnum": ["active", "retired"],
        "JobStatusEnum": ["queued", "running", "succeeded", "failed", "cancelled"],
        "SessionStatusEnum": ["active", "expired", "invalidated"],
    },
}

# Celery: the job row is the source of truth; a message is a turn to run a job (its id, and
# its ciphertexts when they are small).
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # No copy of a delivered message is kept in Redis (kombu's acknowledgement emulation):
    # it stored each turn whole in a hash before handing it to a pool process and deleted it
    # after the job, two Redis transactions per job (1.1-1.6 ms of a warm logreg job, two
    # stacks side by side). What it would bring back is brought back from the job row: a
    # running job by its heartbeats' lapse, a queued one missing from the broker by the
    # recovery sweep (jobs.recovery), which counted a turn held in that hash as waiting and so
    # left its job until the visibility timeout (21 minutes) let kombu put the turn back. A
    # warm shutdown still puts back, from the worker's memory, the turns it had not started.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"ack_emulation": False}
else:
    from moai_site import filesystem_broker

    filesystem_broker.register()  # messages written whole before the worker can see them
    _broker_dir = MOAI_DATA_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's default is ./control, in whatever folder the process started from.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The filesystem transport polls; the default second would add up to 1 s to every job.
        "polling_interval": 0.05,
    }
# Results live in the database and blob storage, never in a Celery result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A job is acknowledged only once it ran, and a worker holds one message at a time:
# FHE jobs take seconds, so prefetching would park jobs behind a busy process.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A process killed by a circuit abort must not send its message round again:
# the job is failed instead (jobs.tasks), so a poisoned job cannot loop.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_CONCURRENCY = MOAI_WORKER_POOL_SIZE
# Celery's Django fixup closes every database connection before and after each task
# unless told to reuse them: a new PostgreSQL connection per job cost ~5 ms of a warm
# linear model's ~40 ms. Connections are kept (it closes them every 2 x this many tasks);
# jobs.tasks applies CONN_MAX_AGE and the health check before each task instead.
CELERY_DB_REUSE_MAX = 1000
# A circuit that runs away is stopped: first politely (the job fails with
# time_limit_exceeded), then by killing its process.
MOAI_JOB_SOFT_TIME_LIMIT = env_int("MOAI_JOB_SOFT_TIME_LIMIT", 900, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = MOAI_JOB_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = MOAI_JOB_SOFT_TIME_LIMIT + 60
# Warm keys make pool processes large (about 8x the serialized keys); a process over
# this resident size is replaced after its current job, which returns the memory.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("MOAI_WORKER_MAX_MEMORY_MB", 8192, minimum=64) * 1024
# Celery would replace Django's JSON logging with its own text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "moai"
# Beat keeps its last-run times in a file; the data folder is writable, the code folder may not be.
CELERY_BEAT_SCHEDULE_FILENAME = str(MOAI_DATA_DIR / "celerybeat-schedule")
# Recovery (jobs.recovery): a running job without a heartbeat for this long is
# taken back; heartbeats come every few seconds from the worker's parent process.
MOAI_JOB_LEASE_SECONDS = env_int("MOAI_JOB_LEASE_SECONDS", 60, minimum=5)
MOAI_JOB_HEARTBEAT_SECONDS = env_int("MOAI_JOB_HEARTBEAT_SECONDS", 5, minimum=1)
MOAI_JOB_MAX_ATTEMPTS = env_int("MOAI_JOB_MAX_ATTEMPTS", 3, minimum=1)
MOAI_REQUEUE_GRACE_SECONDS = env_int("MOAI_REQUEUE_GRACE_SECONDS", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "recover-jobs": {"task": "inference.tasks.recover_jobs", "schedule": 15.0},
    "expire-sessions": {"task": "sessions.tasks.expire_sessions", "schedule": 30.0},
    # Every audit write publishes a checkpoint once committed; this one covers a process
    # that died between its commit and its checkpoint, and records migrated from before.
    "checkpoint-audit-log": {"task": "ops.tasks.checkpoint_audit_log", "schedule": 60.0},
    "thin-audit-checkpoints": {"task": "ops.tasks.thin_audit_checkpoints", "schedule": 3600.0},
}
# Every audited write leaves a checkpoint file: a shard of them (10,000 records) whose newest is
# older than this many days keeps only that one, which, with the chain, finds what all of them
# did (base.audit_checkpoints.thin). 0 keeps every checkpoint for good.
MOAI_AUDIT_CHECKPOINT_DAYS = env_int("MOAI_AUDIT_CHECKPOINT_DAYS", 7, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": JSON_FORMATTER},
    # Compatibility tokens travel in URLs: no log line may keep one (compat/redaction.py).
    "filters": {"redact_tokens": {"()": "compat.redaction.RedactTokens"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact_tokens"]},
    },
    "root": {"handlers": ["stdout"], "level": env_str("MOAI_LOG_LEVEL", "INFO")},
    # django-axes announces itself at INFO in every process, before each command's own
    # output; its failed-login and lockout lines are warnings and still come through.
    # Celery's per-task lines ("received", "succeeded in") carry the task's arguments, small
    # ciphertexts among them (base64, in the message), and repeat the job's own lines; its
    # warnings and errors still come through.
    "loggers": {
        "axes": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
    },
}
