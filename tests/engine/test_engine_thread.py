"""An engine started from synchronous code (``with engine:``, ``start_in_thread``), on SQLite and
PostgreSQL: it runs functions in its own thread while the app calls it through the ``_sync``
calls, stops cleanly, leaves no thread behind when it cannot start, and ``stepline.tasks.connect``
works the same way for a synchronous app writing its tasks to PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import stepline
import stepline.tasks
from stepline import errors
from stepline.engine import background_thread

TIMEOUT_S = 30.0


def tailor_app(app_id: str = "sync-engine") -> tuple[stepline.Stepline, stepline.Function]:
    client = stepline.Stepline(app_id=app_id)

    @client.function(id="tailor", trigger=stepline.on_event("ai/tailor.resume"))
    def tailor(ctx: stepline.ContextSync) -> dict[str, Any]:
        intel = ctx.step.run("job-intel", lambda: {"job": ctx.event.data["job_id"]})
        ctx.task.progress(0.5, "halfway")
        return {"resume": "tailored", **intel}

    return client, tailor


def wait_until_ended(client: stepline.Stepline, task_id: str) -> stepline.Task:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        task = client.tasks.get_sync(task_id)
        assert task is not None
        if task.is_terminal or time.monotonic() > deadline:
            return task
        time.sleep(0.02)


def engine_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == background_thread.THREAD_NAME]


def test_a_synchronous_app_runs_an_engine_with_a_with_block(database_url: str) -> None:
    client, tailor = tailor_app()
    event = stepline.Event(name="ai/tailor.resume", data={"job_id": "j1"})
    with stepline.Engine(client, [tailor], database_url) as engine:
        assert engine_threads()
        assert engine.loop is not None
        assert engine.loop.is_running()  # on its own thread, not this one
        task = client.tasks.enqueue_sync(kind="tailor_resume", owner="alice", event=event)
        ended = wait_until_ended(client, task.id)
        streamed = [change.status for change in client.tasks.stream_sync(task.id)]
        sent = client.send_sync(stepline.Event(name="ai/tailor.resume", data={"job_id": "j2"}))

    assert ended.status == "complete"
    assert ended.result == {"resume": "tailored", "job": "j1"}
    assert streamed == ["complete"]
    assert len(sent) == 1
    assert engine_threads() == []


def test_start_in_thread_twice_is_refused_and_stop_is_idempotent(database_url: str) -> None:
    client, tailor = tailor_app()
    engine = stepline.Engine(client, [tailor], database_url)
    engine.stop_in_thread()  # not running: nothing to do
    engine.start_in_thread()
    try:
        with pytest.raises(errors.ConfigurationError, match="already"):
            engine.start_in_thread()
    finally:
        engine.stop_in_thread()
    engine.stop_in_thread()
    assert engine_threads() == []

    engine.start_in_thread()  # and again after a stop
    engine.stop_in_thread()
    assert engine_threads() == []


def test_an_engine_that_cannot_start_raises_and_leaves_no_thread() -> None:
    client, tailor = tailor_app()
    engine = stepline.Engine(client, [tailor], "postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens
    with pytest.raises(errors.StorageError):
        engine.start_in_thread()
    assert engine_threads() == []


def test_a_synchronous_app_writes_its_tasks_to_postgres_with_connect(postgres_url: str) -> None:
    runner, tailor = tailor_app("sync-direct")
    app = stepline.Stepline(app_id="sync-direct")
    event = stepline.Event(name="ai/tailor.resume", data={"job_id": "j3"})
    with stepline.Engine(runner, [tailor], postgres_url), stepline.tasks.connect(app, postgres_url):
        task = app.tasks.enqueue_sync(kind="tailor_resume", owner="bob", event=event)
        ended = wait_until_ended(app, task.id)

    assert ended.status == "complete"
    assert ended.result == {"resume": "tailored", "job": "j3"}
    assert engine_threads() == []


def test_stopping_the_engine_ends_the_streams_the_app_still_follows(database_url: str) -> None:
    """A WSGI thread following a task must not wait forever once the engine it waits on stops."""
    client = stepline.Stepline(app_id="sync-stop")
    gate = threading.Event()

    @client.function(id="slow", trigger=stepline.on_event("ai/slow"))
    def slow(ctx: stepline.ContextSync) -> bool:
        return ctx.step.run("wait", gate.wait, TIMEOUT_S)

    engine = stepline.Engine(client, [slow], database_url)
    engine.start_in_thread()
    ended: list[BaseException | None] = []
    try:
        task = client.tasks.enqueue_sync(kind="slow", owner="alice", event=stepline.Event(name="ai/slow"))
        stream = client.tasks.stream_sync(task.id)
        assert next(stream).id == task.id

        def follow() -> None:
            try:
                list(stream)
                ended.append(None)
            except BaseException as exc:  # what the app's thread would see
                ended.append(exc)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
    finally:
        engine.stop_in_thread(grace=timedelta(seconds=0))  # the task is still running
        gate.set()  # lets the step's worker thread go
    follower.join(TIMEOUT_S)

    assert not follower.is_alive(), "the stream still waits on a stopped engine"
    assert len(ended) == 1
    assert isinstance(ended[0], errors.StorageError)
