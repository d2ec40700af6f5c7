"""What sending one job's turn costs a web process: Celery's ``delay`` against ``jobs.broker``'s push.

``python -m bench.publish [--messages N]`` sends N messages each way, in alternating rounds
so that both see the same machine, to a queue of its own on the bench's Redis database
(MOAI_BENCH_REDIS_URL), and prints JSON: CPU and wall milliseconds per message each way and
their ratio. Each message carries one ciphertext of a logistic regression's size (984 bytes).
The queue is emptied as it goes and deleted at the end; no worker reads it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable

from bench.__main__ import REDIS

QUEUE = "moai-bench-publish"
CIPHERTEXT = bytes(984)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "moai_site.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_hex(32),
            "MOAI_AUDIT_KEY": secrets.token_hex(32),
            "REDIS_URL": REDIS,
        }
    )
    import django

    django.setup()
    from django.conf import settings

    from base.redis_client import shared_redis
    from jobs import broker
    from moai_site.celery import app

    settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE
    client = shared_redis()
    inputs = [CIPHERTEXT]

    def by_celery() -> None:
        kwargs = {"inputs": [base64.b64encode(CIPHERTEXT).decode()]}
        app.signature(broker.RUN_JOB, args=(str(uuid.uuid4()),), kwargs=kwargs).apply_async(
            queue=QUEUE, routing_key=QUEUE, exchange=""
        )

    def pushed() -> None:
        broker.send_job(str(uuid.uuid4()), inputs)

    ways: dict[str, Callable[[], None]] = {"celery_delay": by_celery, "direct_push": pushed}
    spent = {name: [0.0, 0.0] for name in ways}
    rounds = 10
    for _ in range(rounds):
        for name, send in ways.items():
            cpu, wall = time.thread_time(), time.perf_counter()
            for _ in range(args.messages // rounds):
                send()
            spent[name][0] += time.thread_time() - cpu
            spent[name][1] += time.perf_counter() - wall
            client.delete(QUEUE)
    count = rounds * (args.messages // rounds)
    result = {
        f"{name}_{kind}_ms": value * 1000 / count
        for name, pair in spent.items()
        for kind, value in zip(("cpu", "wall"), pair, strict=True)
    }
    result["cpu_ratio"] = result["direct_push_cpu_ms"] / result["celery_delay_cpu_ms"]
    result["messages_each_way"] = count
    print(json.dumps(result))


if __name__ == "__main__":
    main()
