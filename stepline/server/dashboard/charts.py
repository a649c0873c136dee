"""The overview: runs per minute, queue depth and the oldest ready item's age, step duration
percentiles over the last hour, drawn as inline SVG (no script, no library).

Runs and step durations come from the database (indexes of migration 0005), so every server
sharing it shows the same. The queue's history is not stored anywhere: each server samples its
depth every ``SAMPLE_S`` seconds while it runs and keeps the last hour in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Sequence

from stepline import errors
from stepline.storage import records, store

logger = logging.getLogger("stepline.dashboard")

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SAMPLE_S = 10.0
MAX_TIMINGS = 20_000
"""Step durations read per overview: the newest this many in the hour (percentiles of a sample)."""
WIDTH, HEIGHT = 600, 140


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    at: int
    depth: int
    ready: int
    oldest_age_ms: int


class QueueSampler:
    """The last hour of queue samples, taken every ``SAMPLE_S`` s by ``run``."""

    def __init__(self) -> None:
        self.samples: collections.deque[Sample] = collections.deque(maxlen=int(3600 / SAMPLE_S) + 1)

    async def sample(self, db: store.Store, now: int) -> Sample:
        ready = await db.ready_queue(now)
        depth = await db.count_queue()
        age = 0 if ready.oldest_ready_at is None else max(0, now - ready.oldest_ready_at)
        taken = Sample(now, depth, ready.ready, age)
        self.samples.append(taken)
        return taken

    async def run(self, db: store.Store, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample(db, time.time_ns() // 1_000_000)
            except errors.StorageError as exc:
                logger.warning("could not sample the queue: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str
    points: str
    """SVG polyline points, ``x,y x,y ...`` in the chart's viewBox."""
    last: float


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    series: list[Series]
    top: float
    """The value at the top of the chart."""
    width: int = WIDTH
    height: int = HEIGHT


@dataclasses.dataclass(frozen=True, slots=True)
class Overview:
    start: int
    end: int
    runs: Chart
    queue: Chart
    age: Chart
    steps: Chart
    totals: dict[str, int]
    queue_now: Sample
    p50_ms: int | None
    p99_ms: int | None


def percentile(values: Sequence[int], fraction: float) -> int | None:
    """The nearest-rank percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _chart(title: str, unit: str, start: int, end: int, lines: list[tuple[str, str, list[tuple[int, float]]]]) -> Chart:
    top = max([1.0, *(value for _, _, points in lines for _, value in points)])
    span = max(1, end - start)
    series = []
    for name, css, points in lines:
        xy = [
            (WIDTH * max(0, at - start) / span, HEIGHT - 4 - (HEIGHT - 8) * value / top) for at, value in sorted(points)
        ]
        if len(xy) == 1:  # one sample is a dot; draw it as a short dash so it shows
            xy.insert(0, (max(0.0, xy[0][0] - 4), xy[0][1]))
        series.append(Series(name, css, " ".join(f"{x:.1f},{y:.1f}" for x, y in xy), points[-1][1] if points else 0))
    return Chart(title, unit, series, top)


def _per_minute(counts: Sequence[records.MinuteCount], what: str, start: int, end: int) -> list[tuple[int, float]]:
    by_minute = {count.minute: count.count for count in counts if count.what == what}
    first = start - start % MINUTE_MS
    return [(minute, float(by_minute.get(minute, 0))) for minute in range(first, end, MINUTE_MS)]


async def overview(db: store.Store, sampler: QueueSampler, now: int) -> Overview:
    start = now - HOUR_MS
    counts = await db.runs_per_minute(start)
    timings = await db.step_timings(start, MAX_TIMINGS)
    current = await sampler.sample(db, now)
    kinds = [("started", "s-started"), ("completed", "s-completed"), ("failed", "s-failed")]
    runs = _chart("Runs per minute", "runs", start, now, [(w, c, _per_minute(counts, w, start, now)) for w, c in kinds])
    samples = [sample for sample in sampler.samples if sample.at >= start]
    queue = _chart(
        "Queue depth",
        "items",
        start,
        now,
        [
            ("all items", "s-started", [(s.at, float(s.depth)) for s in samples]),
            ("ready", "s-failed", [(s.at, float(s.ready)) for s in samples]),
        ],
    )
    age = _chart(
        "Age of the oldest ready item",
        "s",
        start,
        now,
        [("age", "s-failed", [(s.at, s.oldest_age_ms / 1000) for s in samples])],
    )
    by_minute: dict[int, list[int]] = collections.defaultdict(list)
    for timing in timings:
        by_minute[timing.ended_at - timing.ended_at % MINUTE_MS].append(timing.duration)
    minutes = range(start - start % MINUTE_MS, now, MINUTE_MS)
    p50_line = [(minute, float(percentile(by_minute.get(minute, []), 0.5) or 0)) for minute in minutes]
    p99_line = [(minute, float(percentile(by_minute.get(minute, []), 0.99) or 0)) for minute in minutes]
    steps = _chart("Step duration", "ms", start, now, [("p50", "s-completed", p50_line), ("p99", "s-failed", p99_line)])
    totals = {
        what: sum(c.count for c in counts if c.what == what) for what in ("started", "completed", "failed", "cancelled")
    }
    durations = [timing.duration for timing in timings]
    return Overview(
        start=start,
        end=now,
        runs=runs,
        queue=queue,
        age=age,
        steps=steps,
        totals=totals,
        queue_now=current,
        p50_ms=percentile(durations, 0.5),
        p99_ms=percentile(durations, 0.99),
    )


@contextlib.asynccontextmanager
async def sampling(sampler: QueueSampler, db: store.Store) -> collections.abc.AsyncIterator[None]:
    """Sample the queue while the block runs. On exit the loop is told to stop, then cancelled
    until it ends: psycopg_pool can swallow a cancellation that arrives while it hands out a
    connection, and a single ``cancel()`` would then leave shutdown waiting for ever."""
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(db, stop), name="stepline-queue-sampler")
    try:
        yield
    finally:
        stop.set()
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("the queue sampler failed: %s", task.exception())
