"""``/v1/runs``: a run with its steps, and the actions on it (cancel, rerun)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from stepline import errors
from stepline.engine import views
from stepline.server import auth

router = APIRouter(prefix="/v1/runs")


def run_body(run: views.Run) -> dict[str, Any]:
    body = dataclasses.asdict(run)
    body["status"] = run.status.value
    return body


@router.get("/{run_id}")
async def get_run(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    run = await server.get_run(run_id)
    if run is None:
        raise errors.RunNotFoundError(f"no run {run_id!r}")
    return {"data": run_body(run)}


@router.post("/{run_id}/cancel")
async def cancel_run(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    cancelled = await server.cancel_run(run_id)
    return {"data": {"run_id": run_id, "cancelled": cancelled}}


@router.post("/{run_id}/rerun")
async def rerun(run_id: str, server: auth.ApiServer) -> dict[str, Any]:
    return {"data": {"run_id": await server.rerun(run_id), "rerun_of": run_id}}
