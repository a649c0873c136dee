"""An engine started from synchronous code (``with engine:``, ``start_in_thread``), on SQLite and
PostgreSQL: it runs functions in its own thread while the app calls it through the ``_sync``
calls, stops cleanly, leaves no thread behind when it cannot start, and ``stepline.tasks.connect``
works the same way for a synchronous app writing its tasks to PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import stepline
import stepline.tasks
from stepline import errors
from stepline.engine import background_thread
from stepline.storage import open_store
from tests.engine import test_engine_stop

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


async def test_an_engine_running_in_a_thread_refuses_to_be_started_or_stopped_from_another_loop(
    database_url: str,
) -> None:
    client, tailor = tailor_app()
    engine = stepline.Engine(client, [tailor], database_url)
    await asyncio.to_thread(engine.start_in_thread)
    try:
        with pytest.raises(errors.ConfigurationError, match="stop_in_thread"):
            await engine.stop()
        with pytest.raises(errors.ConfigurationError, match="another one"):
            await engine.start()
        task = await asyncio.to_thread(
            client.tasks.enqueue_sync, kind="k", owner="alice", event=stepline.Event("ai/tailor.resume", {"job_id": 1})
        )
        ended = await asyncio.to_thread(wait_until_ended, client, task.id)
    finally:
        await asyncio.to_thread(engine.stop_in_thread)
    assert ended.status == "complete"  # still whole after the refusals


def test_a_start_that_fails_after_the_database_opened_can_be_tried_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tailor = tailor_app()
    engine = stepline.Engine(client, [tailor], database_url)
    registering = engine._register_crons
    failures = iter([RuntimeError("cron registration failed once")])

    async def fail_once() -> None:
        for failure in failures:
            raise failure
        await registering()

    monkeypatch.setattr(engine, "_register_crons", fail_once)
    with pytest.raises(RuntimeError, match="failed once"):
        engine.start_in_thread()
    assert engine_threads() == []
    with engine:
        task = client.tasks.enqueue_sync(
            kind="k", owner="alice", event=stepline.Event("ai/tailor.resume", {"job_id": 2})
        )
        assert wait_until_ended(client, task.id).status == "complete"


def test_an_engine_whose_threaded_stop_gave_up_starts_again(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that outlasts grace + margin ends the thread and its loop with the closing unfinished:
    the engine must still start again (on a new thread) instead of counting as stopping forever."""
    monkeypatch.setattr(background_thread, "STOP_MARGIN_S", 0.3)
    # The slow step will not be hurried for longer than the margin: the closing cannot end in time.
    app = test_engine_stop.slow_and_quick("sync-stop-gave-up", tidy_up_s=2.0, stubborn=True)
    client = app.client
    engine = stepline.Engine(client, app.functions, database_url)
    engine.start_in_thread()
    client.send_sync(stepline.Event(name="test/slow"))
    assert app.started.wait(TIMEOUT_S)
    with pytest.raises(TimeoutError):
        engine.stop_in_thread(timedelta(0))

    with engine:
        sent = client.send_sync(stepline.Event(name="test/quick"))
        assert len(sent) == 1
    assert engine_threads() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_told_to_start_its_own_engine_instead_of_hanging(tmp_path: Path) -> None:
    client, tailor = tailor_app()
    with stepline.Engine(client, [tailor], f"sqlite:///{tmp_path / 'stepline.db'}") as engine:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child, which reports through its exit status
            code = 3
            try:
                started = time.monotonic()
                try:
                    client.send_sync(stepline.Event("ai/tailor.resume", {"job_id": 3}))
                except errors.ConfigurationError as exc:
                    code = 0 if "fork" in str(exc) and time.monotonic() - started < 5 else 4
                try:
                    engine.start_in_thread()
                    code = 5
                except errors.ConfigurationError:
                    pass
            finally:
                os._exit(code)  # never runs the parent's exit handlers, never closes its connections
        _, status = os.waitpid(child, 0)
        assert engine.loop is not None
        assert engine.loop.is_running()  # the parent's engine is untouched

    assert os.waitstatus_to_exitcode(status) == 0


EXIT_SCRIPT = """
import sys, time
import stepline

client = stepline.Stepline(app_id="exit-app")

@client.function(id="work", trigger=stepline.on_event("exit/work"), retries=0)
def work(ctx: stepline.ContextSync) -> str:
    return ctx.step.run("sleep", lambda: time.sleep(float(ctx.event.data["s"])) or "done")

engine = stepline.Engine(client, [work], sys.argv[1])
engine.start_in_thread()
client.send_sync(stepline.Event("exit/work", {"s": 0.5}))
time.sleep(0.2)  # the slow run is in its step
client.send_sync([stepline.Event("exit/work", {"s": 0}) for _ in range(3)])
# the app returns without stopping the engine
"""


def test_an_engine_never_stopped_is_drained_at_exit_and_fails_nothing(database_url: str) -> None:
    """Plain ``atexit`` handlers run after the interpreter shut its thread pools down: sync
    functions dispatched in that window failed with 'cannot schedule new futures'."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

    async def statuses() -> list[str]:
        db = await open_store(database_url)
        try:
            return [run.status.value for run in await db.list_runs(limit=50)]
        finally:
            await db.close()

    found = asyncio.run(statuses())
    assert len(found) == 4
    assert "failed" not in found
    assert "cannot schedule new futures" not in done.stderr
