"""Dashboard actions through the ASGI app: cancel, rerun, retry from the failed step, bulk, send, sync."""

from __future__ import annotations

import re
from typing import Any

from stepline.storage import records
from tests.server import support
from tests.ui.support import APP_CONFIG, act, csrf, post_form, seed_failed_run


async def sync_shop(server: support.Server) -> None:
    reply = await server.client.post("/fn/register", json=APP_CONFIG)
    assert reply.status_code == 200, reply.text


async def send(server: support.Server, data: dict[str, Any] | None = None) -> list[str]:
    reply = await server.client.post("/e/dev-key", json={"name": "shop/signup", "data": data or {}})
    assert reply.status_code == 200, reply.text
    run_ids: list[str] = reply.json()["run_ids"]
    return run_ids


async def status_of(server: support.Server, run_id: str) -> records.RunStatus:
    run = await server.runtime.store.get_run(run_id)
    assert run is not None
    return run.status


async def test_cancel_a_run_that_has_not_ended(server: support.Server) -> None:
    await sync_shop(server)
    run_id, _ = await send(server)  # the app is down: the run waits for it

    reply = await act(server.client, f"/runs/{run_id}/cancel")

    assert reply.headers["location"] == f"/runs/{run_id}?done=cancelled"
    assert await status_of(server, run_id) is records.RunStatus.CANCELLED
    html = (await server.client.get(reply.headers["location"])).text
    assert "Run cancelled." in html
    assert 'class="status cancelled"' in html
    again = await act(server.client, f"/runs/{run_id}/cancel")
    assert again.headers["location"] == f"/runs/{run_id}?done=ended"


async def test_rerun_starts_a_new_run_for_the_same_event(server: support.Server) -> None:
    await sync_shop(server)
    run_id, _ = await send(server, {"n": 1})

    reply = await act(server.client, f"/runs/{run_id}/rerun")

    new_id = re.fullmatch(r"/runs/([0-9A-Z]{26})\?done=rerun", reply.headers["location"])
    assert new_id
    assert new_id.group(1) != run_id
    original = await server.runtime.store.get_run(run_id)
    rerun = await server.runtime.store.get_run(new_id.group(1))
    assert original is not None
    assert rerun is not None
    assert rerun.function_id == original.function_id
    assert rerun.events == original.events


async def test_retry_from_the_failed_step_copies_the_successful_steps(server: support.Server) -> None:
    await sync_shop(server)
    failed = await seed_failed_run(server.runtime.store, "shop-charge")
    page = (await server.client.get(f"/runs/{failed.id}")).text
    assert f'action="/runs/{failed.id}/retry"' in page

    reply = await act(server.client, f"/runs/{failed.id}/retry")

    found = re.fullmatch(r"/runs/([0-9A-Z]{26})\?done=retried", reply.headers["location"])
    assert found
    retry_id = found.group(1)
    steps = await server.runtime.store.list_steps(retry_id)
    assert [(step.name, step.seq) for step in steps] == [("fetch", 0), ("settle", 1)]  # not the failed "charge"
    original = {step.name: step for step in await server.runtime.store.list_steps(failed.id)}
    assert steps[0].result == original["fetch"].result
    retried = await server.runtime.store.get_run(retry_id)
    assert retried is not None
    assert retried.step_count == 2
    assert retried.events == failed.events
    assert retried.status in (records.RunStatus.QUEUED, records.RunStatus.RUNNING)
    html = (await server.client.get(reply.headers["location"])).text
    assert "Started a retry from the failed step." in html
    assert re.findall(r"<summary>([^<]+)</summary>", html)[:2] == ["fetch", "settle"]
    assert html.count("result kept from the failed run this one retries") == 2


async def test_retry_of_a_run_that_did_not_fail_is_refused(server: support.Server) -> None:
    await sync_shop(server)
    run_id, _ = await send(server)
    token = await csrf(server.client)

    reply = await post_form(server.client, f"/runs/{run_id}/retry", {"csrf": token})

    assert reply.status_code == 409
    assert "only a failed run can be retried" in reply.text
    api = await server.client.post(f"/v1/runs/{run_id}/retry")
    assert api.status_code == 409
    assert api.json()["status"] == 409


async def test_retry_through_the_api(server: support.Server) -> None:
    await sync_shop(server)
    failed = await seed_failed_run(server.runtime.store, "shop-charge")

    reply = await server.client.post(f"/v1/runs/{failed.id}/retry")

    assert reply.status_code == 200, reply.text
    body = reply.json()["data"]
    assert body["retry_of"] == failed.id
    assert [step.name for step in await server.runtime.store.list_steps(body["run_id"])] == ["fetch", "settle"]
    missing = await server.client.post("/v1/runs/01J00000000000000000000000/retry")
    assert missing.status_code == 404


async def test_bulk_cancel_and_rerun_by_filter(server: support.Server) -> None:
    await sync_shop(server)
    started = [run_id for _ in range(3) for run_id in await send(server)]
    welcome = [run.id for run in await server.runtime.store.list_runs(function_id="shop-welcome")]
    assert len(welcome) == 3

    reply = await act(server.client, "/runs/bulk", action="cancel", function="shop-welcome")

    assert reply.headers["location"] == "/runs?function=shop-welcome&done=bulk&n=3"
    for run_id in started:
        expected = run_id in welcome
        assert (await status_of(server, run_id) is records.RunStatus.CANCELLED) is expected

    rerun = await act(server.client, "/runs/bulk", action="rerun", status="cancelled")
    assert rerun.headers["location"] == "/runs?status=cancelled&done=bulk&n=3"
    newest = await server.runtime.store.list_runs(function_id="shop-welcome", limit=10)
    assert len(newest) == 6
    assert {run.status for run in newest[:3]} <= {records.RunStatus.QUEUED, records.RunStatus.RUNNING}

    bad = await post_form(server.client, "/runs/bulk", {"csrf": await csrf(server.client), "action": "delete"})
    assert bad.status_code == 400


async def test_send_a_test_event(server: support.Server) -> None:
    await sync_shop(server)

    reply = await act(server.client, "/events/send", name="shop/signup", data='{"user": 42}')

    location = reply.headers["location"]
    assert location.startswith("/events/")
    html = (await server.client.get(location)).text
    assert "&#34;user&#34;: 42" in html or "&quot;user&quot;: 42" in html
    assert len(re.findall(r'<a href="/runs/([0-9A-Z]{26})"', html)) == 2

    token = await csrf(server.client)
    for form, message in [
        ({"name": "shop/signup", "data": "{nope"}, "not valid JSON"),
        ({"name": "shop/signup", "data": "[1]"}, "must be a JSON object"),
        ({"name": "", "data": "{}"}, "needs a name"),
    ]:
        bad = await post_form(server.client, "/events/send", {"csrf": token, **form})
        assert bad.status_code == 400
        assert message in bad.text


async def test_sync_an_app_that_cannot_be_reached_says_why(server: support.Server) -> None:
    token = await csrf(server.client, "/apps")

    reply = await post_form(server.client, "/apps/sync", {"csrf": token, "url": "http://127.0.0.1:9/api/stepline"})

    assert reply.status_code == 502
    assert "could not reach the app" in reply.text
    bad = await post_form(server.client, "/apps/sync", {"csrf": token, "url": "ftp://x"})
    assert bad.status_code == 400


async def test_bulk_rerun_stops_at_a_run_whose_function_is_gone(server: support.Server) -> None:
    [gone] = await support.seed(server.runtime.store, [support.Seed(function_id="shop-gone")])
    token = await csrf(server.client)

    reply = await post_form(server.client, "/runs/bulk", {"csrf": token, "action": "rerun", "function": "shop-gone"})

    assert reply.status_code == 404
    assert f"stopped at run {gone.id}" in reply.text
    assert "after 0 runs" in reply.text
