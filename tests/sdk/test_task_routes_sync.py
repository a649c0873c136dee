"""``stepline.flask.task_routes`` and ``stepline.django.task_routes`` in real WSGI servers.

On SQLite and PostgreSQL, for both frameworks, over real HTTP: the owner reads, streams and
cancels their task; anybody else gets the 404 of an unknown id, nobody signed in gets 401; a
stream resumes after ``Last-Event-ID``, answers 204 once the client has the end, 400 for a
malformed header. Once with ``client.tasks`` going to a real Stepline server over HTTP (the
tasks stay pending: no app serves their event, so a cancel ends them), and once with an
embedded engine running the function in the app's process (the stream follows it to
``complete`` with its progress). Django's cancel keeps CSRF protection unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import httpx
import pytest
import ulid
import uvicorn
from django.core import asgi
from django.core.handlers.wsgi import WSGIHandler
from werkzeug import serving

import stepline
import stepline.django
import stepline.flask
from stepline.protocol import sse
from stepline.server import settings as settings_
from tests.server import support

from . import django_site

TIMEOUT_S = 30.0
FRAMEWORKS = ("flask", "django")
USER = "X-User"


def caller_of(headers: Any) -> str | None:
    """Who the request says it is: the demo apps' stand-in for real authentication."""
    user: str | None = headers.get(USER)
    return user


def flask_app(client: stepline.Stepline) -> Any:
    app = flask.Flask(__name__)

    def owner() -> str | None:
        return caller_of(flask.request.headers)

    app.register_blueprint(stepline.flask.task_routes(client, owner=owner, url_prefix="/api/ai-jobs"))
    app.register_blueprint(stepline.flask.task_routes(client, owner=owner, url_prefix=""))
    return app


def django_app(client: stepline.Stepline) -> Any:
    django_site.urlpatterns[:] = [
        *stepline.django.task_routes(
            client, owner=lambda request: caller_of(request.headers), prefix="api/ai-jobs", csrf_exempt=True
        ),
        *stepline.django.task_routes(client, owner=lambda request: caller_of(request.headers), prefix="api/guarded"),
        *stepline.django.task_routes(client, owner=lambda request: caller_of(request.headers), prefix=""),
    ]
    return WSGIHandler()


APPS: dict[str, Callable[[stepline.Stepline], Any]] = {"flask": flask_app, "django": django_app}


@contextlib.contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """``app`` behind werkzeug's threaded WSGI server on a free port; yields its base URL."""
    server = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def enqueue(client: stepline.Stepline, owner: str = "alice") -> str:
    event = stepline.Event(name="ai/tailor.resume", data={"job_id": "j1"})
    return client.tasks.enqueue_sync(kind="tailor_resume", owner=owner, event=event).id


def frames_of(http: httpx.Client, path: str, user: str, **headers: str) -> tuple[int, list[dict[str, Any]]]:
    with http.stream("GET", path, headers={USER: user, **headers}) as reply:
        found = [data for event, data in sse.read_frames_sync(reply.iter_lines()) if event == "task"]
        return reply.status_code, found


def wait_for(http: httpx.Client, path: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        task: dict[str, Any] = http.get(path, headers={USER: "alice"}).json()
        if task.get("status") == wanted or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


@dataclasses.dataclass
class StreamWatcher:
    """A stream read in a thread, so that the test can change the task meanwhile."""

    frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    first: threading.Event = dataclasses.field(default_factory=threading.Event)
    status: int | None = None

    def watch(self, http: httpx.Client, path: str) -> threading.Thread:
        def read() -> None:
            with http.stream("GET", path, headers={USER: "alice"}) as reply:
                self.status = reply.status_code
                for event, data in sse.read_frames_sync(reply.iter_lines()):
                    if event == "task":
                        self.frames.append(data)
                        self.first.set()
            self.first.set()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def stepline_server(database_url: str) -> Iterator[str]:
    with support.serve_on_port(settings_.ServerSettings(dev=True, database_url=database_url)) as url:
        yield url


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_task_routes_over_a_server_serve_the_owner_only(framework: str, stepline_server: str) -> None:
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    task_id, bobs_task = enqueue(client), enqueue(client, owner="bob")
    unknown = str(ulid.ULID())
    with wsgi_server(APPS[framework](client)) as base, httpx.Client(base_url=base, timeout=TIMEOUT_S) as http:
        path = f"/api/ai-jobs/{task_id}"
        own = http.get(path, headers={USER: "alice"})
        others = [
            http.get(path, headers={USER: "mallory"}),
            http.get(path + "/stream", headers={USER: "mallory"}),
            http.post(path + "/cancel", headers={USER: "mallory"}),
            http.get(f"/api/ai-jobs/{bobs_task}", headers={USER: "alice"}),
        ]
        missing = http.get(f"/api/ai-jobs/{unknown}", headers={USER: "alice"})
        anonymous = http.get(path)
        still_pending = http.get(path, headers={USER: "alice"})

        watcher = StreamWatcher()
        reader = watcher.watch(http, path + "/stream")
        assert watcher.first.wait(TIMEOUT_S)
        cancelled = http.post(path + "/cancel", headers={USER: "alice"})
        reader.join(TIMEOUT_S)
        assert not reader.is_alive(), "the stream did not close after the terminal state"

        final = cancelled.json()["version"]
        resumed = frames_of(http, path + "/stream", "alice", **{"Last-Event-ID": "1"})
        ended = http.get(path + "/stream", headers={USER: "alice", "Last-Event-ID": str(final)})
        garbled = http.get(path + "/stream", headers={USER: "alice", "Last-Event-ID": "v2"})

    assert own.status_code == 200
    assert own.headers["content-type"].startswith("application/json")
    assert (own.json()["id"], own.json()["owner"], own.json()["status"]) == (task_id, "alice", "pending")
    for hidden, hidden_id in zip(others, [task_id, task_id, task_id, bobs_task], strict=True):
        assert hidden.status_code == 404
        assert hidden.json() == {"error": missing.json()["error"].replace(unknown, hidden_id), "status": 404}
    assert missing.status_code == 404
    assert anonymous.status_code == 401
    assert anonymous.json()["status"] == 401
    assert still_pending.json()["status"] == "pending"

    assert watcher.status == 200
    assert [frame["status"] for frame in watcher.frames] == ["pending", "cancelled"]
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.tasks.get_sync(task_id) == stepline.Task.from_wire(cancelled.json())
    assert resumed[0] == 200
    assert [frame["version"] for frame in resumed[1]] == list(range(2, final + 1))
    assert ended.status_code == 204
    assert ended.content == b""
    assert garbled.status_code == 400
    assert "Last-Event-ID" in garbled.json()["error"]


def test_a_synchronous_client_lists_and_cancels_through_a_server(stepline_server: str) -> None:
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    first, second, bobs = enqueue(client), enqueue(client), enqueue(client, owner="bob")

    page = client.tasks.list_sync(owner="alice", limit=1)
    rest = client.tasks.list_sync(owner="alice", cursor=page.cursor)
    cancelled = client.tasks.cancel_sync(first)
    again = client.tasks.cancel_sync(first)
    following = client.tasks.stream_sync(second.lower())
    stream = next(following)  # the task now; it stays pending, so stop following it
    following.close()

    assert [task.id for task in page.tasks + rest.tasks] == [second, first]
    assert rest.cursor is None
    assert cancelled.status == "cancelled"
    assert again == cancelled  # an ended task comes back unchanged
    assert [task.id for task in client.tasks.list_sync(status="cancelled").tasks] == [first]
    assert bobs not in [task.id for task in client.tasks.list_sync(owner="alice").tasks]
    assert len(client.tasks.list_sync(kind="tailor_resume").tasks) == 3
    assert client.tasks.list_sync(kind="something-else").tasks == []
    assert (stream.id, stream.status) == (second, "pending")
    with pytest.raises(stepline.TaskNotFoundError):
        client.tasks.cancel_sync(str(ulid.ULID()))


def test_django_cancel_keeps_csrf_protection_unless_exempted(stepline_server: str) -> None:
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    task_id = enqueue(client)
    with wsgi_server(django_app(client)) as base, httpx.Client(base_url=base, timeout=TIMEOUT_S) as http:
        guarded = http.post(f"/api/guarded/{task_id}/cancel", headers={USER: "alice"})
        wrong_method = http.get(f"/api/ai-jobs/{task_id}/cancel", headers={USER: "alice"})
        still = http.get(f"/api/guarded/{task_id}", headers={USER: "alice"})

    assert guarded.status_code == 403  # Django's CSRF check: no token
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert "GET" in wrong_method.json()["error"]
    assert still.json()["status"] == "pending"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_task_routes_follow_an_embedded_engine_to_complete(framework: str, database_url: str) -> None:
    client = stepline.Stepline(app_id="sync-embedded")
    gate = threading.Event()

    @client.function(id="tailor", trigger=stepline.on_event("ai/tailor.resume"))
    async def tailor(ctx: stepline.Context) -> dict[str, str]:
        await ctx.task.progress(0.25, "reading the job")
        opened = await ctx.step.run("wait-for-gate", lambda: asyncio.to_thread(gate.wait, TIMEOUT_S))
        await ctx.task.progress(0.75, "writing")
        return {"resume": "tailored", "gate": str(opened)}

    engine = stepline.Engine(client, [tailor], database_url)
    with (
        engine,  # on a thread of its own, as a WSGI app runs it
        wsgi_server(APPS[framework](client)) as base,
        httpx.Client(base_url=base, timeout=TIMEOUT_S) as http,
    ):
        task_id = enqueue(client)
        path = f"/api/ai-jobs/{task_id}"
        running = wait_for(http, path, "running")
        watcher = StreamWatcher()
        reader = watcher.watch(http, path + "/stream")
        assert watcher.first.wait(TIMEOUT_S)
        gate.set()
        reader.join(TIMEOUT_S)
        listed = client.tasks.list_sync(owner="alice").tasks

    assert running["status"] == "running"
    assert not reader.is_alive()
    assert watcher.frames[0]["status"] == "running"
    assert watcher.frames[-1]["status"] == "complete"
    assert watcher.frames[-1]["result"] == {"resume": "tailored", "gate": "True"}
    progress = [frame["progress"] for frame in watcher.frames]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0  # a complete task shows its whole progress
    versions = [frame["version"] for frame in watcher.frames]
    assert versions == sorted(set(versions))
    assert [task.id for task in listed] == [task_id]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrong_methods_are_405_in_json_and_the_routes_mount_at_the_root(framework: str, stepline_server: str) -> None:
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    task_id = enqueue(client)
    alice = {USER: "alice"}
    with wsgi_server(APPS[framework](client)) as base, httpx.Client(base_url=base, timeout=TIMEOUT_S) as http:
        path = f"/api/ai-jobs/{task_id}"
        posted = http.post(path, headers=alice)
        deleted = http.delete(path + "/cancel", headers=alice)
        head = http.head(path + "/stream", headers=alice)
        at_root = http.get(f"/{task_id}", headers=alice)
        final = http.post(path + "/cancel", headers=alice).json()["version"]
        ended = http.get(path + "/stream", headers={**alice, "Last-Event-ID": str(final)})

    for refused, allowed in ((posted, "GET"), (deleted, "POST")):
        assert refused.status_code == 405
        assert refused.headers["allow"] == allowed
        assert refused.json()["status"] == 405
    # HEAD of a stream never follows the task: Flask answers its headers, Django refuses it as FastAPI does.
    assert head.status_code == (200 if framework == "flask" else 405)
    assert at_root.status_code == 200
    assert at_root.json()["id"] == task_id
    assert ended.status_code == 204
    assert "content-type" not in ended.headers


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_quiet_stream_sends_keep_alives(
    framework: str, stepline_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive is how a WSGI server learns that the browser left (its write fails), and
    what keeps a proxy from cutting a quiet stream."""
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.2)
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    task_id = enqueue(client)
    with wsgi_server(APPS[framework](client)) as base, httpx.Client(base_url=base, timeout=TIMEOUT_S) as http:
        with http.stream("GET", f"/api/ai-jobs/{task_id}/stream", headers={USER: "alice"}) as reply:
            lines = reply.iter_lines()
            seen = [next(lines) for _ in range(8)]
        cancelled = http.post(f"/api/ai-jobs/{task_id}/cancel", headers={USER: "alice"})

    assert seen[:2] == ["id: 1", "event: task"]
    assert seen[2].startswith("data: {")
    assert ": keep-alive" in seen
    assert cancelled.json()["status"] == "cancelled"


def test_streams_do_not_starve_the_other_calls(stepline_server: str) -> None:
    """Each open stream holds a connection; a hundred of them (a hundred watching browsers) must
    not leave the short calls waiting for one."""
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    task_id = enqueue(client)
    streams = [client.tasks.stream_sync(task_id) for _ in range(101)]
    try:
        firsts = [next(stream) for stream in streams]
        started = time.monotonic()
        read = client.tasks.get_sync(task_id)
        waited = time.monotonic() - started
    finally:
        for stream in streams:
            stream.close()

    assert {task.id for task in firsts} == {task_id}
    assert read is not None
    assert waited < 20, f"a read waited {waited:.1f} s behind the open streams"


def test_django_streams_frame_by_frame_under_asgi(stepline_server: str) -> None:
    """Under ASGI Django reads a synchronous iterator whole before it sends anything: the frames
    must reach the browser as the task changes, not all at its end."""
    client = stepline.Stepline(app_id="sync-app", base_url=stepline_server, is_dev=True)
    django_app(client)
    task_id = enqueue(client)
    config = uvicorn.Config(asgi.get_asgi_application(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    with asgi_server(config) as base, httpx.Client(base_url=base, timeout=TIMEOUT_S) as http:
        watcher = StreamWatcher()
        reader = watcher.watch(http, f"/api/ai-jobs/{task_id}/stream")
        assert watcher.first.wait(TIMEOUT_S)
        first = list(watcher.frames)
        http.post(f"/api/ai-jobs/{task_id}/cancel", headers={USER: "alice"})
        reader.join(TIMEOUT_S)

    assert [frame["status"] for frame in first] == ["pending"]
    assert [frame["status"] for frame in watcher.frames] == ["pending", "cancelled"]


@contextlib.contextmanager
def asgi_server(config: uvicorn.Config) -> Iterator[str]:
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the ASGI server did not start"
        assert time.monotonic() < deadline, "the ASGI server did not start in time"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
