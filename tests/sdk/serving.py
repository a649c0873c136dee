"""A small app served in the handler and adapter tests, and signed-request helpers."""

from __future__ import annotations

import json
import time
from typing import Any

from inngest._internal import net, server_lib

import stepline
from stepline.protocol import signing
from stepline.sdk import function as function_
from stepline.sdk import handler, settings

KEY = "signkey-test-" + "ab" * 32
FALLBACK = "signkey-test-" + "cd" * 32
APP_ID = "serve-test"
URL = "http://testserver/api/stepline"
EVENT = {"name": "test/greet", "data": {"who": "ana"}, "id": "e1", "ts": 1_700_000_000_000, "user": {}}


def build(**client_options: Any) -> tuple[stepline.Stepline, list[function_.Function]]:
    """A client and its functions: one async (with on_failure), one sync."""
    client = stepline.Stepline(app_id=APP_ID, **client_options)

    async def notify(ctx: stepline.Context) -> str:
        return "noted"

    @client.function(id="greet", trigger=stepline.on_event("test/greet"), on_failure=notify)
    async def greet(ctx: stepline.Context) -> dict[str, Any]:
        hello = await ctx.step.run("hello", lambda: f"hello {ctx.event.data['who']}")
        loud = await ctx.step.run("loud", lambda: hello.upper())
        return {"hello": hello, "loud": loud}

    @client.function(id="greet-sync", trigger=stepline.on_event("test/greet"), retries=2)
    def greet_sync(ctx: stepline.ContextSync) -> str:
        hello = ctx.step.run("hello", lambda: f"hi {ctx.event.data['who']}")
        if ctx.event.data.get("fail"):
            raise stepline.NonRetriableError("asked to fail")
        return str(hello)

    return client, [greet, greet_sync]


def execution_body(steps: dict[str, Any] | None = None, *, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """An execution request as the server sends it."""
    trigger = event or EVENT
    return {
        "ctx": {
            "attempt": 0,
            "disable_immediate_execution": False,
            "env": "",
            "fn_id": "fn-uuid",
            "max_attempts": 5,
            "run_id": "01RUN",
            "stack": {"current": 0, "stack": list(steps or {})},
            "step_id": "step",
            "use_api": False,
        },
        "event": trigger,
        "events": [trigger],
        "steps": steps or {},
        "use_api": False,
        "version": 2,
    }


def request(
    method: str,
    query: str = "",
    body: Any = None,
    *,
    key: str | None = None,
    at: float | None = None,
    headers: dict[str, str] | None = None,
) -> handler.Request:
    """A request to the serve URL; with ``key``, signed as the server signs (JCS body, unix seconds)."""
    raw = b"" if body is None else body if isinstance(body, bytes) else signing.canonical_json(body)
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["X-Inngest-Signature"] = signing.sign(raw, key, int(time.time() if at is None else at))
    return handler.Request.create(method, f"{URL}{query}", all_headers, raw)


def body_of(response: handler.Response) -> Any:
    return json.loads(response.body)


PROTOCOL_HEADERS = {
    "Content-Type": "application/json",
    "X-Inngest-SDK": settings.SDK,
    "X-Inngest-Req-Version": "2",
    "X-Inngest-Framework": "test",
    "X-Inngest-SDK-Handled": "true",
}


def serve(**client_options: Any) -> handler.ServeHandler:
    client, functions = build(**client_options)
    return handler.ServeHandler(client, functions, "test")


def production(**client_options: Any) -> handler.ServeHandler:
    return serve(signing_key=KEY, **client_options)


def assert_protocol_headers(response: handler.Response, mode: str) -> None:
    for name, value in PROTOCOL_HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers["X-Inngest-Expected-Server-Kind"] == mode


def assert_signed_by(response: handler.Response, key: str) -> None:
    """The response signature checks out with the Inngest SDK's own verification."""
    checked = net.validate_response_sig(
        body=response.body,
        headers={"x-inngest-signature": response.headers["X-Inngest-Signature"]},
        mode=server_lib.ServerKind.CLOUD,
        signing_key=key,
    )
    assert checked == key
