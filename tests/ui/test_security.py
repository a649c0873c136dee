"""Who may see the dashboard and use /v1, and how actions are protected from other sites."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from stepline import errors
from stepline.protocol import signing
from stepline.server import settings as settings_
from tests.server import support
from tests.ui.support import ORIGIN, csrf, post_form

TOKEN = "dash-" + "t0k3n" * 6
SIGNING_KEY = "signkey-prod-" + "5eed" * 16


@pytest.fixture
async def exposed(database_url: str) -> AsyncIterator[support.Server]:
    """A dev server bound to every interface, without a dashboard token."""
    settings = settings_.ServerSettings(dev=True, database_url=database_url, host="0.0.0.0")
    async with support.serve(settings) as running:
        yield running


@pytest.fixture
async def guarded(database_url: str) -> AsyncIterator[support.Server]:
    """A production server bound to every interface, with a dashboard token."""
    settings = settings_.ServerSettings(
        dev=False,
        database_url=database_url,
        host="0.0.0.0",
        signing_key=SIGNING_KEY,
        event_keys=("an-event-key-for-tests",),
        dashboard_token=TOKEN,
    )
    async with support.serve(settings) as running:
        yield running


async def test_a_non_local_bind_without_token_refuses_the_dashboard(exposed: support.Server) -> None:
    for path in ("/", "/runs", "/events", "/functions", "/apps", "/live/runs"):
        reply = await exposed.client.get(path)
        assert reply.status_code == 403, path
        assert "--dashboard-token" in reply.text
        assert "ssh -L 8288:127.0.0.1:8288" in reply.text
    action = await exposed.client.post("/runs/bulk", data={"action": "cancel"}, headers={"Origin": ORIGIN})
    assert action.status_code == 403


async def test_a_non_local_bind_without_token_refuses_credential_less_v1(exposed: support.Server) -> None:
    for method, path in [("GET", "/v1/runs"), ("GET", "/v1/apps"), ("POST", "/v1/runs/x/cancel"), ("GET", "/metrics")]:
        reply = await exposed.client.request(method, path)
        assert reply.status_code == 401, path
        assert reply.json()["status"] == 401
        assert "--dashboard-token" in reply.json()["error"]
    wrong = await exposed.client.get("/v1/runs", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401  # a credential is checked, not just present
    ingest = await exposed.client.post("/e/any-key", json={"name": "shop/ping"})
    assert ingest.status_code == 200  # apps still send events with their key
    assert (await exposed.client.get("/health")).status_code == 200


async def test_login_sets_a_strict_http_only_cookie(guarded: support.Server) -> None:
    client = guarded.client
    first = await client.get("/runs?status=failed")
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=/runs%3Fstatus%3Dfailed"
    token = await csrf(client, "/login")

    wrong = await post_form(client, "/login", {"csrf": token, "token": "not-it", "next": "/runs"})
    assert wrong.status_code == 401
    assert "not the dashboard token" in wrong.text
    assert "stepline_session" not in client.cookies

    right = await post_form(client, "/login", {"csrf": token, "token": TOKEN, "next": "/runs?status=failed"})
    assert right.status_code == 303
    assert right.headers["location"] == "/runs?status=failed"
    cookie = right.headers["set-cookie"]
    assert "stepline_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert (await client.get("/runs")).status_code == 200

    out = await post_form(client, "/logout", {"csrf": token})
    assert out.status_code == 303
    assert (await client.get("/runs")).status_code == 303


async def test_login_never_redirects_off_site(guarded: support.Server) -> None:
    token = await csrf(guarded.client, "/login")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        reply = await post_form(guarded.client, "/login", {"csrf": token, "token": TOKEN, "next": target})
        assert reply.headers["location"] == "/", target


async def test_the_token_as_bearer_opens_pages_v1_and_metrics(guarded: support.Server) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await guarded.client.get("/runs", headers=bearer)).status_code == 200
    assert (await guarded.client.get("/v1/runs", headers=bearer)).status_code == 200
    assert (await guarded.client.get("/metrics", headers=bearer)).status_code == 200
    assert (await guarded.client.get("/v1/runs")).status_code == 401
    assert (await guarded.client.get("/metrics")).status_code == 401
    signed = {"Authorization": f"Bearer {signing.hash_signing_key(SIGNING_KEY)}"}
    assert (await guarded.client.get("/v1/runs", headers=signed)).status_code == 200  # apps keep their key
    assert (await guarded.client.get("/runs", headers=signed)).status_code == 303  # but it is not a dashboard login
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    assert (await guarded.client.get("/runs", headers=wrong)).status_code == 303


async def test_actions_refuse_cross_site_requests(server: support.Server) -> None:
    client = server.client
    token = await csrf(client)
    path = "/runs/bulk"
    form = {"csrf": token, "action": "cancel"}

    missing = await post_form(client, path, {"action": "cancel"})
    assert missing.status_code == 403
    assert "CSRF token" in missing.text
    stale = await post_form(client, path, {**form, "csrf": "x" * 43})
    assert stale.status_code == 403
    other_site = await post_form(client, path, form, origin="https://evil.example")
    assert other_site.status_code == 403
    assert "another host" in other_site.text
    no_origin = await post_form(client, path, form, origin=None)
    assert no_origin.status_code == 403
    by_referer = await client.post(path, data=form, headers={"Referer": f"{ORIGIN}/runs"})
    assert by_referer.status_code == 303
    assert (await client.get("/runs/01J00000000000000000000000/cancel")).status_code == 405  # POST only


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8288", "192.168.1.20:8288", "localhost.evil.example"])
async def test_a_loopback_server_refuses_requests_addressed_to_another_name(server: support.Server, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 reaches the
    server with its own name as Host, and would pass every same-origin check."""
    for method, path in [("GET", "/runs"), ("GET", "/v1/runs"), ("POST", "/e/any-key"), ("GET", "/metrics")]:
        reply = await server.client.request(method, path, headers={"Host": host}, json={"name": "x/y"})
        assert reply.status_code == 403, (method, path)
        assert "addressed to this machine" in reply.json()["error"]


@pytest.mark.parametrize("host", ["localhost:8288", "127.0.0.1:8288", "127.0.0.2", "[::1]:8288", "app.localhost"])
async def test_a_loopback_server_answers_its_loopback_names(server: support.Server, host: str) -> None:
    reply = await server.client.get("/v1/runs", headers={"Host": host})
    assert reply.status_code == 200, reply.text


async def test_a_server_on_every_interface_answers_any_host(guarded: support.Server) -> None:
    reply = await guarded.client.get("/health", headers={"Host": "stepline.example.com"})
    assert reply.status_code == 200


async def test_pages_are_open_on_loopback_without_a_token(server: support.Server) -> None:
    assert (await server.client.get("/runs")).status_code == 200
    assert (await server.client.get("/login", follow_redirects=False)).status_code == 303


def test_a_short_token_is_refused() -> None:
    with pytest.raises(errors.ConfigurationError, match="at least 16 characters"):
        settings_.ServerSettings(dev=True, database_url="sqlite:///x.db", dashboard_token="short")


def test_refusal_depends_on_the_bind_and_the_token() -> None:
    base = settings_.ServerSettings(dev=True, database_url="sqlite:///x.db")
    assert not base.dashboard_refused
    assert dataclasses.replace(base, host="0.0.0.0").dashboard_refused
    assert not dataclasses.replace(base, host="0.0.0.0", dashboard_token=TOKEN).dashboard_refused
    assert not dataclasses.replace(base, host="::1").dashboard_refused
