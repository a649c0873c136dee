"""The read verbs of the ``Store`` behind ``GET /v1/runs`` and ``GET /v1/events``, on each backend."""

from __future__ import annotations

import random

import ulid

from stepline.storage import records, store
from tests.server import support
from tests.server.support import DAY_MS, NOW_MS, Seed

FAILED = records.RunStatus.FAILED
COMPLETED = records.RunStatus.COMPLETED


async def walk(
    db: store.Store,
    limit: int,
    *,
    function_id: str | None = None,
    status: records.RunStatus | None = None,
    created_after: int | None = None,
) -> list[list[str]]:
    """Every page of ``list_runs`` with these filters, following the last id as the cursor."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await db.list_runs(
            function_id=function_id, status=status, created_after=created_after, cursor=cursor, limit=limit
        )
        if not page:
            return pages
        pages.append([run.id for run in page])
        cursor = page[-1].id


def flat(pages: list[list[str]]) -> list[str]:
    return [run_id for page in pages for run_id in page]


def test_id_floor_is_the_smallest_ulid_of_its_millisecond() -> None:
    for millis in (1, 1_700_000_000_123, 2**48 - 1):
        assert records.IdRange.floor(millis) == str(ulid.ULID.from_bytes(millis.to_bytes(6, "big") + bytes(10)))
    made = ulid.ULID()
    assert records.IdRange.floor(made.milliseconds) <= str(made) < records.IdRange.floor(made.milliseconds + 1)
    assert records.IdRange.floor(0) == ""
    assert records.IdRange.floor(2**48) == records.IdRange.MAX
    assert records.IdRange.page("01CURSOR", 5, 10).upper == records.IdRange.floor(10)
    assert records.IdRange.page("00000000000000000000000001", 5, 10).upper == "00000000000000000000000001"


async def test_pages_hold_every_run_once_newest_first(db: store.Store) -> None:
    rng = random.Random(3)
    seeds = [Seed(at=NOW_MS - rng.randrange(10 * DAY_MS)) for _ in range(53)]
    runs = await support.seed(db, seeds)

    pages = await walk(db, limit=10)

    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 3]
    assert flat(pages) == support.newest_first(runs)
    assert await db.list_runs(limit=0) == []
    full = await db.list_runs(limit=500)
    assert [run.id for run in full] == support.newest_first(runs)
    assert full[0] == max(runs, key=lambda run: run.id)  # whole records, JSON decoded


async def test_filters_combine_and_page(db: store.Store) -> None:
    seeds = [
        Seed(function_id=f"shop-fn{index % 3}", status=FAILED if index % 4 == 0 else COMPLETED, at=NOW_MS + index)
        for index in range(40)
    ]
    runs = await support.seed(db, seeds)

    def expected(keep: object) -> list[str]:
        return support.newest_first([run for run in runs if keep(run)])  # type: ignore[operator]

    by_function = await walk(db, 4, function_id="shop-fn1")
    assert flat(by_function) == expected(lambda run: run.function_id == "shop-fn1")
    by_status = await walk(db, 3, status=FAILED)
    assert flat(by_status) == expected(lambda run: run.status is FAILED)
    both = await walk(db, 2, function_id="shop-fn0", status=FAILED)
    assert flat(both) == expected(lambda run: run.function_id == "shop-fn0" and run.status is FAILED)
    assert both  # the combination is not empty
    assert await db.list_runs(function_id="shop-nothing") == []
    assert await db.list_runs(status=records.RunStatus.CANCELLED) == []

    target = runs[7]
    assert [run.id for run in await db.list_runs(event_id=target.event_id)] == [target.id]
    assert await db.list_runs(event_id=target.event_id, status=records.RunStatus.QUEUED) == []
    assert await db.list_runs(event_id=target.event_id, function_id=target.function_id) != []
    assert await db.list_runs(event_id=target.event_id, function_id="shop-other") == []


async def test_creation_windows_follow_the_time_in_the_id(db: store.Store) -> None:
    runs = await support.seed(db, [Seed(at=NOW_MS + offset) for offset in (0, 10, 20, 30, 40)])

    window = await db.list_runs(created_after=NOW_MS + 10, created_before=NOW_MS + 30)
    assert [run.created_at for run in window] == [NOW_MS + 20, NOW_MS + 10]  # after inclusive, before exclusive
    assert [run.created_at for run in await db.list_runs(created_after=NOW_MS + 31)] == [NOW_MS + 40]
    assert [run.created_at for run in await db.list_runs(created_before=NOW_MS + 1)] == [NOW_MS]
    assert await db.list_runs(created_after=NOW_MS + 41) == []
    assert await db.list_runs(created_before=0) == []
    assert len(await db.list_runs(created_after=-5, created_before=2**60)) == len(runs)
    pages = await walk(db, 1, created_after=NOW_MS + 10, function_id="shop-welcome", status=COMPLETED)
    assert flat(pages) == [run.id for run in sorted(runs[1:], key=lambda run: run.id, reverse=True)]


async def test_events_page_by_name_and_are_found_by_public_id(db: store.Store) -> None:
    seeds = [Seed(event_name=f"shop/e{index % 2}", at=NOW_MS + index) for index in range(9)]
    seeds += [Seed(public_id="order-1", at=NOW_MS + 100), Seed(public_id="order-1", at=NOW_MS + 200)]
    runs = await support.seed(db, seeds)

    everything: list[str] = []
    cursor = None
    while page := await db.list_events(cursor=cursor, limit=4):
        everything += [event.internal_id for event in page]
        cursor = page[-1].internal_id
    assert everything == sorted((run.event_id for run in runs), reverse=True)

    named = await db.list_events(name="shop/e1", limit=500)
    assert [event.data["n"] for event in named] == [7, 5, 3, 1]
    assert [event.internal_id for event in await db.list_events(name="shop/e1", cursor=named[1].internal_id)] == [
        named[2].internal_id,
        named[3].internal_id,
    ]
    assert await db.list_events(name="shop/none") == []

    found = await db.events_by_public_id("order-1")
    assert [event.internal_id for event in found] == [runs[-1].event_id, runs[-2].event_id]
    assert [event.internal_id for event in await db.events_by_public_id("order-1", limit=1)] == [runs[-1].event_id]
    assert await db.events_by_public_id("order-2") == []
