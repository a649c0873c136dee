"""``client.send`` over HTTP to a server's event API, against a real local server."""

from __future__ import annotations

import base64
from typing import Any

import pytest

import stepline
from stepline.sdk import http_sender, settings

from . import fakeserver


def _fast(client: stepline.Stepline) -> stepline.Stepline:
    """Shorter backoff, so retry tests do not wait long."""
    client.attach_sender(http_sender.HttpEventSender(client.settings, base_delay_s=0.01))
    return client


def _seed_is_well_formed(seed: str) -> None:
    millis, entropy = seed.split(",")
    assert millis.isdigit()
    assert len(base64.b64decode(entropy)) == 10


async def test_send_posts_the_events_with_a_seed_and_returns_the_ids() -> None:
    with fakeserver.running() as fake:
        client = stepline.Stepline(app_id="sender", base_url=fake.base_url, event_key="ev-key")
        ids = await client.send([stepline.Event("test/a", {"n": 1}), stepline.Event("test/b", id="mine", ts=5)])
    assert ids == ["evt-0", "evt-1"]
    [call] = fake.calls
    assert call.path == "/e/ev-key"
    _seed_is_well_formed(call.headers["x-inngest-event-id-seed"])
    assert call.headers["x-inngest-sdk"] == settings.SDK
    assert "authorization" not in call.headers
    first, second = call.body
    assert first["name"] == "test/a"
    assert first["data"] == {"n": 1}
    assert isinstance(first["ts"], int)
    assert "id" not in first
    assert second == {"name": "test/b", "data": {}, "user": {}, "id": "mine", "ts": 5}


def test_send_sync_in_dev_mode_uses_the_placeholder_key() -> None:
    with fakeserver.running() as fake:
        client = stepline.Stepline(app_id="sender", base_url=fake.base_url, is_dev=True)
        assert client.send_sync(stepline.Event("test/a")) == ["evt-0"]
    assert fake.calls[0].path == "/e/NO_EVENT_KEY_SET"


@pytest.mark.parametrize("use_sync", [False, True])
async def test_a_failed_attempt_is_retried_with_the_same_seed(use_sync: bool) -> None:
    with fakeserver.running() as fake:
        fake.answer("events", 500, {"error": "database hiccup", "status": 500})
        fake.answer("events", 503, b"proxy says no")
        client = _fast(stepline.Stepline(app_id="sender", base_url=fake.base_url, event_key="k"))
        event = stepline.Event("test/a")
        ids = client.send_sync(event) if use_sync else await client.send(event)
    assert ids == ["evt-0"]
    seeds = [call.headers["x-inngest-event-id-seed"] for call in fake.calls]
    assert len(seeds) == 3
    assert len(set(seeds)) == 1
    assert fake.calls[0].body == fake.calls[2].body


async def test_a_refusal_is_not_retried_and_carries_the_servers_message() -> None:
    with fakeserver.running() as fake:
        fake.answer("events", 401, {"status": 401, "message": "", "error": "Event key not found"})
        client = _fast(stepline.Stepline(app_id="sender", base_url=fake.base_url, event_key="wrong"))
        with pytest.raises(stepline.SteplineError) as caught:
            await client.send(stepline.Event("test/a"))
    assert len(fake.calls) == 1
    error = caught.value
    assert isinstance(error, stepline.errors.EventSendError)
    assert error.status == 401
    assert error.server_error == "Event key not found"
    assert "Event key not found" in str(error)


async def test_giving_up_names_the_server() -> None:
    base_url = fakeserver.free_port_url()
    client = _fast(stepline.Stepline(app_id="sender", base_url=base_url, event_key="k"))
    with pytest.raises(stepline.errors.EventSendError, match=base_url.replace(".", r"\.")) as caught:
        await client.send(stepline.Event("test/a"))
    assert caught.value.status is None


async def test_production_without_an_event_key_says_what_to_set() -> None:
    client = stepline.Stepline(app_id="sender")
    with pytest.raises(stepline.ConfigurationError, match="STEPLINE_EVENT_KEY"):
        await client.send(stepline.Event("test/a"))
    with pytest.raises(stepline.ConfigurationError, match="STEPLINE_EVENT_KEY"):
        client.send_sync(stepline.Event("test/a"))


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        self.sent.append(events)
        return ["local"]

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        self.sent.append(events)
        return ["local"]


async def test_an_attached_sender_wins_and_detaching_falls_back_to_http() -> None:
    with fakeserver.running() as fake:
        client = stepline.Stepline(app_id="sender", base_url=fake.base_url, event_key="k")
        recorder = _Recorder()
        client.attach_sender(recorder)
        assert await client.send(stepline.Event("test/a")) == ["local"]
        client.attach_sender(None)
        assert await client.send(stepline.Event("test/a")) == ["evt-0"]
    assert len(recorder.sent) == 1
    assert len(fake.calls) == 1


def test_settings_come_from_the_environment_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_BASE_URL", "stepline.internal:9000/")
    monkeypatch.setenv("STEPLINE_EVENT_KEY", "from-env")
    monkeypatch.setenv("STEPLINE_DEV", "true")
    monkeypatch.setenv("STEPLINE_SERVE_ORIGIN", "app.internal:8000")
    loaded = stepline.Stepline(app_id="s").settings
    assert loaded.base_url == "http://stepline.internal:9000"
    assert loaded.event_key == "from-env"
    assert loaded.is_dev is True
    assert loaded.mode == "dev"
    assert loaded.serve_origin == "http://app.internal:8000"
    explicit = stepline.Stepline(app_id="s", event_key="arg", is_dev=False, base_url="https://x.example").settings
    assert (explicit.event_key, explicit.is_dev, explicit.mode, explicit.base_url) == (
        "arg",
        False,
        "cloud",
        "https://x.example",
    )


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("STEPLINE_SIGNING_KEY", "not-hex", "STEPLINE_SIGNING_KEY"),
        ("STEPLINE_SIGNING_KEY_FALLBACK", "abc", "STEPLINE_SIGNING_KEY_FALLBACK"),
        ("STEPLINE_DEV", "maybe", "STEPLINE_DEV"),
        ("STEPLINE_BASE_URL", "ftp://x", "STEPLINE_BASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(stepline.ConfigurationError, match=named):
        stepline.Stepline(app_id="s")
