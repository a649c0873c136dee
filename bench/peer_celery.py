"""The Celery app of ``bench/peer_app.py`` (``BENCH_PEER=celery``): a broker and result backend on
Redis (``BENCH_PEER_URL``), one task. Its worker runs as ``celery -A bench.peer_celery worker``."""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("BENCH_PEER_URL", "redis://127.0.0.1:6379/0")

queue = Celery("bench-peer", broker=URL, backend=URL)
queue.conf.update(task_ignore_result=False, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@queue.task(name="tailor")
def tailor(job_id: str, owner: str) -> dict[str, str]:
    return {"job_id": job_id, "owner": owner, "resume": "tailored"}
