"""The framework-neutral serve handler: introspection, execution, authentication, errors (sync: test_handler_put)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from stepline.protocol import hashing, models, signing
from stepline.sdk import execution, handler

from .serving import (
    APP_ID,
    FALLBACK,
    KEY,
    assert_protocol_headers,
    assert_signed_by,
    body_of,
    build,
    execution_body,
    production,
    request,
    serve,
)

# --- GET -----------------------------------------------------------------------------------


async def test_dev_mode_introspection_shows_only_the_public_facts() -> None:
    response = await serve(is_dev=True).handle(request("GET"))
    assert response.status == 200
    assert body_of(response) == {
        "schema_version": "2024-05-24",
        "function_count": 2,
        "has_event_key": False,
        "has_signing_key": False,
        "has_signing_key_fallback": False,
        "mode": "dev",
    }
    assert_protocol_headers(response, "dev")
    assert "X-Inngest-Signature" not in response.headers


async def test_production_introspection_refuses_unsigned_requests() -> None:
    response = await production().handle(request("GET"))
    assert response.status == 401
    assert body_of(response)["message"] == "Unauthorized"
    assert_protocol_headers(response, "cloud")


async def test_signed_introspection_is_authenticated_and_signed() -> None:
    served = production(signing_key_fallback=FALLBACK, event_key="evkey", base_url="http://server:8288")
    response = await served.handle(request("GET", key=KEY))
    assert response.status == 200
    body = body_of(response)
    assert body["authentication_succeeded"] is True
    assert body["app_id"] == APP_ID
    assert body["mode"] == "cloud"
    assert body["framework"] == "test"
    assert body["api_origin"] == body["event_api_origin"] == "http://server:8288"
    assert body["signing_key_hash"] == signing.hash_signing_key(KEY)
    assert body["signing_key_fallback_hash"] == signing.hash_signing_key(FALLBACK)
    assert body["event_key_hash"] == signing.hash_event_key("evkey")
    assert body["capabilities"] == {"in_band_sync": "v1", "trust_probe": "v1"}
    assert body["has_signing_key_fallback"] is True
    assert_signed_by(response, KEY)


async def test_introspection_from_the_other_server_kind_is_refused() -> None:
    response = await serve(is_dev=True).handle(request("GET", headers={"X-Inngest-Server-Kind": "cloud"}))
    assert response.status == 403


# --- POST ----------------------------------------------------------------------------------


async def test_unsigned_tampered_and_stale_executions_are_refused_in_production() -> None:
    served = production()
    body = execution_body()
    query = f"?fnId={APP_ID}-greet&stepId=step"
    unsigned = request("POST", query, body)
    tampered = request("POST", query, body, key=KEY)
    tampered = handler.Request.create("POST", tampered.url, tampered.headers, tampered.body.replace(b"ana", b"bob"))
    stale = request("POST", query, body, key=KEY, at=time.time() - signing.MAX_AGE_S - 60)
    wrong_key = request("POST", query, body, key=FALLBACK)
    for attempt in (unsigned, tampered, stale, wrong_key):
        response = await served.handle(attempt)
        assert response.status == 401
        assert body_of(response)["message"] == "Unauthorized"
        assert "X-Inngest-Signature" not in response.headers


@pytest.mark.parametrize(
    ("fn_index", "steps", "step_id"),
    [
        (0, {}, "step"),
        (0, {hashing.hash_step_id("hello"): {"data": "hello ana"}}, "step"),
        (0, {hashing.hash_step_id("hello"): {"data": "hello ana"}}, hashing.hash_step_id("loud")),
        (0, {hashing.hash_step_id("hello"): {"data": "x"}, hashing.hash_step_id("loud"): {"data": "X"}}, "step"),
        (1, {}, "step"),
        (1, {hashing.hash_step_id("hello"): {"data": "hi ana"}}, "step"),
    ],
)
async def test_signed_execution_answers_what_execution_answers(
    fn_index: int, steps: dict[str, Any], step_id: str
) -> None:
    client, functions = build(signing_key=KEY)
    served = handler.ServeHandler(client, functions, "test")
    fn = functions[fn_index]
    body = execution_body(steps)
    response = await served.handle(request("POST", f"?fnId={fn.composite_id}&stepId={step_id}", body, key=KEY))

    wire = models.ExecutionRequest.model_validate(body)
    wire.ctx.step_id = step_id
    if fn.is_async:
        expected = await execution.execute(fn, client, wire)
    else:
        expected = execution.execute_sync(fn, client, wire)
    assert response.status == expected.status
    assert body_of(response) == expected.body
    assert response.headers["X-Inngest-No-Retry"] == ("true" if expected.no_retry else "false")
    assert_protocol_headers(response, "cloud")
    assert_signed_by(response, KEY)


async def test_step_id_header_is_used_when_the_query_has_none() -> None:
    served = serve(is_dev=True)
    steps = {hashing.hash_step_id("hello"): {"data": "hello ana"}}
    target = hashing.hash_step_id("loud")
    response = await served.handle(
        request("POST", f"?fnId={APP_ID}-greet", execution_body(steps), headers={"X-Inngest-Step-ID": target})
    )
    assert response.status == 206
    assert [op["op"] for op in body_of(response)] == ["StepRun"]
    assert body_of(response)[0]["data"] == "HELLO ANA"


async def test_non_retriable_failure_says_no_retry() -> None:
    served = serve(is_dev=True)
    event = {**execution_body()["event"], "data": {"who": "ana", "fail": True}}
    steps = {hashing.hash_step_id("hello"): {"data": "hi ana"}}
    response = await served.handle(request("POST", f"?fnId={APP_ID}-greet-sync", execution_body(steps, event=event)))
    assert response.status == 500
    assert response.headers["X-Inngest-No-Retry"] == "true"
    assert body_of(response)["message"] == "asked to fail"


async def test_on_failure_function_is_served_under_its_own_id() -> None:
    served = serve(is_dev=True)
    response = await served.handle(request("POST", f"?fnId={APP_ID}-greet-failure", execution_body()))
    assert response.status == 200
    assert body_of(response) == "noted"


async def test_unknown_function_is_named_in_the_error() -> None:
    response = await production().handle(request("POST", "?fnId=serve-test-nope", execution_body(), key=KEY))
    assert response.status == 404
    body = body_of(response)
    assert body["code"] == "function_not_found"
    assert body["name"] == "FunctionNotFoundError"
    assert "serve-test-nope" in body["message"]
    assert_signed_by(response, KEY)


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"{not json", "Invalid JSON"),
        ({"ctx": {"attempt": 0}, "event": {}, "events": [], "steps": {}}, "ctx.run_id"),
        ({"ctx": {"run_id": "r"}, "event": {}, "steps": {}}, "events"),
        ({"ctx": {"run_id": "r"}, "event": {}, "events": "no", "steps": {}}, "events"),
    ],
)
async def test_malformed_body_is_a_400_naming_the_field(body: Any, mentions: str) -> None:
    response = await serve(is_dev=True).handle(request("POST", f"?fnId={APP_ID}-greet", body))
    assert response.status == 400
    answer = body_of(response)
    assert answer["status"] == 400
    assert mentions in answer["error"]


async def test_signed_malformed_body_is_a_signed_400_in_production() -> None:
    body: dict[str, Any] = {"ctx": {}, "event": {}, "events": [], "steps": {}}
    response = await production().handle(request("POST", f"?fnId={APP_ID}-greet", body, key=KEY))
    assert response.status == 400
    assert "ctx.run_id" in body_of(response)["error"]
    assert_signed_by(response, KEY)


async def test_missing_fn_id_is_a_400() -> None:
    response = await serve(is_dev=True).handle(request("POST", "", execution_body()))
    assert response.status == 400
    assert "fnId" in body_of(response)["error"]


async def test_trust_probe_answers_signed_null() -> None:
    response = await production().handle(request("POST", "?probe=trust", key=KEY))
    assert response.status == 200
    assert response.body == b"null"
    assert_signed_by(response, KEY)


async def test_fallback_key_is_accepted_and_signs_the_answer() -> None:
    served = production(signing_key_fallback=FALLBACK)
    response = await served.handle(request("POST", "?probe=trust", key=FALLBACK))
    assert response.status == 200
    assert_signed_by(response, FALLBACK)


def test_sync_handler_runs_async_and_sync_functions() -> None:
    served = production()
    for fn_id, expected in (("greet", "hello ana"), ("greet-sync", "hi ana")):
        response = served.handle_sync(request("POST", f"?fnId={APP_ID}-{fn_id}", execution_body(), key=KEY))
        assert response.status == 206
        assert body_of(response)[0]["data"] == expected
        assert_signed_by(response, KEY)


# --- misconfiguration ----------------------------------------------------------------------


async def test_production_without_a_signing_key_says_so_on_every_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="stepline.serve"):
        served = serve()
    logged = [record.getMessage() for record in caplog.records if record.name == "stepline.serve"]
    assert len(logged) == 1
    assert "STEPLINE_SIGNING_KEY is not set and STEPLINE_DEV is not enabled" in logged[0]
    for method, query, body in (("GET", "", None), ("PUT", "", None), ("POST", f"?fnId={APP_ID}-greet", {})):
        for response in (await served.handle(request(method, query, body)), served.handle_sync(request(method))):
            assert response.status == 500
            answer = body_of(response)
            assert answer["status"] == 500
            assert "STEPLINE_SIGNING_KEY is not set and STEPLINE_DEV is not enabled: set one of them" in answer["error"]
            assert_protocol_headers(response, "cloud")


# --- construction --------------------------------------------------------------------------


def test_serving_nothing_or_a_foreign_function_is_a_configuration_error() -> None:
    import stepline

    client, functions = build(is_dev=True)
    _, others = build(is_dev=True)
    with pytest.raises(stepline.ConfigurationError, match="at least one function"):
        handler.ServeHandler(client, [], "test")
    with pytest.raises(stepline.ConfigurationError, match="served twice"):
        handler.ServeHandler(client, [functions[0], others[0]], "test")
    stranger = stepline.Stepline(app_id="stranger", is_dev=True)

    @stranger.function(id="x", trigger=stepline.on_event("t/x"))
    def x(ctx: stepline.ContextSync) -> None:
        return None

    with pytest.raises(stepline.ConfigurationError, match="belongs to app 'stranger'"):
        handler.ServeHandler(client, [x], "test")


async def test_unsupported_method_is_a_405() -> None:
    response = await serve(is_dev=True).handle(request("DELETE"))
    assert response.status == 405


async def test_retry_after_reaches_the_header() -> None:
    import stepline

    client = stepline.Stepline(app_id="later", is_dev=True)

    @client.function(id="busy", trigger=stepline.on_event("t/busy"))
    async def busy(ctx: stepline.Context) -> None:
        raise stepline.RetryAfterError("rate limited", 30)

    served = handler.ServeHandler(client, [busy], "test")
    response = await served.handle(request("POST", "?fnId=later-busy", execution_body()))
    assert response.status == 500
    assert response.headers["Retry-After"] == "30"
    assert response.headers["X-Inngest-No-Retry"] == "false"
