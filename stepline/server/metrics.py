"""``GET /metrics``: Prometheus text format.

The engine's counters and histograms (``engine.observe``) plus gauges read from the database
at scrape time: queue depth, ready items and the age of the oldest ready one. Beyond
127.0.0.1 it needs ``Authorization: Bearer <dashboard token or signing key>``.
"""

from __future__ import annotations

import prometheus_client
from fastapi import APIRouter, Request
from starlette.responses import Response

from stepline.engine import observe
from stepline.protocol import signing
from stepline.server import auth
from stepline.server import runtime as runtime_
from stepline.server.errors import ApiError

router = APIRouter(include_in_schema=False)


def _allowed(request: Request, runtime: runtime_.ServerRuntime) -> bool:
    settings = runtime.settings
    if settings.is_local_only:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    token = given.strip() if scheme.lower() == "bearer" else ""
    return bool(token) and (
        auth.dashboard_token_matches(settings.dashboard_token, token)
        or signing.bearer_matches(token, settings.signing_keys)
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    runtime = auth.runtime_of(request)
    if not _allowed(request, runtime):
        raise ApiError(
            401,
            "send 'Authorization: Bearer <dashboard token or signing key>' to read metrics from beyond this machine",
            headers={"WWW-Authenticate": "Bearer"},
        )
    now = runtime.clock.now_ms()
    ready = await runtime.store.ready_queue(now)
    depth = await runtime.store.count_queue()
    gauges = prometheus_client.CollectorRegistry(auto_describe=True)
    prometheus_client.Gauge("stepline_queue_depth", "Queue items (ready, leased or scheduled).", registry=gauges).set(
        depth
    )
    prometheus_client.Gauge("stepline_queue_ready", "Queue items claimable now.", registry=gauges).set(ready.ready)
    prometheus_client.Gauge(
        "stepline_queue_oldest_ready_age_seconds", "How long the oldest claimable item has waited.", registry=gauges
    ).set(0 if ready.oldest_ready_at is None else max(0, now - ready.oldest_ready_at) / 1000)
    body = prometheus_client.generate_latest(observe.REGISTRY) + prometheus_client.generate_latest(gauges)
    return Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)
