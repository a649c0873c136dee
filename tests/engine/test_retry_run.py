"""Retrying a failed run from its failed step: earlier results are kept, never run again."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

import stepline
from stepline import errors
from stepline.storage.records import RunStatus
from stepline.testing import TestEngine
from tests.engine.support import get_run, start, step_named, step_names


def make(calls: Counter[str], fail: dict[str, bool]) -> tuple[stepline.Stepline, stepline.Function]:
    client = stepline.Stepline(app_id="retry-run")

    def fetch() -> dict[str, int]:
        calls["fetch"] += 1
        return {"rows": 3}

    def charge(rows: int) -> str:
        calls["charge"] += 1
        if fail["charge"]:
            raise stepline.NonRetriableError("payment API down")
        return f"charged {rows}"

    def notify(text: str) -> str:
        calls["notify"] += 1
        return text.upper()

    @client.function(id="bill", trigger=stepline.on_event("test/bill"), retries=0)
    async def bill(ctx: stepline.Context) -> list[str]:
        fetched = await ctx.step.run("fetch", fetch)
        await ctx.step.sleep("settle", timedelta(minutes=5))
        charged = await ctx.step.run("charge", charge, fetched["rows"])
        return [charged, await ctx.step.run("notify", notify, charged)]

    return client, bill


async def test_retry_keeps_earlier_results_and_runs_the_failed_step_again(database_url: str) -> None:
    calls: Counter[str] = Counter()
    fail = {"charge": True}
    client, bill = make(calls, fail)
    async with TestEngine(client, [bill], database_url=database_url) as engine:
        failed_id = await start(engine, "test/bill")
        await engine.advance(timedelta(minutes=10))
        failed = await get_run(engine, failed_id)
        assert failed.status is RunStatus.FAILED
        assert calls == {"fetch": 1, "charge": 1}

        fail["charge"] = False
        retry_id = await engine.retry_run(failed_id)
        await engine.run_until_idle()  # no sleep to wait for: it was kept
        retried = await get_run(engine, retry_id)

    assert retry_id != failed_id
    assert retried.status is RunStatus.COMPLETED
    assert retried.output == ["charged 3", "CHARGED 3"]
    assert calls == {"fetch": 1, "charge": 2, "notify": 1}  # fetch was not run again
    assert step_names(retried) == ["fetch", "settle", "charge", "notify"]
    assert step_named(retried, "fetch").output == {"rows": 3}
    assert step_named(retried, "fetch").started_at == step_named(failed, "fetch").started_at
    assert retried.event == failed.event


async def test_only_a_failed_run_can_be_retried(database_url: str) -> None:
    calls: Counter[str] = Counter()
    client, bill = make(calls, {"charge": False})
    async with TestEngine(client, [bill], database_url=database_url) as engine:
        run_id = await start(engine, "test/bill")
        await engine.run_until_idle()  # asleep
        with pytest.raises(errors.RunStateError, match="running: only a failed run"):
            await engine.retry_run(run_id)
        with pytest.raises(errors.RunNotFoundError):
            await engine.retry_run("01J0000000000000000000000")
        await engine.advance(timedelta(minutes=10))
        assert (await get_run(engine, run_id)).status is RunStatus.COMPLETED
        with pytest.raises(errors.RunStateError, match="completed"):
            await engine.retry_run(run_id)
