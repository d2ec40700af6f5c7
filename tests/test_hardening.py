"""Production settings, the OpenAPI schema, and answers while a dependency is down."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.test import Client

from tests.helpers import error_code, post_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_check_deploy_has_no_warnings_with_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DEBUG": "0",
        "MOAI_HTTPS": "1",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "MOAI_AUDIT_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "moai.example.com",
        "MOAI_DATA_DIR": str(tmp_path),
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite3"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_schema_describes_every_endpoint(db):
    schema = Client().get("/api/schema", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    expected = {
        ("/api/v1/models", "get"): "list_models",
        ("/api/v1/models/{name}", "get"): "get_model",
        ("/api/v1/models/{name}/client.zip", "get"): "get_client_bundle",
        ("/api/v1/models/{name}/preprocessing.skops", "get"): "get_preprocessing",
        ("/api/v1/models/{name}/sessions", "post"): "open_session",
        ("/api/v1/sessions/{context_id}", "get"): "get_session",
        ("/api/v1/sessions/{context_id}", "delete"): "close_session",
        ("/api/v1/sessions/{context_id}/jobs", "post"): "submit_job",
        ("/api/v1/jobs/{job_id}", "get"): "get_job",
        ("/api/v1/jobs/{job_id}", "delete"): "cancel_job",
        ("/api/v1/jobs/{job_id}/result", "get"): "get_job_result",
    }
    for (path, method), operation in expected.items():
        assert paths[path][method]["operationId"] == operation
        assert "401" in paths[path][method]["responses"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    submit = paths["/api/v1/sessions/{context_id}/jobs"]["post"]
    assert {"application/octet-stream", "multipart/form-data"} <= set(submit["requestBody"]["content"])


def test_an_unreachable_cache_and_broker_answer_503_not_500(alice, logreg, settings, bundles, monkeypatch):
    import redis

    from keys import throttling

    dead = "redis://127.0.0.1:1/0"
    backend = "django_prometheus.cache.backends.redis.NativeRedisCache"
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": dead}}
    # The rate limits, the first thing a request asks of Redis, talk to it directly (keys.throttling):
    # their client is pointed at nothing too, as when Redis is down.
    monkeypatch.setattr(throttling, "shared_redis", lambda: redis.Redis.from_url(dead, socket_connect_timeout=1))
    response = post_bytes(
        alice.http, "/api/v1/models/breast-cancer-logreg/sessions", bundles["breast-cancer-logreg"].evaluation_keys
    )
    assert response.status_code == 503
    assert error_code(response) == "service_unavailable"
    assert response.json()["error"]["dependency"] == "broker"
    assert response["Retry-After"] == "5"
