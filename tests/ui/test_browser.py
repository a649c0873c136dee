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

import pytest

from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL, _with_database, drop_postgres_database, make_postgres_database
from tests.e2e import harness

CHROMIUM = Path(os.environ.get("STEPLINE_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 20_000

playwright_sync = pytest.importorskip("playwright.sync_api")


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
def browser(stack: Stack) -> Iterator[object]:
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: object, stack: Stack) -> Iterator[object]:
    context = browser.new_context(base_url=stack.server.url, viewport={"width": 1360, "height": 860})  # type: ignore[attr-defined]
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


def screenshot(page: object, name: str, tmp_path: Path) -> None:
    directory = ROOT / "docs" / "images" if os.environ.get("STEPLINE_SCREENSHOTS") == "1" else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / name), full_page=False)  # type: ignore[attr-defined]
    assert (directory / name).stat().st_size > 10_000


def wait_status(stack: Stack, run_id: str, status: str) -> None:
    harness.wait_for(lambda: stack.api.get_run(run_id)["status"] == status, 30, f"run {run_id} to be {status}")


def test_open_the_run_list_and_follow_a_run_to_its_timeline(page: object, stack: Stack, tmp_path: Path) -> None:
    run_id = stack.api.start("browser/slow", {"seconds": 0.05})
    wait_status(stack, run_id, "completed")
    failing = stack.api.start("browser/charge", {"note": "<script>alert('x')</script>"})
    wait_status(stack, failing, "failed")
    p: object = page

    p.goto("/runs")  # type: ignore[attr-defined]
    row = p.locator(f"tr.run:has(a[href='/runs/{run_id}'])")  # type: ignore[attr-defined]
    playwright_sync.expect(row.locator(".status")).to_have_text("completed")
    row.locator(f"a[href='/runs/{run_id}']").click()

    playwright_sync.expect(p).to_have_url(re.compile(f"/runs/{run_id}$"))
    playwright_sync.expect(p.locator("#run-status")).to_have_text("completed")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("table.waterfall summary")).to_have_text(["part-0", "part-1", "part-2"])  # type: ignore[attr-defined]
    assert p.locator("svg.bar rect.ok").count() == 3  # type: ignore[attr-defined]
    part_1 = p.locator("tr.step", has_text="part-1")  # type: ignore[attr-defined]
    part_1.locator("summary").click()
    playwright_sync.expect(part_1.locator("pre.json")).to_have_text("2")

    p.goto(f"/runs/{failing}")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("#run-status")).to_have_text("failed")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("pre.json").last).to_contain_text("<script>alert('x')</script>")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("p.err").first).to_contain_text("<b>for maintenance</b>")  # type: ignore[attr-defined]
    screenshot(p, "run.png", tmp_path)


def test_cancel_a_sleeping_run(page: object, stack: Stack) -> None:
    run_id = stack.api.start("browser/nap")
    harness.wait_for(lambda: len(stack.api.get_run(run_id)["steps"]) == 1, 30, "the run to reach its sleep")
    p: object = page
    p.goto(f"/runs/{run_id}")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("tr.step.pending summary")).to_have_text("long-nap")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("tr.step.pending")).to_contain_text("sleeping until")  # type: ignore[attr-defined]

    p.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    p.locator("#cancel-run").click()  # type: ignore[attr-defined]

    playwright_sync.expect(p.locator("p.notice")).to_have_text("Run cancelled.")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("#run-status")).to_have_text("cancelled")  # type: ignore[attr-defined]
    assert stack.api.get_run(run_id)["status"] == "cancelled"


def test_rerun_a_failed_run_then_retry_it_from_the_failed_step(page: object, stack: Stack) -> None:
    run_id = stack.api.start("browser/charge")
    wait_status(stack, run_id, "failed")
    p: object = page
    p.goto(f"/runs/{run_id}")  # type: ignore[attr-defined]

    fetched = stack.executions("fetch")
    p.locator("#rerun-run").click()  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("p.notice")).to_have_text("Started a rerun.")  # type: ignore[attr-defined]
    rerun_id = p.url.rsplit("/", 1)[1].split("?")[0]  # type: ignore[attr-defined]
    assert rerun_id != run_id
    playwright_sync.expect(p.locator("#run-status")).to_have_text("failed")  # type: ignore[attr-defined]
    assert stack.executions("fetch") == fetched + 1  # a rerun starts over

    stack.flag.touch()  # the payment API is back
    try:
        p.locator("#retry-run").click()  # type: ignore[attr-defined]
        playwright_sync.expect(p.locator("p.notice")).to_have_text("Started a retry from the failed step.")  # type: ignore[attr-defined]
        playwright_sync.expect(p.locator("#run-status")).to_have_text("completed")  # type: ignore[attr-defined]
    finally:
        stack.flag.unlink()
    playwright_sync.expect(p.locator("#run-output")).to_contain_text("paid 42")  # type: ignore[attr-defined]
    assert stack.executions("fetch") == fetched + 1  # the retry kept fetch's result


def test_watch_a_run_complete_without_reloading(page: object, stack: Stack) -> None:
    p: object = page
    p.goto("/runs")  # type: ignore[attr-defined]
    p.evaluate("window.notReloaded = true")  # type: ignore[attr-defined]
    run_id = stack.api.start("browser/slow", {"seconds": 1.0})

    new_row = p.locator(f"tr.run:has(a[href='/runs/{run_id}'])")  # type: ignore[attr-defined]
    playwright_sync.expect(new_row).to_have_count(1)  # the list updated itself
    new_row.locator(f"a[href='/runs/{run_id}']").click()
    playwright_sync.expect(p.locator("#run-status")).not_to_have_text("completed")  # type: ignore[attr-defined]
    p.evaluate("window.notReloaded = true")  # type: ignore[attr-defined]

    playwright_sync.expect(p.locator("#run-status")).to_have_text("completed")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("svg.bar rect.ok")).to_have_count(3)  # type: ignore[attr-defined]
    assert p.evaluate("window.notReloaded") is True  # type: ignore[attr-defined]


def test_overview(page: object, stack: Stack, tmp_path: Path) -> None:
    p: object = page
    p.goto("/")  # type: ignore[attr-defined]
    playwright_sync.expect(p.locator("h1")).to_contain_text("Overview")  # type: ignore[attr-defined]
    started = int(p.locator("ul.tiles li b").first.inner_text())  # type: ignore[attr-defined]
    assert started >= 1
    assert p.locator("figure.chart polyline").count() >= 3  # type: ignore[attr-defined]
    screenshot(p, "overview.png", tmp_path)
    p.goto("/runs")  # type: ignore[attr-defined]  # by now it lists every kind of run the module made
    playwright_sync.expect(p.locator("tr.run").first).to_be_visible()  # type: ignore[attr-defined]
    screenshot(p, "runs.png", tmp_path)
