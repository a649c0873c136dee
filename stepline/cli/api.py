"""The CLI's side of the server's HTTP API: addresses built safely, answers checked before use.

Whatever the user types becomes one quoted path segment: a run id like ``../tasks/<id>`` must
name no run, not reach another route. An answer is used only if it is a 2xx JSON object of the
expected shape; anything else (a redirect, a proxy's HTML page, another program on the port)
ends the command with one line saying what came back.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, NoReturn, TypeVar

import httpx

from stepline import errors
from stepline.cli import console
from stepline.protocol import signing

TIMEOUT_S = 30.0
_SHOWN = 300
"""Characters of a server's error text shown at most (a whole HTML page is not a reason)."""

SIGNING_KEY_HINT = "pass the server's signing key with --signing-key or STEPLINE_SIGNING_KEY"
EVENT_KEY_HINT = "pass one of the server's event keys with --event-key or STEPLINE_EVENT_KEY"

T = TypeVar("T")


def check_url(url: str, option: str, example: str, *, query: bool = False) -> str:
    """``url`` if it is an ``http(s)://host[:port][/path]`` address (with a query only when
    ``query``), without trailing slashes; exit 2 naming ``option`` otherwise."""
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018  (a port that is not a number raises here, not in the middle of a call)
    except ValueError as exc:
        console.fail(f"{option} must be an http(s) address such as {example} (got {url!r}: {exc})", console.BAD_INPUT)
    problem = _problem(parts, query)
    if problem:
        console.fail(
            f"{option} must be an http(s) address such as {example} (got {url!r}: {problem})", console.BAD_INPUT
        )
    return text.rstrip("/")


def _problem(parts: urllib.parse.SplitResult, query: bool) -> str:
    if parts.scheme not in ("http", "https"):
        return "it needs http:// or https://"
    if not parts.hostname:
        return "it has no host"
    if (parts.query and not query) or parts.fragment:
        return "it may not have a query or fragment"
    return ""


def server_url(url: str) -> str:
    """The ``--url`` of a command, checked (see ``check_url``)."""
    return check_url(url, "--url", "http://127.0.0.1:8288")


def path(*segments: str) -> str:
    """``/seg/seg`` with each segment quoted whole: a ``/`` or ``..`` in it stays inside it."""
    try:
        return "".join("/" + urllib.parse.quote(segment, safe="") for segment in segments)
    except UnicodeEncodeError:
        console.fail(f"{_printable(segments)} is not valid UTF-8 text", console.BAD_INPUT)


def query(params: dict[str, str]) -> str:
    try:
        return urllib.parse.urlencode(params)
    except UnicodeEncodeError:
        console.fail(f"{_printable(tuple(params.values()))} is not valid UTF-8 text", console.BAD_INPUT)


def _printable(values: tuple[str, ...]) -> str:
    bad = next((value for value in values if not _is_utf8(value)), values[0] if values else "")
    return ascii(bad)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request(
    method: str,
    url: str,
    *,
    signing_key: str | None = None,
    json_body: Any = None,
    auth_hint: str = SIGNING_KEY_HINT,
) -> dict[str, Any]:
    """The JSON object a 2xx answer carries; exits with one line for anything else."""
    headers = {}
    if signing_key:
        try:
            headers["Authorization"] = f"Bearer {signing.hash_signing_key(signing.validate_signing_key(signing_key))}"
        except errors.ConfigurationError as exc:
            console.fail(str(exc), console.BAD_INPUT)
    try:
        # Redirects are not followed: a server that redirects is not the API --url should name,
        # and following one to another host would hand it the bearer token.
        reply = httpx.request(method, url, json=json_body, headers=headers, timeout=TIMEOUT_S)
    except httpx.InvalidURL as exc:
        console.fail(f"--url is not a usable address ({url}): {exc}", console.BAD_INPUT)
    except httpx.HTTPError as exc:
        console.fail(f"cannot reach the Stepline server at {url}: {exc}")
    if not reply.is_success:
        console.fail(_refusal(reply, auth_hint))
    try:
        answer = reply.json()
    except ValueError:
        console.fail(f"the server at {url} answered {reply.status_code} with {_describe_body(reply)}, not JSON: {_ASK}")
    if not isinstance(answer, dict):
        unexpected(url, f"a JSON {_kind(answer)} instead of an object")
    return answer


_ASK = "is --url the address of a Stepline server?"


def _refusal(reply: httpx.Response, auth_hint: str) -> str:
    """The one line for a non-2xx answer: its status and the server's own reason."""
    status = reply.status_code
    if reply.is_redirect:
        where = reply.headers.get("location", "elsewhere")
        return f"server answered {status}, a redirect to {where}: point --url at the Stepline server itself"
    try:
        body = reply.json()
    except ValueError:
        body = None
    reason = ""
    if isinstance(body, dict):
        found = next((body[key] for key in ("error", "detail", "message") if body.get(key)), None)
        if found is not None:
            reason = found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))
    if not reason:
        reason = reply.text.strip() or reply.reason_phrase
    reason = _clip(" ".join(reason.split()))
    hint = f" ({auth_hint})" if status == 401 else ""
    return f"server answered {status}: {reason}{hint}"


def _describe_body(reply: httpx.Response) -> str:
    text = " ".join(reply.text.split())
    return f"{_clip(text)!r}" if text else "an empty body"


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


_JSON_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_NAMES.get(type(value), "number")


def unexpected(url: str, what: str) -> NoReturn:
    console.fail(f"unexpected answer from {url}: {what}; {_ASK[:-1]} of this version?")


def field(value: Any, key: str, kind: type[T], url: str) -> T:
    """``value[key]`` if ``value`` is an object and that is a ``kind``; exit 1 naming it otherwise."""
    if not isinstance(value, dict):
        unexpected(url, f"expected an object holding {key!r}, got a JSON {_kind(value)}")
    found = value.get(key)
    if (kind is int and isinstance(found, bool)) or not isinstance(found, kind):
        unexpected(url, f"{key!r} is missing or not a JSON {_JSON_NAMES.get(kind, kind.__name__)}")
    return found


def optional_str(value: dict[str, Any], key: str, url: str) -> str | None:
    found = value.get(key)
    if found is not None and not isinstance(found, str):
        unexpected(url, f"{key!r} is not a string")
    return found
