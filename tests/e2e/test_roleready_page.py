"""The RoleReady page (``examples/roleready/static/index.html``) in a real browser: Debian's
Chromium driven by Playwright, against a real ``stepline dev`` server process and the real app
on uvicorn, on SQLite and PostgreSQL.

A user picks a job and clicks "Tailor my résumé": the page shows the task's id and follows its
stream through ``running`` to ``complete``. When the app is SIGKILLed mid-task and started again
on the same port, the page says it is reconnecting, then resumes the stream after the last frame
it showed (``Last-Event-ID``) and reaches ``complete`` without a reload or a click. Over quota,
the click shows the 429 and its reason.

One server per backend serves the module; each test starts its own app (its settings, its
database file) and syncs it, and uses its own user, since quotas are counted by the server.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect

from tests.e2e import harness
from tests.e2e.test_roleready import JOBS, TOKENS, bearer, roleready_process
from tests.ui import test_browser

WAIT_MS = 30_000
TASK_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
"""A task id as the page shows it (a ULID)."""
browser = test_browser.browser
"""The module's Chromium (never downloaded); launched after ``stack``, which checks it is installed."""

RECORD_STATUSES = """() => {
  window.seen = [];
  window.notReloaded = true;
  const status = document.getElementById("status");
  const progress = document.getElementById("progress");
  new MutationObserver(() => window.seen.push({ status: status.textContent, progress: progress.value }))
    .observe(status, { childList: true, characterData: true, subtree: true });
}"""
"""Records (status, progress) each time the page writes ``#status``: what the user saw, in order."""


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.ServerProcess]:
    """``stepline dev`` on the backend's database, shared by the module's tests."""
    test_browser._require_chromium()
    server = harness.ServerProcess(module_database_url, tmp_path_factory.mktemp("roleready-page") / "server.log")
    with harness.running(server):
        server.start()
        yield server


@contextlib.contextmanager
def roleready(server: harness.ServerProcess, directory: Path, **settings: str) -> Iterator[harness.AppProcess]:
    """The app (a model that never fails, and ``settings``), running and synced to ``server``."""
    app = roleready_process(server, directory, ROLEREADY_MODEL_FAILURE_RATE="0", **settings)
    api = server.api()
    with harness.running(app), contextlib.closing(api.http):
        app.start()
        api.sync(app.url)
        api.wait_synced(["roleready-tailor-resume"])
        yield app


class Visit:
    """The page of ``app`` open in a fresh browser context, and what the browser reported."""

    def __init__(self, page: Page, app: harness.AppProcess) -> None:
        self.page = page
        self.app = app
        self.console: list[str] = []
        self.errors: list[str] = []
        self.streams: list[tuple[int, str | None]] = []
        """(HTTP status, Last-Event-ID sent) of every answered request for the task stream."""
        self.refused: list[str] = []
        """Requests answered 4xx or 5xx, but for the favicon the app does not have."""
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def _response(self, response: Response) -> None:
        if response.url.endswith("/stream"):
            self.streams.append((response.status, response.request.headers.get("last-event-id")))
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.refused.append(f"{response.request.method} {response.url}: {response.status}")

    def context(self) -> str:
        """For failure messages."""
        shown = f"\nconsole: {self.console}\nrefused: {self.refused}\npage errors: {self.errors}"
        return f"{shown}\nstreams: {self.streams}\napp log:\n{self.app.logs()[-2000:]}"

    def script_errors(self) -> list[str]:
        """Errors the console shows (a CSP violation, a script error), but failed requests'."""
        return [line for line in self.console if line.startswith("error:") and "Failed to load resource" not in line]

    def open_as(self, user: str) -> Page:
        """The page as ``user``, with their jobs in the picker, recording what ``#status`` shows."""
        p = self.page
        p.goto("/")
        # The first user's jobs first: the page does not order the replies of two loads in flight.
        expect(p.locator("#job option").first).to_have_attribute("value", JOBS["alice"][0])
        p.locator("#user").select_option(TOKENS[user])
        expect(p.locator("#job option")).to_have_count(len(JOBS[user]))
        expect(p.locator("#job option").first).to_have_attribute("value", JOBS[user][0])
        p.evaluate(RECORD_STATUSES)
        return p

    def seen(self) -> list[dict[str, Any]]:
        changes: list[dict[str, Any]] = self.page.evaluate("window.seen")
        return changes

    def statuses(self) -> list[str]:
        """The statuses shown, in order, each run of repeats once."""
        shown: list[str] = []
        for change in self.seen():
            if not shown or shown[-1] != change["status"]:
                shown.append(change["status"])
        return shown


@contextlib.contextmanager
def visit(browser: Browser, app: harness.AppProcess) -> Iterator[Visit]:
    context = browser.new_context(base_url=root(app))
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    visiting = Visit(page, app)
    try:
        yield visiting
    finally:
        context.close()
    assert not visiting.errors, f"uncaught errors in the page{visiting.context()}"


def root(app: harness.AppProcess) -> str:
    return f"http://{harness.HOST}:{app.port}"


def server_task(server: harness.ServerProcess, task_id: str) -> dict[str, Any]:
    """The task as the server's own API has it."""
    reply = httpx.get(f"{server.url}/v1/tasks/{task_id}", timeout=10)
    assert reply.status_code == 200, f"the server does not know task {task_id}: {reply.status_code} {reply.text}"
    task: dict[str, Any] = reply.json()
    return task


def test_pick_a_job_and_follow_the_task_to_complete(
    browser: Browser, stack: harness.ServerProcess, tmp_path: Path
) -> None:
    with roleready(stack, tmp_path, ROLEREADY_MODEL_LATENCY_MS="1500") as app, visit(browser, app) as seen:
        p = seen.open_as("alice")
        p.locator("#job").select_option("job-a2")
        p.get_by_role("button", name="Tailor my résumé").click()

        expect(p.locator("#task")).to_have_text(TASK_ID)
        task_id = p.locator("#task").inner_text()
        expect(p.locator("#status")).to_have_text("running", timeout=WAIT_MS)
        expect(p.locator("#result")).to_be_hidden()
        expect(p.locator("#status")).to_have_text("complete", timeout=WAIT_MS)
        expect(p.locator("#status")).to_have_class("complete")
        expect(p.locator("#result")).to_be_visible()

        assert seen.statuses() == ["pending", "running", "complete"], seen.seen()
        running = [change["progress"] for change in seen.seen() if change["status"] == "running"]
        assert any(0 < value < 1 for value in running), f"no progress shown while running: {seen.seen()}"
        assert p.locator("#progress").evaluate("bar => bar.value") == 1
        result = json.loads(p.locator("#result").inner_text())
        assert result["job_id"] == "job-a2", result
        assert result["resume_id"] == task_id, result
        assert result["headline"] == "Data Engineer candidate for Globex", result

        # The id shown is a task the server knows, alice's, ended as the page says.
        task = server_task(stack, task_id)
        assert task["owner"] == "alice", task
        assert task["kind"] == "tailor_resume", task
        assert task["status"] == "complete", task
        assert task["result"] == result, task
        mine = httpx.get(f"{root(app)}/api/ai-jobs/{task_id}", headers=bearer("alice"), timeout=10)
        assert mine.status_code == 200, mine.text
        assert mine.json()["version"] == task["version"]
        assert [status for status, _ in seen.streams] == [200], seen.streams  # one stream, no reconnection
        assert not seen.refused, seen.context()
        assert not seen.script_errors(), seen.context()


def test_the_page_reconnects_after_the_app_restarts_and_reaches_complete(
    browser: Browser, stack: harness.ServerProcess, tmp_path: Path
) -> None:
    with roleready(stack, tmp_path, ROLEREADY_MODEL_LATENCY_MS="6000") as app, visit(browser, app) as seen:
        p = seen.open_as("bob")
        p.locator("#start").click()
        expect(p.locator("#task")).to_have_text(TASK_ID)
        task_id = p.locator("#task").inner_text()
        expect(p.locator("#status")).to_have_text("running", timeout=WAIT_MS)
        expect(p.locator("#message")).to_have_text("asking the model", timeout=WAIT_MS)  # the 6 s call is under way
        shown = server_task(stack, task_id)["version"]  # nothing changes the task until the model answers

        port = app.port
        app.kill()
        expect(p.locator("#message"), f"no reconnecting notice{seen.context()}").to_contain_text("reconnecting")
        expect(p.locator("#status")).to_have_text("running")  # still the last state it saw
        assert not app.running
        app.start()  # the same command, so the same port
        assert app.port == port

        recovered = expect(p.locator("#status"), f"the page did not recover{seen.context()}")
        recovered.to_have_text("complete", timeout=WAIT_MS)
        expect(p.locator("#result")).to_be_visible()
        expect(p.locator("#message")).not_to_contain_text("reconnecting")
        assert p.evaluate("window.notReloaded") is True, "the page reloaded"
        assert p.locator("#task").inner_text() == task_id

        assert seen.statuses() == ["pending", "running", "complete"], seen.seen()
        assert json.loads(p.locator("#result").inner_text())["resume_id"] == task_id
        assert server_task(stack, task_id)["status"] == "complete"
        # The first stream sent no Last-Event-ID. The app refused connections while it was down (no
        # answer to record); the first stream it answered after its restart resumed after the
        # version the page showed last, and read the task to its end.
        assert seen.streams == [(200, None), (200, str(shown))], f"streams (status, Last-Event-ID): {seen.streams}"


def test_over_quota_the_click_shows_the_429_and_why(
    browser: Browser, stack: harness.ServerProcess, tmp_path: Path
) -> None:
    with (
        roleready(stack, tmp_path, ROLEREADY_MODEL_LATENCY_MS="100", ROLEREADY_DAILY_LIMIT="1") as app,
        visit(browser, app) as seen,
    ):
        p = seen.open_as("carol")
        p.locator("#start").click()
        expect(p.locator("#status")).to_have_text("complete", timeout=WAIT_MS)
        first = p.locator("#task").inner_text()

        p.locator("#start").click()
        expect(p.locator("#status")).to_have_text("HTTP 429")
        expect(p.locator("#message")).to_contain_text("you have used your 1 tailorings for today")
        expect(p.locator("#task")).to_have_text("\N{EN DASH}")  # no task
        expect(p.locator("#result")).to_be_hidden()
        p.wait_for_timeout(1000)  # and stays: the first task ended, so no stream is left to overwrite it
        expect(p.locator("#status")).to_have_text("HTTP 429")

        assert seen.refused == [f"POST {root(app)}/api/resumes/tailor: 429"], seen.context()
        owned = httpx.get(f"{stack.url}/v1/tasks", params={"owner": "carol"}, timeout=10).json()["data"]
        assert [task["id"] for task in owned] == [first], owned  # the refused click wrote no task
