"""``GET /v1/runs`` and ``GET /v1/events``: pages, filters, errors and auth, over HTTP (in process)."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest

from stepline.protocol import signing
from stepline.server import settings as settings_
from stepline.storage import records
from tests.server import support
from tests.server.support import DAY_MS, NOW_MS, Seed

FAILED = records.RunStatus.FAILED


async def get(server: support.Server, path: str, **params: Any) -> Any:
    reply = await server.client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def walk(server: support.Server, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    while True:
        answer = await get(server, path, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(answer["data"])
        cursor = answer["cursor"]
        if cursor is None:
            return pages
        assert cursor == answer["data"][-1]["id" if path == "/v1/runs" else "internal_id"]


async def test_pagination_walks_every_run_exactly_once(server: support.Server) -> None:
    rng = random.Random(5)
    runs = await support.seed(server.runtime.store, [Seed(at=NOW_MS - rng.randrange(DAY_MS)) for _ in range(123)])

    pages = await walk(server, "/v1/runs", limit=25)

    assert [len(page) for page in pages] == [25, 25, 25, 25, 23]
    assert [run["id"] for page in pages for run in page] == support.newest_first(runs)
    exact = await get(server, "/v1/runs", limit=123)  # a full last page has no next cursor
    assert len(exact["data"]) == 123
    assert exact["cursor"] is None
    default = await get(server, "/v1/runs")
    assert len(default["data"]) == 50
    assert default["cursor"] == default["data"][-1]["id"]


async def test_a_run_summary_has_no_output_and_a_short_error(server: support.Server) -> None:
    [run] = await support.seed(server.runtime.store, [Seed(status=FAILED, function_id="shop-charge")])

    [summary] = (await get(server, "/v1/runs"))["data"]

    assert summary == {
        "id": run.id,
        "function_id": "shop-charge",
        "status": "failed",
        "event_id": run.event_id,
        "event_name": "shop/signup",
        "created_at": NOW_MS,
        "started_at": NOW_MS + 1,
        "ended_at": NOW_MS + 2,
        "step_count": 2,
        "error": {"name": "ValueError", "message": "boom"},
    }


async def test_filters(server: support.Server) -> None:
    seeds = [
        Seed(
            function_id=f"shop-fn{index % 3}",
            status=FAILED if index % 5 == 0 else records.RunStatus.RUNNING,
            at=NOW_MS + index * 1000,
        )
        for index in range(30)
    ]
    runs = await support.seed(server.runtime.store, seeds)

    def ids(pages: list[list[dict[str, Any]]]) -> list[str]:
        return [run["id"] for page in pages for run in page]

    def expected(keep: Any) -> list[str]:
        return support.newest_first([run for run in runs if keep(run)])

    assert ids(await walk(server, "/v1/runs", function_id="shop-fn2", limit=3)) == expected(
        lambda run: run.function_id == "shop-fn2"
    )
    assert ids(await walk(server, "/v1/runs", status="failed", limit=2)) == expected(lambda run: run.status is FAILED)
    assert ids(await walk(server, "/v1/runs", status="FAILED", function_id="shop-fn0")) == expected(
        lambda run: run.status is FAILED and run.function_id == "shop-fn0"
    )
    assert ids(await walk(server, "/v1/runs", event_id=runs[4].event_id)) == [runs[4].id]
    window = await walk(server, "/v1/runs", after=NOW_MS + 10_000, before=NOW_MS + 20_000, limit=4)
    assert ids(window) == expected(lambda run: NOW_MS + 10_000 <= run.created_at < NOW_MS + 20_000)
    iso_after = datetime.datetime.fromtimestamp((NOW_MS + 25_000) / 1000, datetime.UTC).isoformat()
    assert ids(await walk(server, "/v1/runs", after=iso_after)) == expected(
        lambda run: run.created_at >= NOW_MS + 25_000
    )
    naive = iso_after.removesuffix("+00:00")  # no offset: UTC
    assert ids(await walk(server, "/v1/runs", after=naive)) == expected(lambda run: run.created_at >= NOW_MS + 25_000)
    assert await get(server, "/v1/runs", status="cancelled") == {"data": [], "cursor": None}
    assert await get(server, "/v1/runs", function_id="", status="") == await get(server, "/v1/runs")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"status": "done"},
            "status must be one of queued, running, completed, failed, cancelled, skipped (got 'done')",
        ),
        ({"limit": "0"}, "limit must be a whole number from 1 to 500 (got '0')"),
        ({"limit": "501"}, "limit must be a whole number from 1 to 500 (got '501')"),
        ({"limit": "ten"}, "limit must be a whole number from 1 to 500 (got 'ten')"),
        ({"cursor": "not-a-cursor"}, "cursor 'not-a-cursor' is not a cursor"),
        ({"after": "yesterday"}, "after must be epoch milliseconds or an ISO 8601 time"),
        ({"before": "--5"}, "before must be epoch milliseconds or an ISO 8601 time"),
        ({"before": "9" * 5000}, "before must be epoch milliseconds or an ISO 8601 time"),
        ({"cursor": "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"}, "is not a cursor"),
        ({"after": "2000", "before": "1000"}, "after (2000) must be earlier than before (1000)"),
    ],
)
async def test_bad_parameters_answer_400_with_a_reason(
    server: support.Server, params: dict[str, str], message: str
) -> None:
    reply = await server.client.get("/v1/runs", params=params)

    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == 400
    assert message in body["error"]


async def test_bad_event_page_parameters_answer_400(server: support.Server) -> None:
    for params in ({"limit": "-1"}, {"cursor": "%%%"}):
        reply = await server.client.get("/v1/events", params=params)
        assert reply.status_code == 400, params
        assert reply.json()["status"] == 400


async def test_events_page_by_name(server: support.Server) -> None:
    seeds = [Seed(event_name=f"shop/e{index % 3}", at=NOW_MS + index) for index in range(20)]
    runs = await support.seed(server.runtime.store, seeds)

    pages = await walk(server, "/v1/events", limit=6)
    assert [len(page) for page in pages] == [6, 6, 6, 2]
    assert [event["internal_id"] for page in pages for event in page] == sorted(
        (run.event_id for run in runs), reverse=True
    )
    named = await walk(server, "/v1/events", name="shop/e1", limit=2)
    assert [event["data"]["n"] for page in named for event in page] == [19, 16, 13, 10, 7, 4, 1]
    first = pages[0][0]
    assert set(first) == {"internal_id", "id", "name", "data", "user", "ts", "v", "received_at"}
    assert first["id"] == first["internal_id"]


APP_CONFIG = {
    "appName": "shop",
    "url": "http://127.0.0.1:9/api/stepline",
    "functions": [
        {
            "id": f"shop-{name}",
            "name": name,
            "triggers": [{"event": "shop/signup"}],
            "steps": {"step": {"id": "step", "runtime": {"url": f"http://127.0.0.1:9/api/stepline?fnId=shop-{name}"}}},
        }
        for name in ("welcome", "score")
    ],
}


async def test_event_detail_lists_the_runs_it_started(server: support.Server) -> None:
    synced = await server.client.post("/fn/register", json=APP_CONFIG)
    assert synced.status_code == 200, synced.text
    sent = (await server.client.post("/e/dev-key", json={"name": "shop/signup", "data": {"user": 7}})).json()
    [event_id] = sent["ids"]

    detail = (await get(server, f"/v1/events/{event_id}"))["data"]

    assert detail["internal_id"] == event_id  # no id given: the public id is the internal one
    assert detail["name"] == "shop/signup"
    assert detail["data"] == {"user": 7}
    assert sorted(run["id"] for run in detail["runs"]) == sorted(sent["run_ids"])
    assert {run["function_id"] for run in detail["runs"]} == {"shop-welcome", "shop-score"}
    assert detail["duplicates"] == []
    by_event = await get(server, "/v1/runs", event_id=event_id)
    assert sorted(run["id"] for run in by_event["data"]) == sorted(sent["run_ids"])


async def test_an_event_is_found_by_its_public_id_with_its_duplicates(server: support.Server) -> None:
    await server.client.post("/fn/register", json=APP_CONFIG)
    event = {"name": "shop/signup", "id": "signup/42", "data": {}}
    first = (await server.client.post("/e/dev-key", json=event)).json()
    again = (await server.client.post("/e/dev-key", json=event)).json()
    assert again["run_ids"] == []  # the same id starts no run twice
    first_internal = (await get(server, "/v1/runs", event_id="", limit=500))["data"][0]["event_id"]

    newest = (await get(server, "/v1/events/signup/42"))["data"]

    assert newest["id"] == "signup/42"
    assert newest["runs"] == []
    assert newest["duplicates"] == [first_internal]
    oldest = (await get(server, f"/v1/events/{first_internal}"))["data"]
    assert sorted(run["id"] for run in oldest["runs"]) == sorted(first["run_ids"])
    assert oldest["duplicates"] == [newest["internal_id"]]


async def test_unknown_ids_answer_404(server: support.Server) -> None:
    for path in ("/v1/events/nope", "/v1/runs/01J00000000000000000000000", "/v1/events/a/b"):
        reply = await server.client.get(path)
        assert reply.status_code == 404, path
        assert reply.json()["status"] == 404
    assert "no event 'nope'" in (await server.client.get("/v1/events/nope")).json()["error"]


async def test_production_mode_requires_the_bearer_token(database_url: str) -> None:
    key = signing.generate_signing_key()
    settings = settings_.ServerSettings(
        dev=False, database_url=database_url, signing_key=key, event_keys=(signing.generate_event_key(),)
    )
    async with support.serve(settings) as server:
        [run] = await support.seed(server.runtime.store, [Seed()])
        paths = ["/v1/runs", "/v1/events", f"/v1/events/{run.event_id}", "/v1/runs?status=bogus"]
        for path in paths:
            reply = await server.client.get(path)
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in reply.json()["error"]
        wrong = {"Authorization": f"Bearer {signing.hash_signing_key(signing.generate_signing_key())}"}
        assert (await server.client.get("/v1/runs", headers=wrong)).status_code == 401
        for token in (signing.hash_signing_key(key), key):
            headers = {"Authorization": f"Bearer {token}"}
            reply = await server.client.get("/v1/runs", headers=headers)
            assert reply.status_code == 200
            assert [item["id"] for item in reply.json()["data"]] == [run.id]
            detail = await server.client.get(f"/v1/events/{run.event_id}", headers=headers)
            assert [item["id"] for item in detail.json()["data"]["runs"]] == [run.id]


async def test_openapi_describes_the_read_routes(server: support.Server) -> None:
    document = await get(server, "/openapi.json")

    paths = document["paths"]
    for path, codes in {
        "/v1/runs": {"200", "400", "401"},
        "/v1/events": {"200", "400", "401"},
        "/v1/events/{event_id}": {"200", "401", "404"},
    }.items():
        operation = paths[path]["get"]
        assert codes <= set(operation["responses"]), path
        for code, response in operation["responses"].items():
            assert response["description"], (path, code)
            assert response["description"] != "Successful Response", (path, code)
        assert operation["summary"]
    parameters = {param["name"] for param in paths["/v1/runs"]["get"]["parameters"]}
    assert {"function_id", "status", "event_id", "after", "before", "cursor", "limit"} <= parameters
    assert "RunSummary" in document["components"]["schemas"]
