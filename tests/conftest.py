"""Shared fixtures. FHE models and client keys are built once per test run.

Building, compiling and measuring a model takes seconds, so the exports and one
real keygen per model are session-scoped; the database rows that register them
are recreated per test, because the database is reset between tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from base import exit_status
from base.audit import Actor
from keys.models import ApiClient
from keys.services import create_client
from registry.demo_models import DEMO_MODELS, Built, build
from registry.models import ModelVersion
from registry.registration import BundleFacts, measure_bundle
from tests.deploy_tools import AUTOSCALING, EXTERNAL_STORES, OPERATOR_API, PRODUCTION, ensure_helm, render
from tests.helpers import login, make_staff, otp_code, post_bytes

# Tests that run on-commit callbacks run circuits in this process: without the guard
# a failing run would exit 0 (base/exit_status.py; moai_site installs it too).
exit_status.install()

TEST_MODELS = ("breast-cancer-logreg", "iris-tree")


@dataclass
class Bundle:
    name: str
    folder: Path
    facts: BundleFacts
    fhe: Any  # FHEModelClient holding a real private key, the data owner's side
    evaluation_keys: bytes
    samples: dict[str, np.ndarray]  # "X": raw rows, as a data owner sends them to its client
    built: Built  # the clear pipeline (scaler and model), for the labels decrypted results must equal
    feature_names: list[str]

    @property
    def preprocessing(self) -> Path:
        return self.folder / "preprocessing.skops"

    def encrypt(self, row: int = 0) -> bytes:
        # FHEModelClient directly, as a client library would after preprocessing: rows the circuit takes.
        ciphertext: bytes = self.fhe.quantize_encrypt_serialize(self.samples["X_model"][row : row + 1])
        return ciphertext

    def decrypt_label(self, output: bytes) -> int:
        return int(np.argmax(self.fhe.deserialize_decrypt_dequantize(output), axis=1)[0])


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    from concrete.ml.deployment import FHEModelClient

    root = tmp_path_factory.mktemp("fhe")
    result = {}
    for model in DEMO_MODELS:
        if model.name not in TEST_MODELS:
            continue
        built = build(model, root / model.name)
        folder = built.folder
        fhe = FHEModelClient(str(folder), key_dir=str(root / f"{model.name}-keys"))
        fhe.generate_private_and_evaluation_keys()
        samples = dict(np.load(folder / "samples.npz"))
        result[model.name] = Bundle(
            model.name, folder, measure_bundle(folder), fhe, fhe.get_serialized_evaluation_keys(), samples, built,
            model.feature_names(),
        )  # fmt: skip
    return result


@pytest.fixture
def register(bundles: dict[str, Bundle], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModelVersion]:
    """Register a test model through the real service function, with its scaler, as build_demo_models does.

    Measuring repeats a keygen and a circuit run that the session fixture already
    did for the same files, so the measured facts are reused (they are exact for
    every keygen, DESIGN.md). register_model's own measuring is tested elsewhere.
    """
    from registry import services

    def _register(name: str) -> ModelVersion:
        bundle = bundles[name]
        monkeypatch.setattr(services, "measure_bundle", lambda folder: bundle.facts)
        return services.register_model(
            name, bundle.folder, f"test model {name}", Actor.system("tests"), bundle.preprocessing, bundle.feature_names
        )

    return _register


@pytest.fixture
def logreg(db: None, register: Callable[[str], ModelVersion]) -> ModelVersion:
    return register("breast-cancer-logreg")


@pytest.fixture
def tree(db: None, register: Callable[[str], ModelVersion]) -> ModelVersion:
    return register("iris-tree")


@dataclass
class Tenant:
    client: ApiClient
    api_key: str
    http: APIClient


@pytest.fixture
def make_tenant(db: None) -> Callable[[str], Tenant]:
    def _make(name: str) -> Tenant:
        client, raw_key = create_client(name, Actor.system("tests"))
        http = APIClient()
        http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return Tenant(client, raw_key, http)

    return _make


@pytest.fixture
def alice(make_tenant: Callable[[str], Tenant]) -> Tenant:
    return make_tenant("alice")


@pytest.fixture
def mallory(make_tenant: Callable[[str], Tenant]) -> Tenant:
    return make_tenant("mallory")


@pytest.fixture
def open_session(bundles: dict[str, Bundle]) -> Callable[[Tenant, ModelVersion], str]:
    def _open(tenant: Tenant, model: ModelVersion) -> str:
        response = post_bytes(tenant.http, f"/api/v1/models/{model.name}/sessions", bundles[model.name].evaluation_keys)
        assert response.status_code == 201, response.content
        context_id: str = response.json()["context_id"]
        return context_id

    return _open


@pytest.fixture
def staff_client(db: None) -> Client:
    """A superuser "sam" logged in to the admin with a password and a second factor."""
    _, enrollment = make_staff("sam")
    client = Client()
    response = login(client, "sam", otp_code(enrollment))
    assert response.request["PATH_INFO"] == "/admin/"
    return client


@pytest.fixture(autouse=True)
def _clear_worker_caches() -> Iterator[None]:
    # Rows are recreated per test with the same ids only by chance; caches keyed by
    # ids must not carry keys from one test's session into another's.
    from jobs import runtime

    yield
    runtime.models.clear()
    runtime.keys.clear()


@pytest.fixture(scope="session", autouse=True)
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """With MOAI_TEST_BLOB_STORAGE=s3, the loopback S3 server holding every blob of the run."""
    from tests import settings as test_settings

    if test_settings.S3 is None:
        yield None
        return
    test_settings.S3.log = tmp_path_factory.mktemp("s3") / "moto.log"
    with test_settings.S3 as server:
        yield server


@pytest.fixture(autouse=True)
def _own_blob_storage(request: pytest.FixtureRequest, tmp_path: Path, s3_server: Any) -> Iterator[None]:
    """Each in-process test gets empty blob storage, as it gets an empty database."""
    if request.node.get_closest_marker("e2e"):
        yield
        # The test's database is flushed after it and the next one numbers audit records from 1
        # again: checkpoints of this one would read as a rewritten log (base.audit_checkpoints).
        from django.conf import settings

        from base.audit_checkpoints import FOLDER

        if s3_server is None:
            shutil.rmtree(Path(settings.MOAI_DATA_DIR) / "blobs" / FOLDER, ignore_errors=True)
        else:
            remove_objects(s3_server, FOLDER + "/")
        return
    settings = request.getfixturevalue("settings")
    # A folder of its own, or a prefix of its own in the run's bucket.
    own = {"location": str(tmp_path / "blobs")} if s3_server is None else {"location": f"tests/{tmp_path.name}"}
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], **own}},
    }
    yield
    # The test's audit checkpoints go to its own storage, not to the next test's.
    from base import audit_checkpoints

    assert audit_checkpoints.flush(), "the audit checkpoint writer did not finish"


def remove_objects(s3: Any, prefix: str) -> None:
    from scripts.s3local import BUCKET

    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache() -> None:
    """Rate-limit counters live in the shared cache, keyed by client id; ids restart with each
    test database, so counters left by an earlier run must not count against this one."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_file_cache() -> None:
    """On the embedded defaults (SQLite, the file cache) ids restart with every test as well:
    a test's rollback takes SQLite's id counter back with it, so one test's "alice" counted
    calls against the next one's. PostgreSQL's sequences never go back, and Redis is shared
    with the stack's processes, so it is left alone there."""
    if not settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()


def _database_url() -> str:
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":  # the engine is django-prometheus's wrapper; the vendor is the same
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or "postgres"
    return f"postgres://{user}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/{params['NAME']}"


def _stack_env() -> dict[str, str]:
    """Environment of the web and worker processes: the test database, data folder and Redis."""
    from django.conf import settings

    from scripts.stack import free_port

    env = {
        "DJANGO_SETTINGS_MODULE": "moai_site.settings",
        "DATABASE_URL": _database_url(),
        "MOAI_DATA_DIR": str(settings.MOAI_DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "MOAI_AUDIT_KEY": settings.MOAI_AUDIT_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MOAI_WORKER_POOL_SIZE": "2",
        "MOAI_WORKER_METRICS_PORT": str(free_port()),
        # Short enough for the fault tests to see a lost worker's job come back.
        "MOAI_JOB_HEARTBEAT_SECONDS": "1",
        "REDIS_URL": settings.REDIS_URL or "",
    }
    return env


@pytest.fixture(scope="session")
def stack(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """gunicorn and a Celery worker as real processes on the test database, once per run."""
    from django.conf import settings

    from scripts.stack import Stack

    with django_db_blocker.unblock():
        env = _stack_env()
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()  # the test run's own Redis database only
    with Stack(env, tmp_path_factory.mktemp("stack-logs")) as running:
        yield running


@pytest.fixture(scope="session")
def proxied_stack(stack: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The production shape for hostile tests: nginx in front of a gunicorn with the Helm chart's
    web pod layout (2 processes of 4 threads), the admin console and /metrics off the public port.
    It shares the session stack's worker (same database, broker and blobs), so the worker
    seen by tests is one process pool either way."""
    from scripts.stack import Stack

    with django_db_blocker.unblock():
        env = _stack_env()
    env.update(MOAI_WEB_WORKERS="2", MOAI_WEB_THREADS="4")
    with Stack(
        env, tmp_path_factory.mktemp("proxied-stack-logs"), proxy=True, worker=False, serve_admin=False
    ) as running:
        yield running


@pytest.fixture
def owner(stack: Any, make_tenant: Callable[[str], Tenant], tmp_path: Path) -> Any:
    from moai_client import MoaiClient

    tenant = make_tenant("owner")
    return MoaiClient(stack.url, tenant.api_key, tmp_path / "owner-keys", progress=False, timeout=30)


@pytest.fixture(scope="session")
def hybrid_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The hybrid demo MLP, trained and hybrid-compiled once per run (compat/hybrid_demo.py)."""
    from compat.hybrid_demo import build as build_hybrid

    return build_hybrid(tmp_path_factory.mktemp("hybrid"))


# --- the deployment tests (tests/test_deploy_*.py) ---------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="module")
def renders(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """The chart as the runbook installs it: quick, production, production with autoscaling, external stores."""
    return {
        "default": render(helm),
        "production": render(helm, *PRODUCTION, *OPERATOR_API),
        "autoscaling": render(helm, *PRODUCTION, *AUTOSCALING, *OPERATOR_API),
        "external": render(helm, *EXTERNAL_STORES, *OPERATOR_API),
    }
