"""The RoleReady example end to end: the real ``stepline dev`` server and the real app on uvicorn.

Two parts, on SQLite and on PostgreSQL:

* **The five-step contract**, as a browser or ``curl`` sees it: ``202 {"aiJobId"}`` at once, the
  task readable from that instant and polled to ``complete``, its stream's frames in order,
  404 for another user's task or job, 422 naming the bad field, 429 with ``Retry-After`` over
  quota (nothing written), 401 without a token, and 503 with a JSON error when the server is
  unreachable.
* **The property**: under injected failures (the simulated model failing most calls, the app
  SIGKILLed and restarted while tasks run, the server SIGKILLed and restarted while tasks run,
  and on PostgreSQL every database connection cut while tasks run, as a restart of the database
  does), every accepted task ends in a terminal state, the tasks are exactly those the 202s named, and
  each failed task carries the reason the ``on_failure`` handler wrote. The schedule (who asks
  for which job, how many requests between failures, the model's failure draws) comes from one
  seed, printed on failure; set ``ROLEREADY_PROPERTY_SEED`` to replay one.

Requests of the property run one at a time and processes are killed between requests, never
during one: a request cut off mid-flight would leave the client not knowing whether its task
exists, which is the uncertainty the client-chosen task id resolves, not what this test counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from examples.roleready import worker
from stepline.protocol import sse
from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e import harness

TOKENS = {"alice": "alice-demo-token", "bob": "bob-demo-token", "carol": "carol-demo-token"}
JOBS = {"alice": ["job-a1", "job-a2"], "bob": ["job-b1", "job-b2"], "carol": ["job-c1"]}
CONTRACT_LIMIT = 4
TERMINAL = frozenset({"complete", "failed", "cancelled"})
STATUS_RANK = {"pending": 0, "running": 1, "complete": 2, "failed": 2, "cancelled": 2}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def roleready_process(
    server: harness.ServerProcess, directory: Path, name: str = "roleready", **settings: str
) -> harness.AppProcess:
    """The example app, pointed at ``server``, with its own database file under ``directory``."""
    env = harness.stepline_env(server, directory / "steps.db")
    env.update(ROLEREADY_DATABASE=str(directory / "roleready.db"), **settings)
    return harness.AppProcess("examples.roleready.app:app", directory / f"{name}.log", env, serve_path="/api/stepline")


def tailor(http: httpx.Client, user: str, job_id: str) -> httpx.Response:
    return http.post("/api/resumes/tailor", json={"job_id": job_id}, headers=bearer(user))


def accepted_id(reply: httpx.Response) -> str:
    assert reply.status_code == 202, f"expected 202, got {reply.status_code}: {reply.text}"
    body = reply.json()
    assert set(body) == {"aiJobId"}, body
    assert isinstance(body["aiJobId"], str), body
    assert body["aiJobId"], body
    task_id: str = body["aiJobId"]
    return task_id


def poll(http: httpx.Client, user: str, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """The task as its owner polls it, once terminal."""
    last: dict[str, Any] = {}

    def ended() -> dict[str, Any] | None:
        nonlocal last
        reply = http.get(f"/api/ai-jobs/{task_id}", headers=bearer(user))
        assert reply.status_code == 200, reply.text
        last = reply.json()
        return last if last["status"] in TERMINAL else None

    try:
        return harness.wait_for(ended, timeout, f"task {task_id} to end", interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None


def server_tasks(server: harness.ServerProcess, owner: str) -> list[dict[str, Any]]:
    """Every task of ``owner``, from the server's own API (all pages)."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while True:
            params = {"owner": owner, "limit": "500", **({"cursor": cursor} if cursor else {})}
            reply = http.get("/v1/tasks", params=params)
            assert reply.status_code == 200, reply.text
            page = reply.json()
            found += page["data"]
            cursor = page["cursor"]
            if not cursor:
                return found


# the five-step contract


@dataclasses.dataclass
class Contract:
    http: httpx.Client
    """A client of the app."""
    server: harness.ServerProcess

    def tasks_of(self, owner: str) -> list[dict[str, Any]]:
        return server_tasks(self.server, owner)


@contextlib.contextmanager
def roleready_stack(
    database_url: str, directory: Path, **settings: str
) -> Iterator[tuple[harness.ServerProcess, harness.AppProcess, httpx.Client]]:
    """A server on ``database_url`` and the app (``settings`` in its environment), both running
    and synced, and a client of the app."""
    server = harness.ServerProcess(database_url, directory / "server.log")
    app = roleready_process(server, directory, **settings)
    server.command += ["-u", app.url]
    app.spawn()
    server.spawn()
    with harness.running(app, server), httpx.Client(base_url=f"http://{harness.HOST}:{app.port}", timeout=30) as http:
        app.wait_ready()
        server.wait_healthy()
        server.api().wait_synced(["roleready-tailor-resume"])
        yield server, app, http


@pytest.fixture(scope="module")
def contract(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:
    """The server and the app (a model that never fails and takes 1 s), shared by the module."""
    with roleready_stack(
        module_database_url,
        tmp_path_factory.mktemp("roleready"),
        ROLEREADY_MODEL_LATENCY_MS="1000",
        ROLEREADY_MODEL_FAILURE_RATE="0",
        ROLEREADY_DAILY_LIMIT=str(CONTRACT_LIMIT),
    ) as (server, _, http):
        yield Contract(http, server)


def test_enqueue_answers_202_then_the_task_is_polled_to_complete(contract: Contract) -> None:
    task_id = accepted_id(tailor(contract.http, "alice", "job-a1"))
    # Readable from the instant the id is returned (no window where it does not exist yet).
    first = contract.http.get(f"/api/ai-jobs/{task_id}", headers=bearer("alice"))
    assert first.status_code == 200, first.text
    assert first.json()["status"] in {"pending", "running"}, first.json()
    assert first.json()["owner"] == "alice"
    assert first.json()["kind"] == "tailor_resume"

    task = poll(contract.http, "alice", task_id)
    assert task["status"] == "complete", task
    assert task["progress"] == 1.0
    assert task["error"] is None
    result = task["result"]
    assert result["job_id"] == "job-a1"
    assert result["resume_id"] == task_id
    assert result["headline"] == "Senior Python Engineer candidate for Acme Robotics"
    assert "Shipped production systems using python" in result["bullets"]


def test_stream_sends_the_task_changes_in_order_and_closes_when_it_ends(contract: Contract) -> None:
    task_id = accepted_id(tailor(contract.http, "alice", "job-a2"))
    frames: list[tuple[str, Any]] = []

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=str(contract.http.base_url), timeout=httpx.Timeout(30, read=30)) as http,
            http.stream("GET", f"/api/ai-jobs/{task_id}/stream", headers=bearer("alice")) as reply,
        ):
            assert reply.status_code == 200, await reply.aread()
            assert reply.headers["content-type"].startswith("text/event-stream")
            frames.extend([frame async for frame in sse.read_frames(reply.aiter_lines())])

    asyncio.run(asyncio.wait_for(read(), 60))  # returns only because the route closed the stream

    assert frames, "the stream sent no frame"
    assert all(event == "task" for event, _ in frames), frames
    tasks = [data for _, data in frames]
    assert all(task["id"] == task_id for task in tasks)
    versions = [task["version"] for task in tasks]
    assert versions == sorted(set(versions)), f"versions not strictly increasing: {versions}"
    ranks = [STATUS_RANK[task["status"]] for task in tasks]
    assert ranks == sorted(ranks), f"statuses out of order: {[task['status'] for task in tasks]}"
    progress = [task["progress"] or 0.0 for task in tasks]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert tasks[-1]["status"] == "complete", tasks[-1]
    assert tasks[-1]["result"]["job_id"] == "job-a2", tasks[-1]
    assert [task["status"] for task in tasks].count("complete") == 1, "frames after the terminal one"
    # The model takes 1 s and the stream re-reads the task every 200 ms: a running frame shows.
    assert any(task["status"] == "running" for task in tasks), [task["status"] for task in tasks]


def test_another_users_task_is_404_everywhere(contract: Contract) -> None:
    task_id = accepted_id(tailor(contract.http, "bob", "job-b1"))
    assert contract.http.get(f"/api/ai-jobs/{task_id}", headers=bearer("bob")).status_code == 200
    for method, path in (("GET", ""), ("GET", "/stream"), ("POST", "/cancel")):
        reply = contract.http.request(method, f"/api/ai-jobs/{task_id}{path}", headers=bearer("alice"))
        harness.assert_error_body(reply, 404)
    harness.assert_error_body(contract.http.get("/api/ai-jobs/01NOSUCHTASK0000000000000", headers=bearer("bob")), 404)
    assert poll(contract.http, "bob", task_id)["status"] == "complete"  # alice's cancel did nothing


def test_a_job_of_another_user_is_404_and_nothing_is_enqueued(contract: Contract) -> None:
    before = len(contract.tasks_of("bob"))
    harness.assert_error_body(tailor(contract.http, "bob", "job-a1"), 404)
    harness.assert_error_body(tailor(contract.http, "bob", "no-such-job"), 404)
    assert len(contract.tasks_of("bob")) == before


def test_without_a_valid_token_the_route_answers_401(contract: Contract) -> None:
    assert contract.http.post("/api/resumes/tailor", json={"job_id": "job-a1"}).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert contract.http.post("/api/resumes/tailor", json={"job_id": "job-a1"}, headers=wrong).status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"job_id": ""}, {"job_id": 12}, {"job_id": "job a1; drop"}, {"job_id": "job-a1", "priority": "high"}],
    ids=["missing", "empty", "not-a-string", "bad-characters", "unknown-field"],
)
def test_an_invalid_body_is_422_naming_the_field(contract: Contract, body: dict[str, Any]) -> None:
    reply = contract.http.post("/api/resumes/tailor", json=body, headers=bearer("carol"))
    assert reply.status_code == 422, reply.text
    fields = {str(error["loc"][-1]) for error in reply.json()["detail"]}
    assert fields & {"job_id", "priority"}, reply.json()


def test_over_quota_is_429_with_retry_after_and_writes_nothing(contract: Contract) -> None:
    ids = [accepted_id(tailor(contract.http, "carol", "job-c1")) for _ in range(CONTRACT_LIMIT)]
    refused = tailor(contract.http, "carol", "job-c1")
    body = harness.assert_error_body(refused, 429)
    retry_after = int(refused.headers["Retry-After"])
    assert 0 < retry_after <= 86_400, refused.headers
    assert body["retry_after"] == retry_after, body
    assert f"{CONTRACT_LIMIT} tailorings" in body["error"], body
    assert sorted(task["id"] for task in contract.tasks_of("carol")) == sorted(ids)


def test_server_unreachable_is_503_with_a_clear_json_error(tmp_path: Path) -> None:
    """No server listens at the app's ``STEPLINE_BASE_URL``: the route answers 503 (after the SDK's
    own short retries), with a JSON error, instead of hanging or failing with a 500."""
    nobody = harness.ServerProcess(f"sqlite:///{tmp_path}/unused.db", tmp_path / "unused.log")  # never started
    app = roleready_process(nobody, tmp_path).start()
    with harness.running(app), httpx.Client(base_url=f"http://{harness.HOST}:{app.port}", timeout=30) as http:
        started = time.monotonic()
        body = harness.assert_error_body(tailor(http, "alice", "job-a1"), 503)
        assert "unavailable" in body["error"], body
        assert "nothing was started" in body["error"], body
        assert time.monotonic() - started < 10


# the property: every accepted task ends, under injected failures

PROPERTY_REQUESTS = 36
"""Requests in the schedule, in four phases separated by the injected failures."""
MODEL_FAILURE_RATE = 0.7
"""Per call: with 4 attempts a task fails for good with probability 0.7**4 ≈ 0.24."""
PROPERTY_TIMEOUT_S = 120.0
"""Bound on the wait for every task to end. A run whose call was in flight when the server was
killed waits for its lease (30 s) before the restarted server takes it over."""


@dataclasses.dataclass
class Schedule:
    """Who asks for what, and when the failures are injected: all drawn from one seed."""

    seed: int
    requests: list[tuple[str, str]]
    """(user, job id) per request."""
    phase_ends: list[int]
    """After these request counts, one failure each, in the order the test gives them."""

    @classmethod
    def draw(cls, seed: int, failures: int) -> Schedule:
        rng = random.Random(seed)
        users = list(JOBS)
        requests = []
        for _ in range(PROPERTY_REQUESTS):
            user = rng.choice(users)
            requests.append((user, rng.choice(JOBS[user])))
        cuts = sorted(rng.sample(range(4, PROPERTY_REQUESTS - 4), failures))
        return cls(seed, requests, cuts)


class Property:
    """The processes of the property test and what it saw."""

    def __init__(self, database_url: str, directory: Path, seed: int) -> None:
        self.database_url = database_url
        self.server = harness.ServerProcess(database_url, directory / "server.log")
        self.app = roleready_process(
            self.server,
            directory,
            ROLEREADY_MODEL_LATENCY_MS="150",
            ROLEREADY_MODEL_FAILURE_RATE=str(MODEL_FAILURE_RATE),
            ROLEREADY_MODEL_SEED=str(seed),
            ROLEREADY_DAILY_LIMIT="100000",
        )
        self.server.command += ["-u", self.app.url]
        self.app_db = directory / "roleready.db"
        self.http = httpx.Client(base_url=f"http://{harness.HOST}:{self.app.port}", timeout=60)
        self.accepted: dict[str, str] = {}
        """Task id → owner, for every 202."""
        self.unavailable = 0
        self.timeline: list[str] = []

    def request(self, user: str, job_id: str) -> None:
        reply = tailor(self.http, user, job_id)
        if reply.status_code == 503:
            self.unavailable += 1
            return
        self.accepted[accepted_id(reply)] = user

    def wait_until_running(self) -> None:
        """Until some accepted task is running: a failure injected now lands mid-run."""

        def some_running() -> bool:
            return any(
                task["status"] == "running"
                for owner in set(self.accepted.values())
                for task in server_tasks(self.server, owner)
            )

        harness.wait_for(some_running, 30, "a task to be running", interval=0.05)

    def kill_app(self) -> None:
        self.wait_until_running()
        self.timeline.append(f"kill -9 app after {len(self.accepted)} accepted")
        self.app.kill()
        self.app.start()

    def kill_server(self, rng: random.Random) -> None:
        self.wait_until_running()
        self.timeline.append(f"kill -9 server after {len(self.accepted)} accepted")
        self.server.kill()
        # While it is down the route must refuse cleanly (503), and must not leave a task behind.
        for _ in range(2):
            user = rng.choice(list(JOBS))
            reply = tailor(self.http, user, JOBS[user][0])
            harness.assert_error_body(reply, 503)
        self.server.start()

    def cut_database(self) -> None:
        """End every PostgreSQL backend of the server's database, as a restart of PostgreSQL
        does: the server's pooled connections, its listener, and any transaction in flight."""
        self.wait_until_running()
        name = self.database_url.rpartition("/")[2]
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchall()
        self.timeline.append(f"cut {len(ended)} database connections after {len(self.accepted)} accepted")

    def context(self) -> str:
        logs = f"server log:\n{self.server.logs()[-2500:]}\napp log:\n{self.app.logs()[-2500:]}"
        return f"\ntimeline: {self.timeline}\n{logs}"


@pytest.fixture
def property_seed() -> int:
    return int(os.environ.get("ROLEREADY_PROPERTY_SEED") or random.SystemRandom().randrange(1, 2**31))


def test_every_accepted_task_ends_under_model_errors_and_killed_processes(
    database_url: str, tmp_path: Path, property_seed: int
) -> None:
    rng = random.Random(property_seed + 1)
    run = Property(database_url, tmp_path, property_seed)
    injections = [run.kill_app, lambda: run.kill_server(rng), run.kill_app]
    if database_url.startswith("postgres"):
        # Requests go on at once, on a pool still holding the dead connections: none may 503.
        injections.insert(2, run.cut_database)
    schedule = Schedule.draw(property_seed, len(injections))
    replay = f"(replay with ROLEREADY_PROPERTY_SEED={property_seed})"
    run.app.spawn()
    run.server.spawn()
    with contextlib.closing(run.http), harness.running(run.app, run.server):
        run.app.wait_ready()
        run.server.wait_healthy()
        run.server.api().wait_synced(["roleready-tailor-resume"])

        for index, (user, job_id) in enumerate(schedule.requests):
            if index in schedule.phase_ends:
                injections[schedule.phase_ends.index(index)]()
            run.request(user, job_id)

        assert run.unavailable == 0, f"503 with the server up {replay}{run.context()}"
        assert len(run.accepted) == PROPERTY_REQUESTS

        # Every accepted task reaches a terminal state...
        def unfinished() -> dict[str, str]:
            tasks = {task["id"]: task for owner in JOBS for task in server_tasks(run.server, owner)}
            return {task_id: task["status"] for task_id, task in tasks.items() if task["status"] not in TERMINAL}

        try:
            harness.wait_for(lambda: not unfinished(), PROPERTY_TIMEOUT_S, "every task to end", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: still {unfinished()} {replay}{run.context()}") from None

        # ... the tasks are exactly the ones the 202s named (none lost, none extra) ...
        tasks = {task["id"]: task for owner in JOBS for task in server_tasks(run.server, owner)}
        assert set(tasks) == set(run.accepted), f"tasks differ from the 202s {replay}{run.context()}"
        assert all(tasks[task_id]["owner"] == owner for task_id, owner in run.accepted.items())

        # ... and each failed one carries the reason its on_failure handler gave, also recorded by the app.
        statuses = {task_id: task["status"] for task_id, task in tasks.items()}
        failed = {task_id for task_id, status in statuses.items() if status == "failed"}
        complete = {task_id for task_id, status in statuses.items() if status == "complete"}
        assert failed | complete == set(tasks), f"unexpected statuses {statuses} {replay}"
        for task_id in failed:
            assert tasks[task_id]["error"]["message"] == worker.FAILURE_REASON, tasks[task_id]
        with contextlib.closing(sqlite3.connect(run.app_db)) as app_db:
            recorded_failures = {row[0] for row in app_db.execute("SELECT task_id FROM tailor_failures")}
            saved = {row[0] for row in app_db.execute("SELECT task_id FROM tailored_resumes")}
        assert recorded_failures == failed, f"on_failure records {recorded_failures} vs failed {failed} {replay}"
        assert complete <= saved, f"complete tasks without a saved résumé: {complete - saved} {replay}"
        for task_id in complete:
            assert tasks[task_id]["result"]["resume_id"] == task_id
        # With 36 tasks failing for good 24 % of the time each, both outcomes show (P(not) < 1e-4).
        print(f"seed {property_seed}: {len(complete)} complete, {len(failed)} failed; {run.timeline}")
        assert failed, f"no task failed, {len(complete)} complete {replay}"
        assert complete, f"no task completed, {len(failed)} failed {replay}"
