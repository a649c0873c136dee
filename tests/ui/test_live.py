"""Live updates over server-sent events, read from a real server (uvicorn on a port) as a browser would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from stepline.server import settings as settings_
from stepline.server.dashboard import live
from tests.server import support
from tests.ui.support import APP_CONFIG, seed_failed_run

TIMEOUT = 20.0


async def messages(reply: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of an SSE stream."""
    event, data = "", []
    async for line in reply.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and event:
            yield event, "\n".join(data)
            event, data = "", []


async def next_message(stream: AsyncIterator[tuple[str, str]], want: str, contains: str = "") -> str:
    async def find() -> str:
        async for event, data in stream:
            if event == want and contains in data:
                return data
        raise AssertionError(f"the stream ended before a {want!r} message containing {contains!r}")

    return await asyncio.wait_for(find(), TIMEOUT)


def test_sse_messages_prefix_every_line() -> None:
    assert live.message("rows", "<tr>\n<td>x</td>") == b"event: rows\ndata: <tr>\ndata: <td>x</td>\n\n"


async def test_a_finished_run_streams_once_and_ends(server: support.Server) -> None:
    run = await seed_failed_run(server.runtime.store)

    reply = await server.client.get(f"/live/runs/{run.id}")

    assert reply.headers["content-type"].startswith("text/event-stream")
    assert "event: run\n" in reply.text
    assert "event: end\ndata: failed\n" in reply.text
    assert "<script>alert" not in reply.text
    missing = await server.client.get("/live/runs/01J00000000000000000000000")
    assert missing.status_code == 404


async def test_run_page_stream_follows_a_run_until_it_is_cancelled(database_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    with support.serve_on_port(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            assert (await client.post("/fn/register", json=APP_CONFIG)).status_code == 200
            run_id = (await client.post("/e/k", json={"name": "shop/signup"})).json()["run_ids"][0]
            async with client.stream("GET", f"/live/runs/{run_id}") as reply:
                stream = messages(reply)
                first = await next_message(stream, "run")
                assert 'id="cancel-run"' in first  # not ended yet
                assert (await client.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
                await next_message(stream, "run", 'class="status cancelled"')
                assert await next_message(stream, "end") == "cancelled"


async def test_runs_list_stream_shows_new_runs(database_url: str) -> None:
    settings = settings_.ServerSettings(dev=True, database_url=database_url)
    with support.serve_on_port(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            assert (await client.post("/fn/register", json=APP_CONFIG)).status_code == 200
            async with client.stream("GET", "/live/runs?function=shop-charge") as reply:
                stream = messages(reply)
                assert "No runs match." in await next_message(stream, "rows")
                run_ids = (await client.post("/e/k", json={"name": "shop/signup"})).json()["run_ids"]
                charge = [
                    run_id
                    for run_id in run_ids
                    if (await client.get(f"/v1/runs/{run_id}")).json()["data"]["function_id"] == "shop-charge"
                ]
                rows = await next_message(stream, "rows", charge[0])
                assert "shop-welcome" not in rows  # the filter holds
