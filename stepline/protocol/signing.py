"""Request signing between server and app, and the keys it uses.

Server -> app requests carry ``X-Inngest-Signature: t=<unix seconds>&s=<hex>``, where ``s``
is HMAC-SHA256 over the JCS-canonical request body followed by ``t``, keyed with the signing
key's hex text (prefix ``signkey-<env>-`` removed). The server sends JCS bytes, so the raw
body already is canonical; the app re-canonicalises before checking, as the Inngest SDKs do.
Responses are signed the same way over their raw bytes. App -> server API calls carry
``Authorization: Bearer <sha256 of the hex-decoded key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

import jcs

from stepline import errors

SIGNATURE_HEADER = "X-Inngest-Signature"
MAX_AGE_S = 5 * 60
_PREFIX = re.compile(r"^signkey-\w+-")


def strip_prefix(key: str) -> str:
    return _PREFIX.sub("", key.strip())


def validate_signing_key(key: str) -> str:
    """The key without prefix; ``ConfigurationError`` unless it is even-length hex."""
    bare = strip_prefix(key)
    if not bare or len(bare) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", bare):
        raise errors.ConfigurationError(
            "a signing key must be an even-length hex string, optionally prefixed 'signkey-<env>-' "
            "(generate one with 'stepline keys generate')"
        )
    return bare


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes: the exact bytes the server sends and signs."""
    encoded: bytes = jcs.canonicalize(value)
    return encoded


def sign(body: bytes, key: str, timestamp: int) -> str:
    """The signature header value for ``body`` at ``timestamp`` (unix seconds)."""
    digest = hmac.new(strip_prefix(key).encode(), body + str(timestamp).encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp}&s={digest}"


def _parse(header: str) -> tuple[int, str] | None:
    parts = dict(part.split("=", 1) for part in header.split("&") if "=" in part)
    try:
        return int(parts["t"]), parts["s"]
    except (KeyError, ValueError):
        return None


def verify(
    body: bytes,
    header: str | None,
    keys: Sequence[str],
    now_s: int,
    *,
    canonicalize: bool = True,
    max_age_s: int = MAX_AGE_S,
) -> str | None:
    """The key (of ``keys``, primary first) that signed ``body``, or None.

    With ``canonicalize`` the body is parsed and re-encoded as JCS before checking, so a
    framework that re-serialises JSON does not break the signature. A signature older (or
    newer) than ``max_age_s`` is refused, so a captured request cannot be replayed later.
    """
    if not header:
        return None
    parsed = _parse(header)
    if parsed is None:
        return None
    timestamp, signature = parsed
    if abs(now_s - timestamp) > max_age_s:
        return None
    message = body
    if canonicalize and body:
        try:
            message = canonical_json(json.loads(body))
        except ValueError:
            return None
    for key in keys:
        expected = sign(message, key, timestamp).split("&s=", 1)[1]
        if hmac.compare_digest(expected, signature):
            return key
    return None


def hash_signing_key(key: str) -> str:
    """The bearer token form of a signing key: sha256 hex of its hex-decoded bytes."""
    return hashlib.sha256(bytes.fromhex(strip_prefix(key))).hexdigest()


def bearer_matches(token: str, keys: Sequence[str]) -> bool:
    """Whether a bearer token (hashed key, or the key itself, prefixed or not) names one of ``keys``."""
    presented = strip_prefix(token)
    for key in keys:
        bare = strip_prefix(key)
        if hmac.compare_digest(presented, hash_signing_key(bare)) or hmac.compare_digest(presented, bare):
            return True
    return False


def hash_event_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_signing_key() -> str:
    return f"signkey-prod-{secrets.token_hex(32)}"


def generate_event_key() -> str:
    return secrets.token_hex(32)
