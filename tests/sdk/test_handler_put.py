"""The serve handler's PUT: out-of-band sync against a real local server, and in-band sync."""

from __future__ import annotations

import pytest

from stepline.protocol import signing
from stepline.sdk import settings

from . import fakeserver
from .serving import APP_ID, FALLBACK, KEY, URL, assert_signed_by, body_of, build, production, request, serve

# --- PUT -----------------------------------------------------------------------------------


async def test_out_of_band_sync_registers_with_the_server() -> None:
    with fakeserver.running() as fake:
        served = production(base_url=fake.base_url)
        response = await served.handle(
            request("PUT", "?deployId=d-1&fnId=ignored", headers={"X-Inngest-Server-Kind": "cloud"})
        )
    assert response.status == 200
    assert body_of(response) == {"ok": True}
    assert response.headers["X-Inngest-Sync-Kind"] == "out_of_band"
    [call] = fake.calls_to("/fn/register")
    assert call.query == {"deployId": "d-1"}
    assert call.headers["authorization"] == f"Bearer {signing.hash_signing_key(KEY)}"
    assert call.headers["x-inngest-expected-server-kind"] == "cloud"
    assert call.headers["x-inngest-sdk"] == settings.SDK
    assert call.body["appname"] == APP_ID
    assert call.body["url"] == URL
    assert call.body["framework"] == "test"
    assert call.body["sdk"] == settings.SDK
    assert call.body["v"] == "0.1"
    assert call.body["deploy_type"] == "ping"
    assert call.body["capabilities"] == {"in_band_sync": "v1", "trust_probe": "v1"}
    _, functions = build(signing_key=KEY)
    expected = [each.to_config(URL) for fn in functions for each in fn.with_failure_handlers()]
    assert call.body["functions"] == expected
    assert [config["id"] for config in expected] == [
        f"{APP_ID}-greet",
        f"{APP_ID}-greet-failure",
        f"{APP_ID}-greet-sync",
    ]


def test_sync_handler_registers_too_and_relays_the_servers_refusal() -> None:
    with fakeserver.running() as fake:
        fake.answer("register", 400, {"error": "bad config", "status": 400})
        response = serve(is_dev=True, base_url=fake.base_url).handle_sync(request("PUT"))
    assert response.status == 400
    assert body_of(response) == {"error": "bad config", "status": 400}
    [call] = fake.calls_to("/fn/register")
    assert "authorization" not in call.headers
    assert "x-inngest-expected-server-kind" not in call.headers


async def test_out_of_band_sync_retries_with_the_fallback_key_once() -> None:
    with fakeserver.running() as fake:
        fake.answer("register", 401, {"error": "unknown key", "status": 401})
        fake.answer("register", 401, {"error": "unknown key", "status": 401})
        served = production(signing_key_fallback=FALLBACK, base_url=fake.base_url)
        response = await served.handle(request("PUT"))
    assert response.status == 401
    assert [call.headers["authorization"] for call in fake.calls_to("/fn/register")] == [
        f"Bearer {signing.hash_signing_key(KEY)}",
        f"Bearer {signing.hash_signing_key(FALLBACK)}",
    ]


async def test_serve_origin_overrides_the_advertised_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_SERVE_ORIGIN", "https://app.example.com")
    with fakeserver.running() as fake:
        await serve(is_dev=True, base_url=fake.base_url).handle(request("PUT", "?deployId=x"))
    [call] = fake.calls_to("/fn/register")
    assert call.body["url"] == "https://app.example.com/api/stepline"
    assert call.body["functions"][0]["steps"]["step"]["runtime"]["url"] == (
        f"https://app.example.com/api/stepline?fnId={APP_ID}-greet&stepId=step"
    )


async def test_unreachable_server_is_a_500_naming_it() -> None:
    base_url = fakeserver.free_port_url()
    response = await serve(is_dev=True, base_url=base_url).handle(request("PUT"))
    assert response.status == 500
    assert base_url in body_of(response)["error"]


async def test_sync_from_the_wrong_server_kind_is_refused() -> None:
    response = await production().handle(request("PUT", headers={"X-Inngest-Server-Kind": "dev"}))
    assert response.status == 400
    assert body_of(response)["code"] == "server_kind_mismatch"


async def test_in_band_sync_answers_with_the_configuration() -> None:
    served = production()
    response = await served.handle(
        request(
            "PUT",
            body={"url": "https://public.example.com/api/stepline?x=1"},
            key=KEY,
            headers={"X-Inngest-Sync-Kind": "in_band"},
        )
    )
    assert response.status == 200
    assert response.headers["X-Inngest-Sync-Kind"] == "in_band"
    body = body_of(response)
    url = "https://public.example.com/api/stepline"
    assert body["url"] == url
    assert body["app_id"] == APP_ID
    assert body["sdk_language"] == "stepline-py"
    assert body["sdk_version"] == settings.VERSION
    assert [config["id"] for config in body["functions"]] == [
        f"{APP_ID}-greet",
        f"{APP_ID}-greet-failure",
        f"{APP_ID}-greet-sync",
    ]
    assert body["functions"][0]["steps"]["step"]["runtime"]["url"].startswith(url + "?fnId=")
    assert body["inspection"]["authentication_succeeded"] is True
    assert None not in body["inspection"].values()
    assert_signed_by(response, KEY)


async def test_unsigned_in_band_sync_is_refused() -> None:
    response = await production().handle(request("PUT", body={"url": URL}, headers={"X-Inngest-Sync-Kind": "in_band"}))
    assert response.status == 401


async def test_in_band_request_in_dev_mode_syncs_out_of_band() -> None:
    with fakeserver.running() as fake:
        served = serve(is_dev=True, base_url=fake.base_url)
        response = await served.handle(request("PUT", body={"url": URL}, headers={"X-Inngest-Sync-Kind": "in_band"}))
    assert response.headers["X-Inngest-Sync-Kind"] == "out_of_band"
    assert len(fake.calls_to("/fn/register")) == 1
