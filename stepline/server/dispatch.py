"""Calling functions in apps over HTTP: signed JCS request, response read as the protocol says.

A call is ``POST <serve url>?fnId=<id>&stepId=<step|hash>`` with the execution request as
JCS-canonical JSON, signed when the server has a signing key. The response becomes the same
``CallResponse`` the in-process transport returns, and ``responses.interpret`` decides what
it means; a network failure or a response that did not come from an SDK is a retriable error.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import ulid

from stepline.engine import dispatch
from stepline.engine import registry as registry_
from stepline.protocol import jsonvalue, models, responses, signing

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


def call_url(base: str, function_id: str, step_id: str) -> str:
    """``base`` with ``fnId`` and ``stepId`` set (replacing any already there)."""
    parts = urllib.parse.urlsplit(base)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update({"fnId": function_id, "stepId": step_id})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _unreachable(message: str) -> responses.CallResponse:
    # Reported as an SDK response so that its message reaches the run; retriable.
    return responses.CallResponse(502, models.error_body("AppUnreachable", message))


class HttpTransport:
    """Server -> app calls. aiohttp rather than httpx here: on this hot path httpx's per-request
    overhead was most of the server's CPU (profiled with py-spy; see bench/README.md)."""

    supports_checkpoints = False

    def __init__(self, *, signing_key: str | None, timeout_s: float) -> None:
        self._signing_key = signing_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10.0)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (aiohttp binds a session to its loop).
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        spec: registry_.FunctionSpec,
        request: models.ExecutionRequest,
        checkpointer: dispatch.CallCheckpointer | None,
    ) -> responses.CallResponse:
        if spec.url is None:
            return _unreachable(f"function {spec.id!r} has no serve URL: sync its app again")
        step_id = request.ctx.step_id
        url = call_url(spec.url, spec.id, step_id)
        # The signature covers the JCS-canonical body, which costs a quarter of a call's CPU in
        # Python; unsigned (dev) calls send pydantic's own JSON, which the SDKs read the same.
        if self._signing_key:
            body = signing.canonical_json(request.model_dump(mode="json"))
        else:
            body = request.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "X-Run-ID": request.ctx.run_id,
            "X-Request-ID": str(ulid.ULID()),
            "X-Inngest-Step-ID": step_id,
            "X-Inngest-Req-Version": "2",
        }
        if self._signing_key:
            headers[signing.SIGNATURE_HEADER] = signing.sign(body, self._signing_key, int(time.time()))
        try:
            async with self._client().post(url, data=body, headers=headers) as reply:
                content = await reply.content.read(MAX_RESPONSE_BYTES + 1)
                status, reply_headers = reply.status, {key.lower(): value for key, value in reply.headers.items()}
        except TimeoutError:
            return _unreachable(f"the app at {spec.url} did not answer in time")
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            return _unreachable(f"could not reach the app at {spec.url}: {exc or type(exc).__name__}")
        return parse_reply(status, reply_headers, content)


def parse_reply(status: int, headers: Mapping[str, str], content: bytes) -> responses.CallResponse:
    """An SDK's HTTP answer as a ``CallResponse`` (unwrapping a streamed ``201`` reply).

    ``headers`` has lower-case names.
    """
    if len(content) > MAX_RESPONSE_BYTES:
        return _unreachable(f"the app's response is over the {MAX_RESPONSE_BYTES}-byte limit")
    body = _json_or_text(content)
    if status == 201 and isinstance(body, dict) and "status" in body:
        # Streaming: keep-alive spaces, then {"status", "headers", "body"} (body maybe a JSON string).
        headers = {str(key).lower(): str(value) for key, value in (body.get("headers") or {}).items()}
        status = int(body["status"])
        inner = body.get("body")
        body = _json_or_text(inner.encode()) if isinstance(inner, str) else inner
    version = headers.get("x-inngest-req-version")
    sdk = headers.get("x-inngest-sdk")
    if sdk is None and headers.get("x-inngest-sdk-handled"):
        sdk = "unknown"  # an SDK that sends only this header on refusals (the Python SDK's 401)
    if status == 401 and sdk is not None:
        body = models.error_body(
            "SignatureRejected",
            "the app refused the server's request signature (HTTP 401): give the app and the server the same "
            "signing key (STEPLINE_SIGNING_KEY / INNGEST_SIGNING_KEY on the app, --signing-key on the server)",
        )
    return responses.CallResponse(
        status=status,
        body=body,
        no_retry=headers.get("x-inngest-no-retry", "").lower() == "true",
        retry_after=headers.get("retry-after"),
        sdk=sdk,
        request_version=int(version) if version and version.isdigit() else None,
    )


def _json_or_text(content: bytes) -> Any:
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return jsonvalue.loads(text)
    except ValueError:
        return text[:2000]
