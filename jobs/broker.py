"""How a job's turn reaches the workers: one message on the broker, built and sent from here.

Celery's own sending (``Signature.delay``) runs the message through its router, its producer
pool and kombu's declare-and-retry wrappers, and kombu's Redis transport makes a new Redis
client for every message it pushes: 1.2 ms of a web process's CPU per message, on the path of
every submission, against 0.46 ms this way (``python -m bench.publish``). With Redis as the broker the
message is still made by Celery (``amqp.as_task_v2``: the task protocol the worker reads),
wrapped in the envelope kombu's Redis transport reads, and pushed onto the queue's list in one
LPUSH on the process's shared Redis client. Any other broker (the embedded defaults' folder
queue) and tasks run in place (the tests' eager mode) go through Celery as before.

``tests/test_broker.py`` checks the envelope against one that kombu makes itself, so that an
upgrade of Celery or kombu that changes it fails there, not in production.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.conf import settings

from base.redis_client import shared_redis

# jobs.tasks.run_job's registered name, kept from before jobs left the app "inference":
# messages already queued in Redis carry it.
RUN_JOB = "inference.tasks.run_job"


def send_job(job_id: str, inputs: Sequence[bytes] | None = None, claim: dict[str, Any] | None = None) -> None:
    """Publish the turn of job ``job_id``, with its ciphertexts (base64) when they are given.

    ``claim``: the job was claimed by its submission for this very message (jobs.services.
    SubmissionClaim), whose id is then the claim's token: the worker's parent finds the job
    it runs by it, as for a job a worker claimed. The message's argument representations
    (what ``celery inspect`` and Flower show) name the ciphertexts without quoting them.
    """
    kwargs: dict[str, Any] = {}
    shown_parts = []
    if inputs is not None:
        kwargs["inputs"] = [base64.b64encode(data).decode() for data in inputs]
        shown_parts.append(f"'inputs': <{len(inputs)} ciphertexts>")
    if claim is not None:
        kwargs["claim"] = claim
        shown_parts.append("'claim': <claimed at submission>")
    shown = f"{{{', '.join(shown_parts)}}}" if shown_parts else None
    task_id = claim["token"] if claim is not None else str(uuid.uuid4())
    app = current_app
    if not settings.REDIS_URL or app.conf.task_always_eager:
        # By name, through Celery's registry: eager mode (tests) still runs it in place.
        app.signature(RUN_JOB, args=(job_id,), kwargs=kwargs).apply_async(task_id=task_id, kwargsrepr=shown)
        return
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    shared_redis().lpush(queue, json.dumps(_envelope(app, queue, task_id, job_id, kwargs, shown)))


def _envelope(
    app: Any, queue: str, task_id: str, job_id: str, kwargs: dict[str, Any], shown: str | None
) -> dict[str, Any]:
    """The message as kombu's Redis transport stores it: Celery's headers and properties, the
    body in JSON then base64, where it was sent from (the default exchange, to ``queue``)."""
    message = app.amqp.as_task_v2(
        task_id,
        RUN_JOB,
        args=(job_id,),
        kwargs=kwargs,
        # What Celery takes from the task's options when it sends: the worker's limits.
        time_limit=settings.CELERY_TASK_TIME_LIMIT,
        soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
        ignore_result=settings.CELERY_TASK_IGNORE_RESULT,
        reply_to=app.thread_oid,
        kwargsrepr=shown,
    )
    body = json.dumps(message.body).encode()
    properties = {
        **message.properties,
        "delivery_mode": 2,  # persistent, as Celery's default delivery mode
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": properties,
    }
