"""Request signing: round trips, tampering, expiry, and agreement with the Inngest SDK's own code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inngest._internal import net, server_lib, transforms

from stepline import errors
from stepline.protocol import signing

NOW = 1_700_000_000
hex_keys = st.binary(min_size=1, max_size=48).map(bytes.hex)
prefixed_keys = st.tuples(st.sampled_from(["", "signkey-prod-", "signkey-test-", "signkey-branch-"]), hex_keys).map(
    "".join
)
json_leaves = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=5)


@given(prefixed_keys, json_objects, st.integers(0, 2**40))
def test_signed_bodies_verify_with_the_signing_key(key: str, body: dict[str, Any], timestamp: int) -> None:
    raw = signing.canonical_json(body)
    header = signing.sign(raw, key, timestamp)
    assert signing.verify(raw, header, [key], timestamp) == key
    # A framework that re-serialises the JSON (spacing, key order) does not break it.
    loose = json.dumps(body, indent=2, sort_keys=False).encode()
    assert signing.verify(loose, header, [key], timestamp) == key


@given(prefixed_keys, json_objects, st.data())
def test_tampered_bodies_are_rejected(key: str, body: dict[str, Any], data: st.DataObject) -> None:
    raw = signing.canonical_json(body)
    header = signing.sign(raw, key, NOW)
    changed = data.draw(json_objects.filter(lambda other: signing.canonical_json(other) != raw))
    assert signing.verify(signing.canonical_json(changed), header, [key], NOW) is None


@given(prefixed_keys, prefixed_keys, json_objects)
def test_other_keys_and_altered_signatures_are_rejected(key: str, other: str, body: dict[str, Any]) -> None:
    raw = signing.canonical_json(body)
    header = signing.sign(raw, key, NOW)
    if signing.strip_prefix(other) != signing.strip_prefix(key):
        assert signing.verify(raw, header, [other], NOW) is None
        assert signing.verify(raw, header, [other, key], NOW) == key
    flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
    assert signing.verify(raw, flipped, [key], NOW) is None
    later = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert signing.verify(raw, later, [key], NOW) is None


@given(prefixed_keys, st.integers(-(10**6), 10**6))
def test_signatures_expire(key: str, skew: int) -> None:
    header = signing.sign(b"", key, NOW)
    verified = signing.verify(b"", header, [key], NOW + skew)
    assert (verified == key) == (abs(skew) <= signing.MAX_AGE_S)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc&s=00", "s=00", "t=1"])
def test_malformed_headers_are_rejected(header: str | None) -> None:
    assert signing.verify(b"{}", header, ["ab" * 8], NOW) is None


def test_the_protocol_notes_example() -> None:
    header = signing.sign(signing.canonical_json({"b": 1, "a": 2}), "ab" * 32, 1_700_000_000)
    assert header == "t=1700000000&s=2b5fe76b9ebcc91a552dcc4fbe001a6284aca8b0fb666f66e4166f05a315b1cd"


# --- agreement with the Inngest Python SDK 0.5.19 -------------------------------------------


@settings(max_examples=50)
@given(prefixed_keys, json_objects, st.integers(1, 2**40))
def test_inngest_sdk_accepts_our_request_signatures(key: str, body: dict[str, Any], timestamp: int) -> None:
    raw = signing.canonical_json(body)
    checked = net.validate_request_sig(
        body=raw,
        headers={"x-inngest-signature": signing.sign(raw, key, timestamp)},
        mode=server_lib.ServerKind.CLOUD,
        signing_key=key,
        signing_key_fallback=None,
    )
    assert checked == key


@settings(max_examples=50)
@given(prefixed_keys, json_objects, st.integers(1, 2**40))
def test_we_accept_the_inngest_sdks_request_signatures(key: str, body: dict[str, Any], timestamp: int) -> None:
    raw = json.dumps(body).encode()
    header = net.sign_request(raw, key, timestamp)
    assert isinstance(header, str)
    assert signing.verify(raw, header, [key], timestamp) == key


@settings(max_examples=50)
@given(prefixed_keys, st.binary(max_size=64), st.integers(1, 2**40))
def test_response_signatures_agree_both_ways(key: str, body: bytes, timestamp: int) -> None:
    ours = signing.sign(body, key, timestamp)
    checked = net.validate_response_sig(
        body=body, headers={"x-inngest-signature": ours}, mode=server_lib.ServerKind.CLOUD, signing_key=key
    )
    assert checked == key
    theirs = net.sign_response(body, key, timestamp)
    assert theirs == ours
    assert signing.verify(body, theirs, [key], timestamp, canonicalize=False) == key


def test_inngest_rejects_our_signature_under_another_key() -> None:
    raw = signing.canonical_json({"a": 1})
    checked = net.validate_request_sig(
        body=raw,
        headers={"x-inngest-signature": signing.sign(raw, "ab" * 16, NOW)},
        mode=server_lib.ServerKind.CLOUD,
        signing_key="cd" * 16,
        signing_key_fallback=None,
    )
    assert isinstance(checked, Exception)


@given(prefixed_keys)
def test_bearer_tokens_match_the_inngest_sdk(key: str) -> None:
    assert signing.hash_signing_key(key) == transforms.hash_signing_key(key)
    assert signing.bearer_matches(transforms.hash_signing_key(key), [key])


@pytest.mark.parametrize("key", ["", "signkey-prod-", "abc", "zz", "signkey-prod-xyz1"])
def test_invalid_signing_keys_are_refused(key: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="even-length hex"):
        signing.validate_signing_key(key)
