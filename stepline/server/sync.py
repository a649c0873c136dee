"""App sync: apps register their functions (``POST /fn/register``), or the server asks them to.

Out-of-band: the server (or anyone) sends ``PUT <serve url>``; the app answers by calling
``/fn/register``. In-band: with a signing key, the server's ``PUT`` carries
``X-Inngest-Sync-Kind: in_band`` and an app that supports it answers with its configuration
directly. Either way ``register`` validates everything before writing anything, records the
app and its functions in one transaction, and skips a payload identical to the last one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
import ulid

from stepline import errors
from stepline.engine import registry as registry_
from stepline.protocol import jsonvalue, signing
from stepline.server.errors import ApiError
from stepline.storage import records

if TYPE_CHECKING:
    from stepline.server.runtime import ServerRuntime

logger = logging.getLogger("stepline.sync")

MAX_FUNCTIONS = 1000


def _normalise_keys(payload: dict[str, Any]) -> dict[str, Any]:
    """SDKs disagree on casing (``appname`` vs ``appName``, ``deploy_type`` vs ``deployType``)."""
    return {str(key).lower().replace("_", ""): value for key, value in payload.items()}


def _checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(signing.canonical_json(payload)).hexdigest()


class Syncer:
    def __init__(self, runtime: ServerRuntime) -> None:
        self._runtime = runtime
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))

    async def close(self) -> None:
        await self._client.aclose()

    async def register(self, payload: object, expected_server_kind: str | None) -> dict[str, Any]:
        """Record an app and its functions; raises ``ApiError`` (nothing written) on bad input."""
        settings = self._runtime.settings
        if expected_server_kind and expected_server_kind != settings.server_kind:
            raise ApiError(
                400,
                f"the app expects a {expected_server_kind!r} server but this one runs in {settings.server_kind!r} "
                "mode: set STEPLINE_DEV (or INNGEST_DEV) on the app to match",
            )
        if not isinstance(payload, dict):
            raise ApiError(400, "the sync body must be a JSON object")
        try:
            jsonvalue.check_json(payload, "the sync body")  # it is stored, and hashed as canonical JSON
        except errors.SerializationError as exc:
            raise ApiError(400, str(exc)) from None
        fields = _normalise_keys(payload)
        app_id = fields.get("appname")
        url = fields.get("url")
        functions = fields.get("functions")
        if not isinstance(app_id, str) or not app_id:
            raise ApiError(400, "the sync body needs a non-empty 'appName'")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(400, f"app {app_id!r}: 'url' must be the app's http(s) serve URL")
        if not isinstance(functions, list) or len(functions) > MAX_FUNCTIONS:
            raise ApiError(400, f"app {app_id!r}: 'functions' must be a list of at most {MAX_FUNCTIONS}")
        specs = _specs(app_id, functions)
        checksum = _checksum(payload)
        previous = await self._runtime.store.get_app(app_id)
        if previous is not None and previous.checksum == checksum and previous.url == url:
            return {"ok": True, "modified": False, "app_id": app_id, "status": 200}
        now = self._runtime.clock.now_ms()
        async with self._runtime.store.transaction() as tx:
            await tx.upsert_app(
                records.AppRecord(
                    id=app_id,
                    url=url,
                    synced_at=now,
                    framework=_optional_str(fields.get("framework")),
                    sdk=_optional_str(fields.get("sdk")),
                    checksum=checksum,
                )
            )
            for spec in specs:
                await tx.upsert_function(records.FunctionRecord(spec.id, app_id, spec.name, spec.config, now))
            await tx.delete_functions_except(app_id, [spec.id for spec in specs])
        await self._runtime.reload_functions()
        logger.info("synced app %s (%d functions) from %s", app_id, len(specs), url)
        return {"ok": True, "modified": True, "app_id": app_id, "sync_id": str(ulid.ULID()), "status": 200}

    async def sync_url(self, url: str) -> dict[str, Any]:
        """Ask the app serving ``url`` to sync (in-band when the server has a signing key)."""
        settings = self._runtime.settings
        body = signing.canonical_json({"url": url})
        headers = {"Content-Type": "application/json", "X-Inngest-Server-Kind": settings.server_kind}
        if settings.signing_key:
            headers["X-Inngest-Sync-Kind"] = "in_band"
            headers[signing.SIGNATURE_HEADER] = signing.sign(body, settings.signing_key, int(time.time()))
        try:
            reply = await self._client.put(url, content=body, headers=headers)
        except httpx.InvalidURL as exc:
            raise ApiError(400, f"{url!r} is not a usable URL: {exc}") from None
        except httpx.HTTPError as exc:
            # Timeouts carry no message of their own; the class name is the reason.
            reason = str(exc) or type(exc).__name__
            raise ApiError(502, f"could not reach the app at {url}: {reason}") from None
        answer = _json(reply)
        if reply.headers.get("x-inngest-sync-kind") == "in_band" and reply.status_code == 200:
            if not isinstance(answer, dict):
                raise ApiError(502, f"the app at {url} sent an in-band sync that is not a JSON object")
            return await self.register(_from_in_band(answer), None)
        if reply.status_code >= 400 or (isinstance(answer, dict) and answer.get("error")):
            message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else answer
            raise ApiError(502, f"the app at {url} failed to sync (HTTP {reply.status_code}): {message}")
        if not 200 <= reply.status_code < 300 or not isinstance(answer, dict):
            # A redirect, a login page or any other non-SDK answer: the app did not sync.
            raise ApiError(502, f"the app at {url} did not answer the sync as an SDK does (HTTP {reply.status_code})")
        return {"ok": True, "status": 200, "app": answer}

    async def sync_configured_apps(self) -> None:
        """Sync the apps named at start; in dev mode keep re-syncing them (a no-op when unchanged)."""
        settings = self._runtime.settings
        if not settings.app_urls:
            return
        while True:
            for url in settings.app_urls:
                try:
                    await self.sync_url(url)
                except ApiError as exc:
                    logger.warning("%s", exc.message)
                except Exception:
                    # Keep re-syncing the other apps (and this one, once fixed) whatever went wrong.
                    logger.exception("syncing the app at %s failed", url)
            if not settings.dev:
                return
            await asyncio.sleep(settings.sync_interval_s)


def _specs(app_id: str, functions: list[Any]) -> list[registry_.FunctionSpec]:
    """The synced functions' specs; ``ApiError`` 400 naming the first that is not valid."""
    specs = []
    for config in functions:
        if not isinstance(config, dict):
            raise ApiError(400, f"app {app_id!r}: every function must be a JSON object")
        try:
            specs.append(registry_.FunctionSpec.from_config(config, app_id))
        except errors.ConfigurationError as exc:
            raise ApiError(400, f"app {app_id!r}: {exc}") from None
        if specs[-1].url is None:
            raise ApiError(400, f"app {app_id!r}: function {specs[-1].id!r} has no http(s) runtime URL")
    return specs


def _from_in_band(answer: dict[str, Any]) -> dict[str, Any]:
    language, version = answer.get("sdk_language"), answer.get("sdk_version")
    return {
        "appName": answer.get("app_id"),
        "url": answer.get("url"),
        "functions": answer.get("functions"),
        "framework": answer.get("framework"),
        "sdk": f"{language}:v{version}" if language and version else None,
    }


def _json(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError:
        return reply.text[:500]


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
