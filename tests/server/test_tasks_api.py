"""``/v1/tasks`` of the real server app, and ``stepline.fastapi.task_routes`` in a user's app.

On SQLite and PostgreSQL: enqueue answers 202 with a pending task; bad bodies are 422 naming
the field; over quota is 429 with ``Retry-After`` and nothing written; unknown ids are 404;
listing pages by cursor; cancel and progress; production mode wants the event key or the
signing key as bearer token; the stream delivers every change in order and closes after the
terminal state (a real uvicorn server); an enqueue while the database is unreachable is 503 and
leaves nothing half-written. ``task_routes`` hides other users' tasks behind the same 404 as an
unknown id, streams until terminal and cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fastapi
import httpx
import psycopg
import pytest
import ulid
import uvicorn

import stepline
import stepline.fastapi
from stepline.protocol import signing, sse
from stepline.server import settings as settings_
from stepline.storage import open_store, records, store
from tests.conftest import POSTGRES_ADMIN_URL
from tests.engine.task_support import quota_lock_held, sqlite_path, wait_for_lock_waiters, written
from tests.server import support

STREAM_TIMEOUT_S = 30.0
"""Bound on waiting for one stream frame: generous, the server polls every 0.2 s."""


def task_body(owner: str = "alice", name: str = "shop/tailor", **extra: Any) -> dict[str, Any]:
    return {"kind": "tailor", "owner": owner, "event": {"name": name, "data": {"job": 1}}, **extra}


async def post_task(server: support.Server, body: dict[str, Any]) -> httpx.Response:
    return await server.client.post("/v1/tasks", json=body)


async def change(db: store.Store, task_id: str, **fields: Any) -> None:
    """Move a stored task as the engine would (the tests below drive tasks through the store)."""
    async with db.transaction() as tx:
        task = await tx.lock_task(task_id)
        assert task is not None
        await tx.update_task(dataclasses.replace(task, **fields))


# enqueue and read


async def test_enqueue_answers_202_with_a_pending_task_that_is_readable_at_once(server: support.Server) -> None:
    reply = await post_task(server, task_body(quota={"feature": "tailor", "limit": 3, "window": "1d"}))
    assert reply.status_code == 202, reply.text
    created = reply.json()
    fetched = await server.client.get(f"/v1/tasks/{created['id']}")

    assert created["status"] == "pending"
    assert created["kind"] == "tailor"
    assert created["owner"] == "alice"
    assert str(ulid.ULID.from_str(created["id"])) == created["id"]
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert await written(server.runtime.store) == (1, 1, 0)  # no function serves shop/tailor: no run


async def test_a_client_chosen_id_makes_a_retried_enqueue_return_the_same_task(server: support.Server) -> None:
    chosen = str(ulid.ULID())
    first = await post_task(server, task_body(id=chosen))
    second = await post_task(server, task_body(id=chosen))
    conflict = await post_task(server, task_body(owner="mallory", id=chosen))

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] == chosen
    assert conflict.status_code == 409
    assert await written(server.runtime.store) == (1, 1, 0)


async def test_a_task_id_is_found_in_any_case_as_ulids_are(server: support.Server) -> None:
    chosen = str(ulid.ULID()).lower()
    created = await post_task(server, task_body(id=chosen))
    fetched = await server.client.get(f"/v1/tasks/{chosen}")
    cancelled = await server.client.post(f"/v1/tasks/{chosen}/cancel")
    async with server.client.stream("GET", f"/v1/tasks/{chosen}/stream") as streamed:  # ended: one frame
        stream_status = streamed.status_code
        frames = [frame async for frame in sse.read_frames(streamed.aiter_lines())]

    assert created.status_code == 202
    assert created.json()["id"] == chosen.upper()
    assert fetched.status_code == 200
    assert fetched.json()["id"] == chosen.upper()
    assert cancelled.json()["status"] == "cancelled"
    assert stream_status == 200
    assert [data["id"] for _, data in frames] == [chosen.upper()]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"owner": "alice", "event": {"name": "shop/tailor"}}, "kind"),
        (task_body(kind=""), "kind"),
        ({"kind": "tailor", "event": {"name": "shop/tailor"}}, "owner"),
        ({"kind": "tailor", "owner": "alice"}, "event"),
        (task_body(quota={"feature": "tailor", "limit": 0, "window": "1d"}), "quota.limit"),
        (task_body(quota={"feature": "tailor", "limit": 5, "window": "soon"}), "quota.window"),
        (task_body(quota={"feature": "tailor", "limit": 5, "window": 0.5}), "quota.window"),
        (task_body(quota={"feature": "tailor", "limit": 5}), "quota.window"),
        (task_body(colour="blue"), "colour"),
        (task_body(quota={"feature": "tailor", "limit": 5, "window": "1d", "per": "ip"}), "quota.per"),
        (task_body(id="not-a-ulid"), "id"),
        (task_body(pending_timeout="whenever"), "pending_timeout"),
        (task_body(pending_timeout=1e308), "pending_timeout"),
        (task_body(pending_timeout=float("nan")), "pending_timeout"),
        (task_body(quota={"feature": "tailor", "limit": 5, "window": float("inf")}), "quota.window"),
        (task_body(quota={"feature": "tailor", "limit": 5, "window": "99999999999d"}), "quota.window"),
        (task_body(owner="al\x00ice"), "owner"),
        (task_body(kind="tail\ud800or"), "JSON"),
        (task_body(quota={"feature": "tai\x00lor", "limit": 5, "window": "1d"}), "quota.feature"),
    ],
    ids=[
        "missing-kind",
        "empty-kind",
        "missing-owner",
        "missing-event",
        "quota-limit-0",
        "quota-window-soon",
        "quota-window-half-second",
        "quota-window-missing",
        "extra-field",
        "extra-quota-field",
        "non-ulid-id",
        "pending-timeout-soon",
        "pending-timeout-1e308",
        "pending-timeout-nan",
        "quota-window-infinite",
        "quota-window-past-100-years",
        "nul-in-owner",
        "lone-surrogate-in-kind",
        "nul-in-quota-feature",
    ],
)
async def test_an_invalid_body_is_422_naming_the_field_and_writes_nothing(
    server: support.Server, body: dict[str, Any], field: str
) -> None:
    # Encoded here, not by httpx: json.dumps writes NaN and Infinity, as careless clients do.
    reply = await server.client.post(
        "/v1/tasks", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )

    assert reply.status_code == 422, reply.text
    answer = reply.json()
    assert answer["status"] == 422
    assert field in answer["error"], answer["error"]
    assert await written(server.runtime.store) == (0, 0, 0)


@pytest.mark.parametrize("name", ["inngest/function.failed", "   "], ids=["reserved", "blank"])
async def test_an_invalid_event_name_is_422_naming_event_name(server: support.Server, name: str) -> None:
    reply = await post_task(server, task_body(name=name))

    assert reply.status_code == 422, reply.text
    assert "event.name" in reply.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        task_body(pending_timeout=True),
        task_body(quota={"feature": "tailor", "limit": True, "window": "1d"}),
        task_body(quota={"feature": "tailor", "limit": 5, "window": True}),
    ],
    ids=["pending-timeout-true", "quota-limit-true", "quota-window-true"],
)
async def test_a_boolean_where_a_number_belongs_is_422(server: support.Server, body: dict[str, Any]) -> None:
    reply = await post_task(server, body)

    assert reply.status_code == 422, reply.text
    assert await written(server.runtime.store) == (0, 0, 0)


async def test_a_boolean_progress_is_422(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]

    reply = await server.client.post(f"/v1/tasks/{task_id}/progress", json={"progress": True})

    assert reply.status_code == 422, reply.text


async def test_a_reserved_event_name_is_refused_and_writes_nothing(server: support.Server) -> None:
    reply = await post_task(server, task_body(name="inngest/function.failed"))

    assert reply.status_code == 422
    assert "inngest/" in reply.json()["error"]
    assert await written(server.runtime.store) == (0, 0, 0)


async def test_over_quota_is_429_with_retry_after_and_writes_nothing(server: support.Server) -> None:
    quota = {"feature": "tailor", "limit": 2, "window": "1h"}
    for _ in range(2):
        assert (await post_task(server, task_body(quota=quota))).status_code == 202
    before = await written(server.runtime.store)
    chosen = str(ulid.ULID())
    reply = await post_task(server, task_body(quota=quota, id=chosen))
    other_owner = await post_task(server, task_body(owner="bob", quota=quota))

    assert reply.status_code == 429, reply.text
    retry_after = int(reply.headers["Retry-After"])
    assert 3590 <= retry_after <= 3600
    answer = reply.json()
    assert answer["status"] == 429
    assert answer["feature"] == "tailor"
    assert answer["limit"] == 2
    assert before == (2, 2, 0)
    assert await server.runtime.store.get_task(chosen) is None
    assert other_owner.status_code == 202
    assert await written(server.runtime.store) == (3, 3, 0)


async def test_an_unknown_task_is_404_on_every_route(server: support.Server) -> None:
    unknown = str(ulid.ULID())
    replies = [
        await server.client.get(f"/v1/tasks/{unknown}"),
        await server.client.get(f"/v1/tasks/{unknown}/stream"),
        await server.client.post(f"/v1/tasks/{unknown}/cancel"),
        await server.client.post(f"/v1/tasks/{unknown}/progress", json={"progress": 0.5}),
        await server.client.get("/v1/tasks/not-even-an-id"),
    ]

    for reply in replies:
        assert reply.status_code == 404, (reply.request.url, reply.text)
        assert set(reply.json()) == {"error", "status"}
        assert reply.json()["status"] == 404


async def test_list_filters_by_owner_and_status_and_pages_by_cursor(server: support.Server) -> None:
    alice = [(await post_task(server, task_body())).json()["id"] for _ in range(7)]
    await post_task(server, task_body(owner="bob"))
    assert (await server.client.post(f"/v1/tasks/{alice[0]}/cancel")).status_code == 200

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"owner": "alice", "limit": "3", **({"cursor": cursor} if cursor else {})}
        reply = await server.client.get("/v1/tasks", params=params)
        assert reply.status_code == 200, reply.text
        pages.append([task["id"] for task in reply.json()["data"]])
        cursor = reply.json()["cursor"]
        if cursor is None:
            break
    cancelled = (await server.client.get("/v1/tasks", params={"owner": "alice", "status": "cancelled"})).json()
    pending = (await server.client.get("/v1/tasks", params={"status": "pending"})).json()
    bad_status = await server.client.get("/v1/tasks", params={"status": "sleeping"})
    bad_cursor = await server.client.get("/v1/tasks", params={"cursor": "page-2"})

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == sorted(alice, reverse=True)
    assert [task["id"] for task in cancelled["data"]] == [alice[0]]
    assert len(pending["data"]) == 7
    assert bad_status.status_code == 400
    assert "status" in bad_status.json()["error"]
    assert bad_cursor.status_code == 400
    assert "cursor" in bad_cursor.json()["error"]


async def test_list_filters_by_kind(server: support.Server) -> None:
    tailored = [(await post_task(server, task_body())).json()["id"] for _ in range(3)]
    embedded = (await post_task(server, {**task_body(owner="bob"), "kind": "embed"})).json()["id"]
    await post_task(server, {**task_body(), "kind": "embed"})

    by_kind = (await server.client.get("/v1/tasks", params={"kind": "tailor"})).json()
    bobs = (await server.client.get("/v1/tasks", params={"kind": "embed", "owner": "bob", "status": "pending"})).json()
    too_long = await server.client.get("/v1/tasks", params={"kind": "k" * 201})

    assert [task["id"] for task in by_kind["data"]] == sorted(tailored, reverse=True)
    assert [task["id"] for task in bobs["data"]] == [embedded]
    assert too_long.status_code == 400
    assert "kind" in too_long.json()["error"]


async def test_cancel_ends_a_pending_task_and_leaves_an_ended_one_unchanged(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]

    cancelled = await server.client.post(f"/v1/tasks/{task_id}/cancel")
    again = await server.client.post(f"/v1/tasks/{task_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["message"]
    assert again.json() == cancelled.json()


async def test_progress_is_recorded_forward_only_and_refused_out_of_range(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]

    def report(progress: object, message: str | None = None) -> Any:
        return server.client.post(f"/v1/tasks/{task_id}/progress", json={"progress": progress, "message": message})

    first = await report(0.4, "reading the job")
    backwards = await report(0.1, "oops")
    out_of_range = await report(1.5)
    task = (await server.client.get(f"/v1/tasks/{task_id}")).json()

    assert first.json() == {"id": task_id, "recorded": True}
    assert backwards.json() == {"id": task_id, "recorded": False}
    assert out_of_range.status_code == 422
    assert "progress" in out_of_range.json()["error"]
    assert (task["progress"], task["message"]) == (0.4, "reading the job")


async def test_production_mode_requires_the_event_key_or_the_signing_key(database_url: str) -> None:
    signing_key = signing.generate_signing_key()
    event_key = signing.generate_event_key()
    settings = settings_.ServerSettings(
        dev=False, database_url=database_url, signing_key=signing_key, event_keys=(event_key,)
    )
    async with support.serve(settings) as server:
        anonymous = await post_task(server, task_body())
        wrong = await server.client.post(
            "/v1/tasks", json=task_body(), headers={"Authorization": f"Bearer {signing.generate_event_key()}"}
        )
        with_event_key = await server.client.post(
            "/v1/tasks", json=task_body(), headers={"Authorization": f"Bearer {event_key}"}
        )
        task_id = with_event_key.json()["id"]
        read_anonymous = await server.client.get(f"/v1/tasks/{task_id}")
        list_anonymous = await server.client.get("/v1/tasks")
        with_signing_key = await server.client.get(
            f"/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {signing_key}"}
        )
        counted = await written(server.runtime.store)

    for refused in (anonymous, wrong, read_anonymous, list_anonymous):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in refused.json()["error"]
    assert with_event_key.status_code == 202
    assert with_signing_key.status_code == 200
    assert with_signing_key.json()["id"] == task_id
    assert counted == (1, 1, 0)


# the stream, through a real server


async def next_frame(frames: AsyncIterator[tuple[str, Any]]) -> dict[str, Any]:
    event, data = await asyncio.wait_for(anext(frames), STREAM_TIMEOUT_S)
    assert event == "task"
    assert isinstance(data, dict)
    return data


async def test_the_stream_delivers_every_change_in_order_and_closes_after_the_terminal_state(
    database_url: str,
) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    db = await open_store(database_url)
    try:
        with support.serve_on_port(settings) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=STREAM_TIMEOUT_S) as http:
                task_id = (await http.post("/v1/tasks", json=task_body())).json()["id"]
                async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as reply:
                    assert reply.status_code == 200
                    assert reply.headers["content-type"].startswith("text/event-stream")
                    frames = sse.read_frames(reply.aiter_lines())
                    seen = [await next_frame(frames)]
                    async with db.transaction() as tx:
                        await tx.start_task(task_id, support.NOW_MS)
                    seen.append(await next_frame(frames))
                    for value, message in [(0.3, "reading"), (0.7, "writing")]:
                        assert await db.set_task_progress(task_id, value, message, support.NOW_MS)
                        seen.append(await next_frame(frames))
                    await change(db, task_id, status=records.TaskStatus.COMPLETE, result={"pdf": "r.pdf"}, progress=1.0)
                    seen.append(await next_frame(frames))
                    with pytest.raises(StopAsyncIteration):
                        await asyncio.wait_for(anext(frames), STREAM_TIMEOUT_S)
    finally:
        await db.close()

    assert [frame["status"] for frame in seen] == ["pending", "running", "running", "running", "complete"]
    assert [frame["progress"] for frame in seen] == [None, None, 0.3, 0.7, 1.0]
    assert [frame["message"] for frame in seen][2:4] == ["reading", "writing"]
    assert seen[-1]["result"] == {"pdf": "r.pdf"}
    versions = [frame["version"] for frame in seen]
    assert versions == sorted(set(versions))


async def test_changes_closer_together_than_the_streams_reads_each_get_their_frame(database_url: str) -> None:
    """Ten progress reports and the completion land within one of the stream's reads: the
    change log still gives each its own frame, in order."""
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    db = await open_store(database_url)
    try:
        with support.serve_on_port(settings) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=STREAM_TIMEOUT_S) as http:
                task_id = (await http.post("/v1/tasks", json=task_body())).json()["id"]
                async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as reply:
                    frames = sse.read_frames(reply.aiter_lines())
                    seen = [await next_frame(frames)]
                    async with db.transaction() as tx:
                        await tx.start_task(task_id, support.NOW_MS)
                    for step in range(1, 11):
                        assert await db.set_task_progress(task_id, step / 10, f"step {step}", support.NOW_MS)
                    await change(db, task_id, status=records.TaskStatus.COMPLETE, result="ok", progress=1.0)
                    seen.extend([frame async for frame in _until_closed(frames)])
    finally:
        await db.close()

    assert [frame["version"] for frame in seen] == list(range(1, 14))
    assert [frame["message"] for frame in seen[2:12]] == [f"step {step}" for step in range(1, 11)]
    assert [frame["status"] for frame in seen] == ["pending"] + ["running"] * 11 + ["complete"]


async def _until_closed(frames: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    while True:
        try:
            yield await next_frame(frames)
        except StopAsyncIteration:
            return


async def test_the_stream_of_an_ended_task_sends_it_once_and_closes(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]
    await server.client.post(f"/v1/tasks/{task_id}/cancel")

    reply = await asyncio.wait_for(server.client.get(f"/v1/tasks/{task_id}/stream"), STREAM_TIMEOUT_S)

    async def lines() -> AsyncIterator[str]:
        for line in reply.text.splitlines():
            yield line

    frames = [data async for _, data in sse.read_frames(lines())]
    assert [frame["status"] for frame in frames] == ["cancelled"]


async def a_finished_task_with_five_versions(server: support.Server) -> str:
    """pending (1), running (2), two progress reports (3, 4), complete (5)."""
    db = server.runtime.store
    task_id: str = (await post_task(server, task_body())).json()["id"]
    async with db.transaction() as tx:
        await tx.start_task(task_id, support.NOW_MS)
    for value in (0.3, 0.7):
        assert await db.set_task_progress(task_id, value, None, support.NOW_MS)
    await change(db, task_id, status=records.TaskStatus.COMPLETE, result="done", progress=1.0)
    return task_id


async def stream_versions(server: support.Server, task_id: str, last_event_id: str) -> tuple[int, list[int]]:
    """The status of a stream resumed with ``Last-Event-ID`` and the versions of its frames."""
    reply = await asyncio.wait_for(
        server.client.get(f"/v1/tasks/{task_id}/stream", headers={"Last-Event-ID": last_event_id}), STREAM_TIMEOUT_S
    )

    async def lines() -> AsyncIterator[str]:
        for line in reply.text.splitlines():
            yield line

    return reply.status_code, [data["version"] async for _, data in sse.read_frames(lines())]


async def test_a_stream_resumed_with_last_event_id_sends_the_changes_after_it(server: support.Server) -> None:
    task_id = await a_finished_task_with_five_versions(server)

    assert await stream_versions(server, task_id, "2") == (200, [3, 4, 5])
    assert await stream_versions(server, task_id, "1") == (200, [2, 3, 4, 5])
    # The client has the terminal version: 204, which tells a browser's EventSource to stop.
    assert await stream_versions(server, task_id, "5") == (204, [])
    assert await stream_versions(server, task_id, "9") == (200, [5])  # no version of this task: afresh

    await server.runtime.store.prune_task_changes(before=support.NOW_MS + 3_600_000)  # the log moved on
    assert await stream_versions(server, task_id, "2") == (200, [5])  # the task now, as a new stream


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "+3", "9" * 19])
async def test_a_last_event_id_that_is_no_version_is_400(server: support.Server, header: str) -> None:
    task_id = await a_finished_task_with_five_versions(server)
    reply = await server.client.get(f"/v1/tasks/{task_id}/stream", headers={"Last-Event-ID": header})
    assert reply.status_code == 400
    assert "Last-Event-ID" in reply.json()["error"]


async def test_client_tasks_over_http_behaves_like_the_embedded_client(database_url: str) -> None:
    """``client.tasks`` of an app talking to a real server: the same answers as in process."""
    event_key = signing.generate_event_key()
    settings = settings_.ServerSettings(
        dev=False, database_url=database_url, signing_key=signing.generate_signing_key(), event_keys=(event_key,)
    )
    with support.serve_on_port(settings) as base_url:
        client = stepline.Stepline(app_id="http-tasks", base_url=base_url, event_key=event_key, is_dev=False)
        quota = stepline.Quota(feature="tailor", limit=1, window="1h")
        task = await client.tasks.enqueue(
            kind="tailor", owner="alice", event=stepline.Event("shop/tailor"), quota=quota
        )
        with pytest.raises(stepline.QuotaExceeded) as refused:
            await client.tasks.enqueue(kind="tailor", owner="alice", event=stepline.Event("shop/tailor"), quota=quota)
        fetched = await client.tasks.get(task.id)
        unknown = str(ulid.ULID())
        missing = await client.tasks.get(unknown)
        with pytest.raises(stepline.TaskNotFoundError):
            await client.tasks.cancel(unknown)
        cancelled = await client.tasks.cancel(task.id)
        listed = await client.tasks.list(owner="alice")
        streamed = [frame async for frame in client.tasks.stream(task.id)]
        resumed = [frame async for frame in client.tasks.stream(task.id, after_version=task.version)]
        after_the_end = [frame async for frame in client.tasks.stream(task.id, after_version=cancelled.version)]

    assert task.status == "pending"
    assert 3590 <= refused.value.retry_after <= 3600
    assert refused.value.limit == 1
    assert fetched == task
    assert missing is None
    assert cancelled.status == "cancelled"
    assert [item.id for item in listed.tasks] == [task.id]
    assert [frame.status for frame in streamed] == ["cancelled"]
    assert [(frame.version, frame.status) for frame in resumed] == [(cancelled.version, "cancelled")]
    assert after_the_end == []  # the server answered 204


# the database down


@contextlib.contextmanager
def postgres_unreachable(database_url: str) -> Iterator[None]:
    """No new connection to the test database, and the existing ones cut, until the block ends."""
    name = database_url.rpartition("/")[2]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@contextlib.contextmanager
def sqlite_locked(database_url: str) -> Iterator[None]:
    """Another process-like writer holds the SQLite database's write lock until the block ends."""
    holder = sqlite3.connect(sqlite_path(database_url), timeout=30, check_same_thread=False)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.rollback()
        holder.close()


async def test_enqueue_while_the_database_is_down_is_503_and_writes_nothing(database_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    chosen = str(ulid.ULID())
    down = postgres_unreachable if database_url.startswith("postgres") else sqlite_locked
    async with support.serve(settings) as server:
        assert (await post_task(server, task_body())).status_code == 202
        started = time.monotonic()
        with down(database_url):
            reply = await asyncio.wait_for(
                post_task(server, task_body(id=chosen, quota={"feature": "f", "limit": 5, "window": "1d"})), 90
            )
        waited = time.monotonic() - started
        after = await post_task(server, task_body())
        counted = await written(server.runtime.store)
        missing = await server.runtime.store.get_task(chosen)

    assert reply.status_code == 503, reply.text
    assert reply.json()["status"] == 503
    assert "database is unavailable" in reply.json()["error"]
    assert waited < 60
    assert missing is None
    assert after.status_code == 202, after.text
    assert counted == (2, 2, 0)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_after_the_database_restarts_enqueues_and_polls_meet_no_error(database_url: str) -> None:
    """A restart of PostgreSQL cuts every pooled connection. The server's pool still holds them,
    each used a moment ago, and the first request to be handed one must not answer 503."""
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    name = database_url.rpartition("/")[2]
    async with support.serve(settings) as server:
        before = await asyncio.gather(*(post_task(server, task_body()) for _ in range(6)))
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        after = [await post_task(server, task_body()) for _ in range(4)]
        polled = [await server.client.get(f"/v1/tasks/{reply.json().get('id')}") for reply in after]

    assert [reply.status_code for reply in before] == [202] * 6
    assert len(cut) >= 2
    assert [reply.status_code for reply in after] == [202] * 4, [reply.text for reply in after]
    assert [reply.status_code for reply in polled] == [200] * 4, [reply.text for reply in polled]


async def test_concurrent_enqueues_with_one_client_chosen_id_all_answer_202(
    server: support.Server, database_url: str
) -> None:
    """What the SDK does when it retries while the first attempt is still being served. On
    PostgreSQL the requests are made to overlap for certain (the quota lock is held from another
    connection until all of them wait on it)."""
    postgres = database_url.startswith("postgres")
    chosen = str(ulid.ULID())
    body = task_body(id=chosen, quota={"feature": "race", "limit": 10, "window": "1d"})

    if postgres:
        with quota_lock_held(database_url, "race", "alice"):
            racing = asyncio.gather(*(post_task(server, body) for _ in range(4)))
            await wait_for_lock_waiters(database_url, 4)
        replies = await racing
    else:
        replies = await asyncio.gather(*(post_task(server, body) for _ in range(4)))

    assert [reply.status_code for reply in replies] == [202] * 4
    assert {reply.json()["id"] for reply in replies} == {chosen}
    assert await written(server.runtime.store) == (1, 1, 0)


# task_routes in a user's FastAPI app


@dataclasses.dataclass
class UserApp:
    base_url: str
    gate: threading.Event
    step_done: threading.Event


@contextlib.contextmanager
def user_app(database_url: str) -> Iterator[UserApp]:
    """A FastAPI app with an embedded engine (system clock, background), served by uvicorn.

    Callers say who they are with ``X-User``; ``tailor`` reports progress, then waits for the
    test to open ``gate`` before finishing, so the stream can be watched mid-flight."""
    client = stepline.Stepline(app_id="roleready-test")
    gate = threading.Event()
    step_done = threading.Event()

    def wait_for_gate() -> bool:
        opened = gate.wait(60)
        step_done.set()
        return opened

    @client.function(id="tailor", trigger=stepline.on_event("ai/tailor.resume"))
    async def tailor(ctx: stepline.Context) -> dict[str, str]:
        await ctx.task.progress(0.25, "reading the job")
        opened = await ctx.step.run("wait-for-gate", lambda: asyncio.to_thread(wait_for_gate))
        await ctx.task.progress(0.75, "writing")
        return {"resume": "tailored", "gate": str(opened)}

    engine = stepline.Engine(client, [tailor], database_url)

    @contextlib.asynccontextmanager
    async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
        async with engine:
            yield

    def caller(request: fastapi.Request) -> str:
        user = request.headers.get("x-user")
        if not user:
            raise fastapi.HTTPException(401, "who are you?")
        return user

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/api/tailor", status_code=202)
    async def start(user: str = fastapi.Depends(caller)) -> dict[str, str]:
        task = await client.tasks.enqueue(
            kind="tailor", owner=user, event=stepline.Event("ai/tailor.resume", {"job": "j1"})
        )
        return {"aiJobId": task.id}

    app.include_router(stepline.fastapi.task_routes(client, owner=fastapi.Depends(caller), prefix="/api/ai-jobs"))
    port = support._free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the user app did not start")
        time.sleep(0.02)
    try:
        yield UserApp(f"http://127.0.0.1:{port}", gate, step_done)
    finally:
        gate.set()
        server.should_exit = True
        thread.join(timeout=30)


async def wait_for_status(http: httpx.AsyncClient, path: str, user: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    while True:
        task: dict[str, Any] = (await http.get(path, headers={"X-User": user})).json()
        if task.get("status") == wanted or time.monotonic() > deadline:
            return task
        await asyncio.sleep(0.05)


async def test_task_routes_serve_the_owner_and_hide_the_task_from_everyone_else(database_url: str) -> None:
    with user_app(database_url) as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=STREAM_TIMEOUT_S) as http:
            task_id = (await http.post("/api/tailor", headers={"X-User": "alice"})).json()["aiJobId"]
            unknown = str(ulid.ULID())
            own = await http.get(f"/api/ai-jobs/{task_id}", headers={"X-User": "alice"})
            other = await http.get(f"/api/ai-jobs/{task_id}", headers={"X-User": "mallory"})
            missing = await http.get(f"/api/ai-jobs/{unknown}", headers={"X-User": "mallory"})
            other_stream = await http.get(f"/api/ai-jobs/{task_id}/stream", headers={"X-User": "mallory"})
            other_cancel = await http.post(f"/api/ai-jobs/{task_id}/cancel", headers={"X-User": "mallory"})
            anonymous = await http.get(f"/api/ai-jobs/{task_id}")
            still_alive = await http.get(f"/api/ai-jobs/{task_id}", headers={"X-User": "alice"})
            app.gate.set()
            done = await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "complete")

    assert own.status_code == 200
    assert own.json()["id"] == task_id
    assert own.json()["owner"] == "alice"
    for hidden in (other, other_stream, other_cancel):
        assert hidden.status_code == 404
        assert hidden.json() == {"error": missing.json()["error"].replace(unknown, task_id), "status": 404}
    assert missing.status_code == 404
    assert anonymous.status_code == 401
    assert still_alive.json()["status"] in ("pending", "running")
    assert done["status"] == "complete"
    assert done["result"] == {"resume": "tailored", "gate": "True"}


async def test_task_routes_stream_until_terminal(database_url: str) -> None:
    with user_app(database_url) as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=STREAM_TIMEOUT_S) as http:
            task_id = (await http.post("/api/tailor", headers={"X-User": "alice"})).json()["aiJobId"]
            await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "running")
            seen: list[dict[str, Any]] = []
            async with http.stream("GET", f"/api/ai-jobs/{task_id}/stream", headers={"X-User": "alice"}) as reply:
                assert reply.status_code == 200
                frames = sse.read_frames(reply.aiter_lines())
                seen.append(await next_frame(frames))
                app.gate.set()
                while seen[-1]["status"] != "complete":
                    seen.append(await next_frame(frames))
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(anext(frames), STREAM_TIMEOUT_S)

    assert seen[0]["status"] == "running"
    assert seen[0]["progress"] == 0.25
    assert seen[-1]["status"] == "complete"
    assert seen[-1]["result"] == {"resume": "tailored", "gate": "True"}
    progress = [frame["progress"] for frame in seen]
    assert progress == sorted(progress)
    versions = [frame["version"] for frame in seen]
    assert versions == sorted(set(versions))


async def test_task_routes_resume_a_stream_after_last_event_id(database_url: str) -> None:
    with user_app(database_url) as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=STREAM_TIMEOUT_S) as http:
            task_id = (await http.post("/api/tailor", headers={"X-User": "alice"})).json()["aiJobId"]
            app.gate.set()
            done = await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "complete")
            path = f"/api/ai-jobs/{task_id}/stream"
            resumed = await http.get(path, headers={"X-User": "alice", "Last-Event-ID": "1"})
            ended = await http.get(path, headers={"X-User": "alice", "Last-Event-ID": str(done["version"])})
            garbled = await http.get(path, headers={"X-User": "alice", "Last-Event-ID": "v2"})
            others = await http.get(path, headers={"X-User": "mallory", "Last-Event-ID": "1"})

    versions = [int(line.removeprefix("id: ")) for line in resumed.text.splitlines() if line.startswith("id: ")]
    assert resumed.status_code == 200
    assert versions == list(range(2, done["version"] + 1))
    assert ended.status_code == 204
    assert ended.content == b""
    assert garbled.status_code == 400
    assert "Last-Event-ID" in garbled.json()["error"]
    assert others.status_code == 404


async def test_task_routes_cancel_cancels_the_owners_task(database_url: str) -> None:
    with user_app(database_url) as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=STREAM_TIMEOUT_S) as http:
            task_id = (await http.post("/api/tailor", headers={"X-User": "alice"})).json()["aiJobId"]
            await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "running")
            cancelled = await http.post(f"/api/ai-jobs/{task_id}/cancel", headers={"X-User": "alice"})
            app.gate.set()
            assert await asyncio.to_thread(app.step_done.wait, STREAM_TIMEOUT_S)
            after = (await http.get(f"/api/ai-jobs/{task_id}", headers={"X-User": "alice"})).json()

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert after["status"] == "cancelled"
    assert after["progress"] == 0.25  # the step after the gate never reported


@pytest.mark.parametrize("path", ["/api/ai-jobs/{id}", "/api/ai-jobs/{id}/stream", "/api/ai-jobs/{id}/cancel"])
async def test_task_routes_answer_503_in_json_while_stepline_is_unreachable(path: str) -> None:
    # The discard port: nothing listens there, as when the Stepline server is down.
    client = stepline.Stepline(app_id="no-server", base_url="http://127.0.0.1:9", event_key="k", is_dev=False)
    app = fastapi.FastAPI()
    app.include_router(
        stepline.fastapi.task_routes(client, owner=fastapi.Depends(lambda: "alice"), prefix="/api/ai-jobs")
    )
    method = "POST" if path.endswith("cancel") else "GET"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        reply = await http.request(method, path.format(id=ulid.ULID()))

    assert reply.status_code == 503, reply.text
    assert reply.json() == {"error": "the task service is unavailable right now, please retry", "status": 503}
    assert reply.headers["retry-after"] == "1"


async def test_task_routes_answer_401_when_the_owner_dependency_finds_nobody() -> None:
    client = stepline.Stepline(app_id="roleready-test", is_dev=True)
    app = fastapi.FastAPI()
    app.include_router(stepline.fastapi.task_routes(client, owner=fastapi.Depends(lambda: None), prefix="/api/jobs"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        replies = [
            await http.get(f"/api/jobs/{ulid.ULID()}"),
            await http.get(f"/api/jobs/{ulid.ULID()}/stream"),
            await http.post(f"/api/jobs/{ulid.ULID()}/cancel"),
        ]

    for reply in replies:
        assert reply.status_code == 401
        assert reply.json()["status"] == 401


async def test_task_routes_send_keep_alives_while_the_task_is_quiet(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxies cut connections that stay quiet (nginx: 60 s): a stream writes a comment instead."""
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.2)
    with user_app(database_url) as app:
        async with httpx.AsyncClient(base_url=app.base_url, timeout=STREAM_TIMEOUT_S) as http:
            task_id = (await http.post("/api/tailor", headers={"X-User": "alice"})).json()["aiJobId"]
            await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "running")
            seen: list[str] = []
            async with http.stream("GET", f"/api/ai-jobs/{task_id}/stream", headers={"X-User": "alice"}) as reply:
                async for line in reply.aiter_lines():
                    seen.append(line)
                    if line == ": keep-alive":
                        break
            app.gate.set()
            done = await wait_for_status(http, f"/api/ai-jobs/{task_id}", "alice", "complete")

    assert seen[0].startswith("id: ")
    assert seen[1] == "event: task"
    assert seen[-1] == ": keep-alive"
    assert done["status"] == "complete"
