"""A job's turn pushed straight onto Redis (jobs.broker) is the message Celery and kombu would push.

The worker side, reading such messages, is run by every end-to-end test: their web processes
publish this way. Here the envelope is compared with one that Celery sends itself, field by
field, so that an upgrade that changes kombu's format fails here first.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from django.conf import settings

from base.redis_client import shared_redis
from jobs import broker
from moai_site.celery import app as celery_app

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="the direct push needs Redis as the broker")

QUEUE = "moai-test-envelope"
# Made anew for each message: compared for shape, not value.
FRESH = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin"}


@pytest.fixture
def published(settings: Any) -> Any:
    """Messages sent to a queue of this test's own (no worker reads it), popped back as dicts."""
    was = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE
    client = shared_redis()
    client.delete(QUEUE)

    def pop() -> dict[str, Any]:
        raw = client.rpop(QUEUE)
        assert raw is not None, "nothing was published"
        message: dict[str, Any] = json.loads(raw)
        return message

    yield pop
    client.delete(QUEUE)
    celery_app.conf.task_always_eager = was


def _without_fresh_values(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: (type(v).__name__ if k in FRESH else v) for k, v in message["headers"].items()}
    properties = {k: (type(v).__name__ if k in FRESH else v) for k, v in message["properties"].items()}
    body = json.loads(base64.b64decode(message["body"]))
    return {**message, "headers": headers, "properties": properties, "body": body}


def test_the_pushed_message_is_the_one_celery_sends(published):
    job_id = str(uuid.uuid4())
    ciphertexts = [b"\x00\x01 first", b"second \xff"]
    kwargs = {"inputs": [base64.b64encode(c).decode() for c in ciphertexts]}
    shown = "{'inputs': <2 ciphertexts>}"
    celery_app.signature(broker.RUN_JOB, args=(job_id,), kwargs=kwargs).apply_async(
        queue=QUEUE, routing_key=QUEUE, exchange="", kwargsrepr=shown
    )
    by_celery = published()
    # Celery also copies the options it was given into the properties; the worker reads the header.
    assert by_celery["properties"].pop("kwargsrepr") == by_celery["headers"]["kwargsrepr"] == shown
    broker.send_job(job_id, ciphertexts)
    pushed = published()

    assert _without_fresh_values(pushed) == _without_fresh_values(by_celery)
    assert pushed["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE}
    assert json.loads(base64.b64decode(pushed["body"]))[:2] == [[job_id], kwargs]
    # Each message has ids of its own.
    assert pushed["headers"]["id"] != by_celery["headers"]["id"]
    assert pushed["headers"]["root_id"] == pushed["headers"]["id"] == pushed["properties"]["correlation_id"]


def test_the_message_names_its_ciphertexts_without_quoting_them(published):
    ciphertext = bytes(range(256)) * 4
    broker.send_job(str(uuid.uuid4()), [ciphertext])
    message = published()
    quoted = base64.b64encode(ciphertext).decode()
    assert message["headers"]["kwargsrepr"] == "{'inputs': <1 ciphertexts>}"
    headers = json.dumps(message["headers"])
    assert quoted[100:160] not in headers
    # Without ciphertexts (a requeue, the recovery sweep) the message is the job's id alone.
    job_id = str(uuid.uuid4())
    broker.send_job(job_id)
    bare = published()
    assert json.loads(base64.b64decode(bare["body"]))[:2] == [[job_id], {}]
    assert bare["headers"]["kwargsrepr"] == "{}"
