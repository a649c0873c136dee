"""Every dashboard page renders what the database holds, escapes it, and sends strict headers."""

from __future__ import annotations

import re

from stepline.storage import records
from tests.server import support
from tests.server.support import NOW_MS, Seed
from tests.ui.support import APP_CONFIG, HOSTILE, assert_escaped, seed_failed_run


async def page(server: support.Server, path: str, status: int = 200) -> str:
    reply = await server.client.get(path)
    assert reply.status_code == status, reply.text[:2000]
    assert reply.headers["content-type"].startswith("text/html")
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    return reply.text


async def test_runs_list_shows_newest_first_with_filters_and_pages(server: support.Server) -> None:
    seeds = [Seed(function_id=f"shop-fn{i % 2}", at=NOW_MS + i * 1000) for i in range(60)]
    seeds.append(Seed(function_id="shop-fn0", status=records.RunStatus.FAILED, at=NOW_MS + 70_000))
    runs = await support.seed(server.runtime.store, seeds)

    html = await page(server, "/runs")
    ids = re.findall(r'<a href="/runs/([0-9A-Z]{26})"', html)
    assert ids == support.newest_first(runs)[:50]
    older = re.search(r'href="/runs\?(cursor=[0-9A-Z]{26})" rel="next"', html)
    assert older
    second = await page(server, f"/runs?{older.group(1)}")
    assert re.findall(r'<a href="/runs/([0-9A-Z]{26})"', second) == support.newest_first(runs)[50:]
    assert 'data-live="/live/runs?' in html
    assert "data-live" not in second.split("<tbody")[1].split(">")[0]  # older pages do not move

    failed = await page(server, "/runs?status=failed&function=shop-fn0")
    assert re.findall(r'<a href="/runs/([0-9A-Z]{26})"', failed) == [runs[-1].id]
    assert "ValueError: boom" in failed


async def test_bad_filters_answer_400_pages_that_say_why(server: support.Server) -> None:
    assert "status must be one of" in await page(server, "/runs?status=sleepy", 400)
    assert "is not a cursor" in await page(server, "/runs?cursor=nope", 400)
    assert "after" in await page(server, "/runs?after=yesterday", 400)
    assert "no run" in await page(server, "/runs/01J00000000000000000000000", 404)
    assert "no event" in await page(server, "/events/nothing-here", 404)
    assert "no function" in await page(server, "/functions/shop-nothing", 404)


async def test_run_page_shows_the_waterfall_outputs_errors_and_stack_escaped(server: support.Server) -> None:
    run = await seed_failed_run(server.runtime.store)

    html = await page(server, f"/runs/{run.id}")

    assert_escaped(html)
    names = re.findall(r"<summary>([^<]+)</summary>", html)
    assert names == ["fetch", "settle", "charge"]
    assert 'class="status failed"' in html
    bars = re.findall(r'<rect x="([0-9.]+)" y="1" width="([0-9.]+)" height="8" class="(\w+)">', html)
    assert [state for _, _, state in bars] == ["ok", "ok", "error"]
    lefts = [float(x) for x, _, _ in bars]
    assert lefts == sorted(lefts)
    assert lefts[0] < 1
    assert lefts[2] > 90  # the sleep takes most of the span
    assert "PaymentError" in html
    assert "Traceback" in html
    assert "&#34;rows&#34;" in html or "&quot;rows&quot;" in html  # the output, as escaped JSON text
    assert 'action="/runs/' + run.id + '/retry"' in html  # failed: retry offered
    assert 'action="/runs/' + run.id + '/cancel"' not in html  # ended: no cancel
    assert f'href="/events/{run.event_id}"' in html
    assert "data-live" not in html  # a finished run does not stream


async def test_hostile_event_data_is_escaped_on_every_page(server: support.Server) -> None:
    synced = await server.client.post("/fn/register", json=APP_CONFIG)
    assert synced.status_code == 200, synced.text
    sent = await server.client.post(
        "/e/dev-key", json={"name": "shop/signup", "id": HOSTILE, "data": {"comment": HOSTILE, HOSTILE: 1}}
    )
    assert sent.status_code == 200, sent.text
    [run_id, _] = sent.json()["run_ids"]
    event = (await server.client.get(f"/v1/events/{sent.json()['ids'][0]}")).json()["data"]

    assert_escaped(await page(server, "/runs"), shown=False)  # the list shows no event data
    for path in (f"/runs/{run_id}", "/events", f"/events/{event['internal_id']}"):
        assert_escaped(await page(server, path))


async def test_events_functions_apps_and_overview(server: support.Server) -> None:
    synced = await server.client.post("/fn/register", json={**APP_CONFIG, "sdk": "stepline:v0.1.0"})
    assert synced.status_code == 200, synced.text
    sent = (await server.client.post("/e/dev-key", json={"name": "shop/signup", "data": {"user": 7}})).json()

    events = await page(server, "/events")
    assert "shop/signup" in events
    detail = await page(server, f"/events/{sent['ids'][0]}")
    assert "&#34;user&#34;: 7" in detail or "&quot;user&quot;: 7" in detail
    assert set(re.findall(r'<a href="/runs/([0-9A-Z]{26})"', detail)) == set(sent["run_ids"])

    functions = await page(server, "/functions")
    assert "shop-welcome" in functions
    assert "event shop/signup" in functions
    function = await page(server, "/functions/shop-charge")
    assert "http://127.0.0.1:9/api/stepline" in function
    counts = dict(re.findall(r'<li><span class="status \w+">(\w+)</span> (\d+)</li>', function))
    assert counts.keys() == {status.value for status in records.RunStatus}
    assert int(counts["queued"]) + int(counts["running"]) == 1  # the app is down: its call is being retried
    assert "Retries</dt><dd>2" in function

    apps = await page(server, "/apps")
    assert "stepline:v0.1.0" in apps
    assert "http://127.0.0.1:9/api/stepline" in apps

    overview = await page(server, "/")
    assert re.search(r"<b>2</b> runs started", overview)
    assert "<polyline" in overview


async def test_static_files_are_served(server: support.Server) -> None:
    script = await server.client.get("/static/app.js")
    assert script.status_code == 200
    assert "EventSource" in script.text
    style = await server.client.get("/static/style.css")
    assert style.status_code == 200
    assert "svg.bar" in style.text
