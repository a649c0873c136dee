"""The lane (``stepline.server.lane``): the request path's routes, served before FastAPI.

What callers see must not depend on which layer serves a route: methods, sizes, errors,
credentials and the OpenAPI document. On SQLite and PostgreSQL (the ``server`` fixture).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from stepline.server import settings as settings_
from tests.engine.task_support import written
from tests.server import support
from tests.server.test_tasks_api import post_task, task_body


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/e/some-key", "POST"),
        ("PUT", "/v1/tasks", "POST, GET"),
        ("DELETE", "/v1/tasks/01J0000000000000000000000A", "GET"),
        ("GET", "/v1/tasks/01J0000000000000000000000A/progress", "POST"),
    ],
)
async def test_another_method_on_a_lane_path_is_405_naming_the_allowed_ones(
    server: support.Server, method: str, path: str, allowed: str
) -> None:
    reply = await server.client.request(method, path)

    assert reply.status_code == 405, reply.text
    assert reply.json() == {"error": "Method Not Allowed", "status": 405}
    assert reply.headers["allow"] == allowed


@pytest.mark.parametrize(
    ("method", "sent", "location"),
    [
        ("GET", "/v1/tasks/?owner=alice&limit=5", "/v1/tasks?owner=alice&limit=5"),
        ("GET", "/v1/tasks/01J0000000000000000000000A/", "/v1/tasks/01J0000000000000000000000A"),
        ("POST", "/e/some-key//", "/e/some-key"),
        ("POST", "/e/k%C3%A9y/", "/e/k%C3%A9y"),
        ("GET", "/v1/runs/", "/v1/runs"),  # a FastAPI route, for comparison
    ],
)
async def test_a_trailing_slash_is_redirected_to_the_path_without_it(
    server: support.Server, method: str, sent: str, location: str
) -> None:
    reply = await server.client.request(method, sent)

    assert reply.status_code == 307, reply.text
    assert reply.headers["location"].endswith(location)


async def test_a_task_posted_with_a_trailing_slash_is_created_once_the_redirect_is_followed(
    server: support.Server,
) -> None:
    reply = await server.client.post("/v1/tasks/", json=task_body(), follow_redirects=True)

    assert reply.status_code == 202, reply.text
    assert await written(server.runtime.store) == (1, 1, 0)  # a task and its event (no function listens)


@pytest.mark.parametrize("sent", ["/e/k%2F", "/e/k%2F/", "/v1/tasks/%2F", "/v1/tasks/abc%2F%2F"])
async def test_an_escaped_slash_at_the_end_is_not_redirected_in_a_loop(server: support.Server, sent: str) -> None:
    """``%2F`` decodes to a slash, but the address as sent has none to strip."""
    reply = await server.client.post(sent, json={"name": "shop/x"}, follow_redirects=True)

    assert reply.status_code == 404, reply.text


async def test_a_trailing_slash_on_a_path_the_lane_does_not_serve_is_still_404(server: support.Server) -> None:
    reply = await server.client.get("/v1/nothing-here/")

    assert reply.status_code == 404, reply.text


async def test_a_body_over_the_limit_is_413_and_writes_nothing(server: support.Server) -> None:
    big = task_body()
    big["event"]["data"] = {"text": "x" * (1024 * 1024)}

    reply = await post_task(server, big)

    assert reply.status_code == 413, reply.text
    assert reply.json() == {"error": "request body is larger than 1 MiB", "status": 413}
    assert await written(server.runtime.store) == (0, 0, 0)


async def test_a_body_that_is_not_json_is_422(server: support.Server) -> None:
    reply = await server.client.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})

    assert reply.status_code == 422, reply.text
    assert reply.json()["error"].startswith("invalid request: body: Invalid JSON")


async def test_head_of_a_task_answers_as_get_without_a_body(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]

    got = await server.client.get(f"/v1/tasks/{task_id}")
    head = await server.client.head(f"/v1/tasks/{task_id}")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]


async def test_other_routes_still_reach_fastapi(server: support.Server) -> None:
    task_id = (await post_task(server, task_body())).json()["id"]

    cancelled = await server.client.post(f"/v1/tasks/{task_id}/cancel")
    missing = await server.client.get("/v1/nothing-here")

    assert cancelled.status_code == 200, cancelled.text
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found", "status": 404}


async def test_the_openapi_document_describes_the_lane_routes(server: support.Server) -> None:
    document = (await server.client.get("/openapi.json")).json()

    enqueue = document["paths"]["/v1/tasks"]["post"]
    assert enqueue["summary"] == "Enqueue a task"
    assert {"202", "401", "422", "429", "503"} <= set(enqueue["responses"])
    assert enqueue["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskIn"}
    schemas = document["components"]["schemas"]
    assert {"TaskIn", "EventIn", "QuotaIn", "ProgressIn"} <= set(schemas)
    assert "owner" in schemas["TaskIn"]["properties"]
    listing = document["paths"]["/v1/tasks"]["get"]
    assert {param["name"] for param in listing["parameters"]} == {"owner", "status", "kind", "cursor", "limit"}
    assert [param["name"] for param in document["paths"]["/v1/tasks/{task_id}"]["get"]["parameters"]] == ["task_id"]
    assert document["paths"]["/e/{event_key}"]["post"]["summary"] == "Send events"
    ingest_body = document["paths"]["/e/{event_key}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one_event, many = ingest_body["oneOf"]
    assert one_event["required"] == ["name"]
    assert {"name", "data", "id", "ts", "user", "v"} == set(one_event["properties"])
    assert many["items"] == one_event
    sync_body = document["paths"]["/fn/register"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"appName", "url", "functions"} <= set(sync_body["properties"])
    json.dumps(document)  # one document, all of it JSON


async def test_lane_routes_ask_for_credentials_like_the_others(database_url: str) -> None:
    keys = ("the-event-key-of-this-test", "the-second-event-key")
    settings = settings_.ServerSettings(dev=False, database_url=database_url, signing_key="a" * 64, event_keys=keys)
    async with support.serve(settings) as server:
        refused = await server.client.post("/v1/tasks", json=task_body())
        listed = await server.client.get("/v1/tasks", headers={"Authorization": "Bearer wrong"})
        wrong_keys = [
            await server.client.post(f"/e/{key}", json={"name": "shop/x"})
            for key in ("not-the-key", keys[0][:-1], keys[0] + "x", "the-event-key-of-this-tést")
        ]
        accepted = await server.client.post(
            "/v1/tasks", json=task_body(), headers={"Authorization": "Bearer the-event-key-of-this-test"}
        )
        sent_with_either_key = [await server.client.post(f"/e/{key}", json={"name": "shop/x"}) for key in keys]

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert listed.status_code == 401
    assert [reply.status_code for reply in wrong_keys] == [401] * 4
    assert accepted.status_code == 202, accepted.text
    assert [reply.status_code for reply in sent_with_either_key] == [200, 200]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_task_body_not_sent_as_json_is_415_and_writes_nothing(
    server: support.Server, content_type: str | None
) -> None:
    """A web page can post ``text/plain`` or a form to a dev server without a preflight; a task
    body must say it is JSON."""
    headers = {} if content_type is None else {"content-type": content_type}
    content = json.dumps(task_body()).encode()

    reply = await server.client.post("/v1/tasks", content=content, headers=headers)

    assert reply.status_code == 415, reply.text
    assert "Content-Type: application/json" in reply.json()["error"]
    assert await written(server.runtime.store) == (0, 0, 0)


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(server: support.Server) -> None:
    content = json.dumps(task_body()).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.stepline+json"):
        reply = await server.client.post("/v1/tasks", content=content, headers={"content-type": content_type})
        assert reply.status_code == 202, reply.text


async def test_the_credential_is_checked_before_the_body_is_read(database_url: str) -> None:
    """A caller without the event key gets 401 before the server reads (and holds) its body."""
    settings = settings_.ServerSettings(
        dev=False, database_url=database_url, signing_key="a" * 64, event_keys=("the-event-key-of-this-test",)
    )
    read: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(50):
            read.append(1)
            yield b"x" * 65536

    async with support.serve(settings) as server:
        wrong_key = await server.client.post("/e/not-the-key", content=body())
        no_bearer = await server.client.post("/v1/tasks", content=b"{}", headers={"content-length": str(10**9)})

    assert wrong_key.status_code == 401, wrong_key.text
    assert len(read) <= 1
    assert no_bearer.status_code == 401, no_bearer.text


async def test_a_405_from_a_fastapi_route_names_the_allowed_methods_too(server: support.Server) -> None:
    reply = await server.client.get("/v1/tasks/01J0000000000000000000000A/cancel")

    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
