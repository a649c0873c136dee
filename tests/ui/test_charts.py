"""The overview's numbers: per-minute run counts, step duration percentiles, queue samples."""

from __future__ import annotations

from stepline.server.dashboard import charts
from stepline.storage import records, store
from tests.server import support
from tests.server.support import NOW_MS, Seed
from tests.ui.support import seed_failed_run


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert charts.percentile(values, 0.5) == 50
    assert charts.percentile(values, 0.99) == 99
    assert charts.percentile([7], 0.99) == 7
    assert charts.percentile([], 0.5) is None


async def test_overview_counts_the_last_hour_from_the_database(db: store.Store) -> None:
    now = NOW_MS + 30 * 60_000
    seeds = [
        Seed(status=records.RunStatus.COMPLETED, at=NOW_MS),
        Seed(status=records.RunStatus.COMPLETED, at=NOW_MS + 60_000),
        Seed(status=records.RunStatus.RUNNING, at=NOW_MS + 60_000),
        Seed(status=records.RunStatus.COMPLETED, at=NOW_MS - 2 * 3_600_000),  # too old
    ]
    await support.seed(db, seeds)
    await seed_failed_run(db)  # three steps: runs of 20 ms and 79 ms, and a 5 s sleep (not a step.run)
    sampler = charts.QueueSampler()

    overview = await charts.overview(db, sampler, now)

    assert overview.totals == {"started": 4, "completed": 2, "failed": 1, "cancelled": 0}
    assert overview.p50_ms == 20
    assert overview.p99_ms == 79
    assert overview.queue_now == charts.Sample(now, 0, 0, 0)
    assert [sample.at for sample in sampler.samples] == [now]
    started = overview.runs.series[0]
    assert started.name == "started"
    points = [tuple(map(float, point.split(","))) for point in started.points.split()]
    assert len(points) == 61  # a point a minute over the hour, the first minute partly in it
    assert all(0 <= x <= charts.WIDTH for x, _ in points)
    assert overview.runs.top == 2  # two runs started in each of two minutes
