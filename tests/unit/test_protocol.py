"""The pure wire pieces: step-id hashing, durations, Retry-After, response interpretation, backoff,
server-sent events and task routes' owners."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepline import errors
from stepline.engine import backoff
from stepline.protocol import durations, hashing, jsonvalue, responses, sse
from stepline.sdk import task_views


def test_step_ids_hash_as_the_protocol_does() -> None:
    assert hashing.hash_step_id("a") == "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
    assert hashing.hash_step_id("my-step-id") == "e7d8a2f140845095749d60246ff1110c9d01d76a"
    assert hashing.indexed_step_id("a", 0) == "a"
    assert hashing.hash_step_id(hashing.indexed_step_id("a", 1)) == "de89bfaf06245091a7873290a793604612302247"


@given(st.text(min_size=1), st.integers(min_value=0, max_value=50))
def test_repeated_step_ids_never_collide_with_the_first_use(step_id: str, uses: int) -> None:
    first = hashing.hash_step_id(hashing.indexed_step_id(step_id, 0))
    later = hashing.hash_step_id(hashing.indexed_step_id(step_id, uses + 1))
    assert first != later


@pytest.mark.parametrize(
    ("text", "ms"),
    [("10s", 10_000), ("1m", 60_000), ("1h30m", 5_400_000), ("500ms", 500), ("1d", 86_400_000), ("1w", 604_800_000)],
)
def test_time_strings_parse(text: str, ms: int) -> None:
    assert durations.parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "1h 30m", "-1s", "abc"])
def test_bad_time_strings_name_the_problem(text: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="invalid duration"):
        durations.parse_duration_ms(text)


@pytest.mark.parametrize(
    "value", ["36600d", "9" * 400 + "d", 1e308, float("nan"), float("inf"), -1e308, timedelta(days=999_999)]
)
def test_durations_past_a_century_are_out_of_range(value: str | float | timedelta) -> None:
    with pytest.raises(errors.ConfigurationError, match="out of range"):
        durations.to_milliseconds(value)


def test_a_capped_duration_is_capped_however_long() -> None:
    assert durations.parse_duration_ms("9" * 400 + "d", at_most_ms=5_000) == 5_000
    assert durations.parse_duration_ms("3s", at_most_ms=5_000) == 3_000


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"text": "half a pair \ud800"}, "unpaired surrogate"),
        ({"text": "nul \x00"}, "NUL"),
        ({"n": float("nan")}, "not JSON-serialisable"),
    ],
)
def test_unstorable_json_is_refused_naming_the_problem(value: object, problem: str) -> None:
    with pytest.raises(errors.SerializationError, match=problem):
        jsonvalue.check_json(value, "the data")


def test_storable_json_passes_including_astral_characters() -> None:
    jsonvalue.check_json({"emoji": "\U0001f600", "escaped-pair": json.loads('"\\ud83d\\ude00"')}, "the data")


def test_nesting_too_deep_to_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonvalue.loads("[" * 100_000 + "]" * 100_000)


@given(st.integers(min_value=0, max_value=10**12))
def test_durations_round_trip(ms: int) -> None:
    assert durations.parse_duration_ms(durations.format_duration_ms(ms)) == ms


def test_retry_after_accepts_seconds_and_dates_and_clamps() -> None:
    now = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert responses.parse_retry_after("30", now) == 30_000
    assert responses.parse_retry_after("0", now) == 1_000  # clamped up to 1 s
    assert responses.parse_retry_after("2026-01-01T00:01:00Z", now) == 60_000
    assert responses.parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now) == 10_000
    assert responses.parse_retry_after("2027-01-01T00:00:00Z", now) == 24 * 3_600_000  # clamped down to 24 h
    assert responses.parse_retry_after("soon", now) is None
    assert responses.parse_retry_after(None, now) is None


def test_interpret_reads_each_kind_of_response() -> None:
    assert isinstance(responses.interpret(responses.CallResponse(200, {"ok": 1}), 0), responses.Completed)
    ops = responses.interpret(responses.CallResponse(206, [{"op": "StepRun", "id": "x", "data": 1}]), 0)
    assert isinstance(ops, responses.Ops)
    assert ops.ops[0].data == 1
    single = responses.interpret(responses.CallResponse(206, {"op": "Sleep", "id": "y", "name": "1s"}), 0)
    assert isinstance(single, responses.Ops)
    assert len(single.ops) == 1
    failed = responses.interpret(responses.CallResponse(500, {"name": "E", "message": "m"}, no_retry=True), 0)
    assert isinstance(failed, responses.Errored)
    assert not failed.retriable
    assert failed.error["message"] == "m"
    not_sdk = responses.interpret(responses.CallResponse(200, "<html>", sdk=None), 0)
    assert isinstance(not_sdk, responses.Errored)
    assert not_sdk.retriable
    malformed = responses.interpret(responses.CallResponse(206, [{"op": "Nope", "id": "x"}]), 0)
    assert isinstance(malformed, responses.Errored)
    assert "malformed" in malformed.error["message"]


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_bounds(attempt: int, seed: int) -> None:
    delay = backoff.retry_delay_ms(attempt, random.Random(seed))
    ceiling = min(backoff.CAP_MS, backoff.BASE_MS * 2**attempt)
    assert ceiling // 2 <= delay <= ceiling
    assert delay <= backoff.CAP_MS


def test_backoff_grows_with_attempts() -> None:
    rng = random.Random(1)
    assert backoff.retry_delay_ms(0, rng) <= 1_000 < backoff.retry_delay_ms(5, rng)


SSE_TEXT = ': keep-alive\n\nid: 1\nevent: task\ndata: {"v":1}\n\nevent: task\ndata: [1,\ndata: 2]\n\n\ndata: "tail"'


def test_server_sent_events_read_the_same_sync_and_async() -> None:
    lines = SSE_TEXT.split("\n")

    async def read_async() -> list[tuple[str, object]]:
        async def feed() -> AsyncIterator[str]:
            for line in lines:
                yield line

        return [found async for found in sse.read_frames(feed())]

    expected = [("task", {"v": 1}), ("task", [1, 2]), ("message", "tail")]
    assert list(sse.read_frames_sync(lines)) == expected
    assert asyncio.run(read_async()) == expected


def test_task_route_owners_resolve_to_an_id_or_to_nobody() -> None:
    @dataclasses.dataclass
    class User:
        id: object
        is_authenticated: bool = True

    @dataclasses.dataclass
    class KeyedOtherwise:  # a Django model whose primary key is not called id
        pk: str

    assert task_views.owner_id("alice") == "alice"
    assert task_views.owner_id(42) == "42"
    assert task_views.owner_id(0) == "0"
    assert task_views.owner_id(User(42)) == "42"
    assert task_views.owner_id(User(0)) == "0"
    assert task_views.owner_id(KeyedOtherwise("u-7")) == "u-7"
    for nobody in (None, "", User(None), User(""), User(7, is_authenticated=False)):
        assert task_views.owner_id(nobody) is None
    for wrong in (object(), True):
        with pytest.raises(TypeError, match="owner id"):
            task_views.owner_id(wrong)


def test_server_sent_event_comments_are_given_when_asked() -> None:
    lines = [": keep-alive", "", "event: task", "data: 1", ""]
    assert list(sse.read_frames_sync(lines)) == [("task", 1)]
    assert list(sse.read_frames_sync(lines, comments=True)) == [(sse.COMMENT, None), ("task", 1)]
