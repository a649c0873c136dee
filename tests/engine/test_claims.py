"""The executor claims when there is work to claim: a claim that leased fewer items than it asked
for is followed by a wait (the next commit that schedules work ends it), not by another claim,
and on PostgreSQL a server's own NOTIFY does not wake it a second time. Every claim costs a round
trip to the database. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

import stepline
from stepline.storage import records

RUNS = 8


async def test_runs_one_after_another_cost_no_claim_that_finds_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = stepline.Stepline(app_id="claims")

    @client.function(id="two-steps", trigger=stepline.on_event("test/claims"))
    async def two_steps(ctx: stepline.Context) -> int:
        first = await ctx.step.run("first", lambda: 1)
        second = await ctx.step.run("second", lambda: 2)
        return first + second

    # A poll far away: only wake-ups make the executor claim during the test.
    async with stepline.Engine(
        client, [two_steps], database_url=database_url, poll_interval=timedelta(seconds=60)
    ) as engine:
        claim = engine.store.claim_and_peek
        leased: list[int] = []

        async def counted(now: int, limit: int, lease_until: int) -> records.ClaimedItems:
            claimed = await claim(now, limit, lease_until)
            leased.append(len(claimed.items))
            return claimed

        monkeypatch.setattr(engine.store, "claim_and_peek", counted)
        for n in range(RUNS):
            sent = await engine.send(stepline.Event("test/claims", {"n": n}))
            run = await engine.wait_for_run(sent.run_ids[0])
            assert run.status == "completed"
            assert run.output == 3

    # Each run is one item here (its steps checkpoint inline). A connection's first NOTIFY may
    # still wake its own store once (its backend is learnt at first use): a little slack.
    assert sum(leased) == RUNS, leased
    assert leased.count(0) <= 2, f"{leased.count(0)} of {len(leased)} claims found nothing: {leased}"
