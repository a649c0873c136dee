"""FastAPI, Flask and Django serve the same endpoint: each answers GET, PUT and POST identically."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import fastapi
import flask
import httpx
import pytest
from django.test import Client as DjangoClient

import stepline
import stepline.django
import stepline.fastapi
import stepline.flask
from stepline.protocol import hashing, signing
from stepline.sdk import settings

from . import django_site, fakeserver
from .serving import APP_ID, KEY, build, execution_body

PATH = "/api/stepline"
Answer = tuple[int, dict[str, str], bytes]
Call = Callable[[str, str, bytes, dict[str, str]], Answer]


def _fastapi(client: stepline.Stepline, functions: list[stepline.Function]) -> Call:
    app = fastapi.FastAPI()
    stepline.fastapi.serve(app, client, functions, path=PATH)

    async def send(method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.request(method, target, content=body, headers=headers)
        return response.status_code, dict(response.headers), response.content

    return lambda method, target, body, headers: asyncio.run(send(method, target, body, headers))


def _flask(client: stepline.Stepline, functions: list[stepline.Function]) -> Call:
    app = flask.Flask(__name__)
    stepline.flask.serve(app, client, functions, path=PATH)
    test_client = app.test_client()

    def send(method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        response = test_client.open(target, method=method, data=body, headers=headers, base_url="http://testserver")
        return response.status_code, dict(response.headers), response.get_data()

    return send


def _django(client: stepline.Stepline, functions: list[stepline.Function]) -> Call:
    django_site.urlpatterns[:] = [stepline.django.serve(client, functions, path=PATH.lstrip("/"))]
    test_client = DjangoClient(enforce_csrf_checks=True)

    def send(method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        response = test_client.generic(method, target, data=body, content_type="application/json", headers=headers)
        return response.status_code, dict(response.items()), response.content

    return send


ADAPTERS = {"fast_api": _fastapi, "flask": _flask, "django": _django}


@pytest.fixture
def fake() -> Iterator[fakeserver.FakeServer]:
    with fakeserver.running() as server:
        yield server


def _answers(fake: fakeserver.FakeServer, scenario: Callable[[Call], Answer]) -> dict[str, Answer]:
    """What each adapter answers to the same scenario (each with its own, identically built app)."""
    answers = {}
    for name, make in ADAPTERS.items():
        client, functions = build(signing_key=KEY, base_url=fake.base_url)
        answers[name] = scenario(make(client, functions))
    return answers


def _normalised(framework: str, answer: Answer) -> tuple[int, dict[str, str], Any]:
    """Status, protocol headers and JSON body, with what legitimately differs taken out."""
    status, headers, body = answer
    lowered = {name.lower(): value for name, value in headers.items()}
    assert lowered["x-inngest-framework"] == framework
    assert lowered["content-type"] == "application/json"
    signature = lowered.pop("x-inngest-signature", None)
    if signature is not None:
        assert signing.verify(body, signature, [KEY], int(signature[2:].split("&")[0]), canonicalize=False) == KEY
    kept = {
        name: value
        for name, value in lowered.items()
        if (name.startswith("x-inngest-") and name != "x-inngest-framework") or name == "retry-after"
    }
    decoded = json.loads(body)
    if isinstance(decoded, dict):
        assert decoded.pop("framework", framework) == framework
        if isinstance(decoded.get("inspection"), dict):
            assert decoded["inspection"].pop("framework") == framework
    return status, kept | {"signed": str(signature is not None)}, decoded


def _assert_identical(answers: dict[str, Answer]) -> tuple[int, dict[str, str], Any]:
    normalised = {name: _normalised(name, answer) for name, answer in answers.items()}
    first = normalised["fast_api"]
    for name, other in normalised.items():
        assert other == first, name
    return first


def _signed(body: Any) -> tuple[bytes, dict[str, str]]:
    raw = b"" if body is None else signing.canonical_json(body)
    return raw, {"X-Inngest-Signature": signing.sign(raw, KEY, int(time.time()))}


def test_get_unsigned_and_signed(fake: fakeserver.FakeServer) -> None:
    status, headers, body = _assert_identical(_answers(fake, lambda call: call("GET", PATH, b"", {})))
    assert (status, body["message"], body["status"]) == (401, "Unauthorized", 401)
    assert headers["x-inngest-sdk"] == settings.SDK
    raw, signed = _signed(None)
    status, headers, body = _assert_identical(_answers(fake, lambda call: call("GET", PATH, raw, signed)))
    assert status == 200
    assert body["authentication_succeeded"] is True
    assert headers["signed"] == "True"


@pytest.mark.parametrize(
    ("fn_id", "steps", "step_id", "expected_status"),
    [
        ("greet", {}, "step", 206),
        ("greet", {hashing.hash_step_id("hello"): {"data": "hello ana"}}, hashing.hash_step_id("loud"), 206),
        (
            "greet",
            {hashing.hash_step_id("hello"): {"data": "a"}, hashing.hash_step_id("loud"): {"data": "A"}},
            "step",
            200,
        ),
        ("greet-sync", {}, "step", 206),
        ("greet-sync", {hashing.hash_step_id("hello"): {"data": "hi ana"}}, "step", 200),
        ("nope", {}, "step", 404),
    ],
)
def test_post_executes_alike(
    fake: fakeserver.FakeServer, fn_id: str, steps: dict[str, Any], step_id: str, expected_status: int
) -> None:
    raw, signed = _signed(execution_body(steps))
    target = f"{PATH}?fnId={APP_ID}-{fn_id}&stepId={step_id}"
    status, headers, _ = _assert_identical(_answers(fake, lambda call: call("POST", target, raw, signed)))
    assert status == expected_status
    assert headers["signed"] == "True"


def test_post_unsigned_and_malformed(fake: fakeserver.FakeServer) -> None:
    raw = signing.canonical_json(execution_body())
    target = f"{PATH}?fnId={APP_ID}-greet"
    status, _, _ = _assert_identical(_answers(fake, lambda call: call("POST", target, raw, {})))
    assert status == 401
    bad, signed = _signed({"ctx": {}, "event": {}, "events": [], "steps": {}})
    status, _, body = _assert_identical(_answers(fake, lambda call: call("POST", target, bad, signed)))
    assert status == 400
    assert "ctx.run_id" in body["error"]


def test_put_registers_alike(fake: fakeserver.FakeServer) -> None:
    status, headers, body = _assert_identical(
        _answers(fake, lambda call: call("PUT", f"{PATH}?deployId=d1", b"", {"X-Inngest-Server-Kind": "cloud"}))
    )
    assert (status, body, headers["x-inngest-sync-kind"]) == (200, {"ok": True}, "out_of_band")
    registered = fake.calls_to("/fn/register")
    assert [call.body["framework"] for call in registered] == list(ADAPTERS)
    for call in registered:
        assert call.query == {"deployId": "d1"}
        assert call.body["url"] == f"http://testserver{PATH}"
        assert call.headers["authorization"] == f"Bearer {signing.hash_signing_key(KEY)}"
        assert {k: v for k, v in call.body.items() if k != "framework"} == {
            k: v for k, v in registered[0].body.items() if k != "framework"
        }


def test_in_band_put_alike(fake: fakeserver.FakeServer) -> None:
    raw, signed = _signed({"url": f"https://public.example.com{PATH}"})
    headers = signed | {"X-Inngest-Sync-Kind": "in_band"}
    status, answer_headers, body = _assert_identical(_answers(fake, lambda call: call("PUT", PATH, raw, headers)))
    assert (status, answer_headers["x-inngest-sync-kind"]) == (200, "in_band")
    assert body["url"] == f"https://public.example.com{PATH}"
    assert fake.calls_to("/fn/register") == []


def test_missing_signing_key_is_a_clear_500_in_every_adapter() -> None:
    for name, make in ADAPTERS.items():
        client, functions = build()
        call = make(client, functions)
        for method in ("GET", "PUT", "POST"):
            status, _, body = call(method, PATH, b"", {})
            assert status == 500, (name, method)
            assert "STEPLINE_SIGNING_KEY is not set and STEPLINE_DEV is not enabled" in json.loads(body)["error"]
