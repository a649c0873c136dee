"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
``stepline dev`` server process and a real app process, on SQLite and PostgreSQL.

Chromium is never downloaded (``/usr/bin/chromium``; ``.ci/run`` installs it). Locally the tests
skip when it is missing; under ``CI=true`` they fail. With ``STEPLINE_SCREENSHOTS=1`` they write
the README's screenshots to ``docs/images/``; otherwise to a temporary directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, _with_database, drop_postgres_database, make_postgres_database
from tests.e2e import harness

CHROMIUM = Path(os.environ.get("STEPLINE_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 20_000


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the browser tests to run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db')}/stepline.db"
        return
    template: str = request.getfixturevalue("postgres_template")
    name = make_postgres_database(template)
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        drop_postgres_database(name)


class Stack:
    def __init__(self, server: harness.ServerProcess, app: harness.AppProcess, directory: Path) -> None:
        self.server = server
        self.app = app
        self.api = server.api()
        self.flag = directory / "pay-works"
        self.log = directory / "executed.log"

    def executions(self, step: str) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text().split().count(step)


@pytest.fixture(scope="module")
def stack(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require_chromium()
    directory = tmp_path_factory.mktemp("browser")
    server = harness.ServerProcess(database, directory / "server.log")
    env = {
        "STEPLINE_BASE_URL": server.url,
        "STEPLINE_DEV": "1",
        "BROWSER_FLAG": str(directory / "pay-works"),
        "BROWSER_LOG": str(directory / "executed.log"),
    }
    app = harness.AppProcess("tests.ui.browser_app:app", directory / "app.log", env, serve_path="/api/stepline")
    server.spawn()
    app.spawn()
    try:
        server.wait_healthy()
        app.wait_ready()
        running = Stack(server, app, directory)
        running.api.sync(app.url)
        running.api.wait_synced(["browser-nap", "browser-charge", "browser-slow"])
        yield running
        running.api.close()
    finally:
        app.stop()
        server.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.server.url, viewport={"width": 1360, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page logged errors (a CSP violation, a script error): {errors}"


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    directory = ROOT / "docs" / "images" if os.environ.get("STEPLINE_SCREENSHOTS") == "1" else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / name), full_page=False)
    assert (directory / name).stat().st_size > 10_000


def wait_status(stack: Stack, run_id: str, status: str) -> None:
    harness.wait_for(lambda: stack.api.get_run(run_id)["status"] == status, 30, f"run {run_id} to be {status}")


def test_open_the_run_list_and_follow_a_run_to_its_timeline(page: Page, stack: Stack, tmp_path: Path) -> None:
    run_id = stack.api.start("browser/slow", {"seconds": 0.05})
    wait_status(stack, run_id, "completed")
    failing = stack.api.start("browser/charge", {"note": "<script>alert('x')</script>"})
    wait_status(stack, failing, "failed")
    p = page

    p.goto("/runs")
    row = p.locator(f"tr.run:has(a[href='/runs/{run_id}'])")
    expect(row.locator(".status")).to_have_text("completed")
    row.locator(f"a[href='/runs/{run_id}']").click()

    expect(p).to_have_url(re.compile(f"/runs/{run_id}$"))
    expect(p.locator("#run-status")).to_have_text("completed")
    expect(p.locator("table.waterfall summary")).to_have_text(["part-0", "part-1", "part-2"])
    assert p.locator("svg.bar rect.ok").count() == 3
    part_1 = p.locator("tr.step", has_text="part-1")
    part_1.locator("summary").click()
    expect(part_1.locator("pre.json")).to_have_text("2")

    p.goto(f"/runs/{failing}")
    expect(p.locator("#run-status")).to_have_text("failed")
    expect(p.locator("pre.json").last).to_contain_text("<script>alert('x')</script>")
    expect(p.locator("p.err").first).to_contain_text("<b>for maintenance</b>")
    screenshot(p, "run.png", tmp_path)


def test_cancel_a_sleeping_run(page: Page, stack: Stack) -> None:
    run_id = stack.api.start("browser/nap")
    harness.wait_for(lambda: len(stack.api.get_run(run_id)["steps"]) == 1, 30, "the run to reach its sleep")
    p = page
    p.goto(f"/runs/{run_id}")
    expect(p.locator("tr.step.pending summary")).to_have_text("long-nap")
    expect(p.locator("tr.step.pending")).to_contain_text("sleeping until")

    p.once("dialog", lambda dialog: dialog.accept())
    p.locator("#cancel-run").click()

    expect(p.locator("p.notice")).to_have_text("Run cancelled.")
    expect(p.locator("#run-status")).to_have_text("cancelled")
    assert stack.api.get_run(run_id)["status"] == "cancelled"


def test_rerun_a_failed_run_then_retry_it_from_the_failed_step(page: Page, stack: Stack) -> None:
    run_id = stack.api.start("browser/charge")
    wait_status(stack, run_id, "failed")
    p = page
    p.goto(f"/runs/{run_id}")

    fetched = stack.executions("fetch")
    p.locator("#rerun-run").click()
    expect(p.locator("p.notice")).to_have_text("Started a rerun.")
    rerun_id = p.url.rsplit("/", 1)[1].split("?")[0]
    assert rerun_id != run_id
    expect(p.locator("#run-status")).to_have_text("failed")
    assert stack.executions("fetch") == fetched + 1  # a rerun starts over

    stack.flag.touch()  # the payment API is back
    try:
        p.locator("#retry-run").click()
        expect(p.locator("p.notice")).to_have_text("Started a retry from the failed step.")
        expect(p.locator("#run-status")).to_have_text("completed")
    finally:
        stack.flag.unlink()
    expect(p.locator("#run-output")).to_contain_text("paid 42")
    assert stack.executions("fetch") == fetched + 1  # the retry kept fetch's result


def test_watch_a_run_complete_without_reloading(page: Page, stack: Stack) -> None:
    p = page
    p.goto("/runs")
    p.evaluate("window.notReloaded = true")
    run_id = stack.api.start("browser/slow", {"seconds": 1.0})

    new_row = p.locator(f"tr.run:has(a[href='/runs/{run_id}'])")
    expect(new_row).to_have_count(1)  # the list updated itself
    new_row.locator(f"a[href='/runs/{run_id}']").click()
    expect(p.locator("#run-status")).not_to_have_text("completed")
    p.evaluate("window.notReloaded = true")

    expect(p.locator("#run-status")).to_have_text("completed")
    expect(p.locator("svg.bar rect.ok")).to_have_count(3)
    assert p.evaluate("window.notReloaded") is True


def test_watch_a_task_reach_complete_without_reloading(page: Page, stack: Stack, tmp_path: Path) -> None:
    p = page
    body = {"kind": "report", "owner": "ada", "event": {"name": "browser/slow", "data": {"seconds": 1.0}}}
    reply = httpx.post(f"{stack.server.url}/v1/tasks", json=body, timeout=10)
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["id"]

    p.goto("/tasks?owner=ada")
    p.locator(f"a[href='/tasks/{task_id}']").click()
    expect(p.locator("#task-status")).not_to_have_text("complete")
    p.evaluate("window.notReloaded = true")

    expect(p.locator("#task-status")).to_have_text("complete")
    expect(p.locator("#task-progress")).to_contain_text("100%")
    expect(p.locator("#task-result")).to_have_text("6")  # 1 + 2 + 3
    assert p.evaluate("window.notReloaded") is True
    screenshot(p, "task.png", tmp_path)


def test_overview(page: Page, stack: Stack, tmp_path: Path) -> None:
    p = page
    p.goto("/")
    expect(p.locator("h1")).to_contain_text("Overview")
    started = int(p.locator("ul.tiles li b").first.inner_text())
    assert started >= 1
    assert p.locator("figure.chart polyline").count() >= 3
    screenshot(p, "overview.png", tmp_path)
    p.goto("/runs")  # by now it lists every kind of run the module made
    expect(p.locator("tr.run").first).to_be_visible()
    screenshot(p, "runs.png", tmp_path)
