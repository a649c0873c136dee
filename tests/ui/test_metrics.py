"""``GET /metrics``: queue gauges read at scrape time, engine counters as runs end and steps are recorded."""

from __future__ import annotations

import re
from datetime import timedelta

import stepline
from stepline.engine import observe
from stepline.testing import TestEngine
from tests.server import support
from tests.ui.support import APP_CONFIG


def sample(name: str, **labels: str) -> float:
    return observe.REGISTRY.get_sample_value(name, labels) or 0.0


def value(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{name} is not in the metrics"
    return float(found.group(1))


async def test_metrics_report_the_queue_and_ended_runs(server: support.Server) -> None:
    before = (await server.client.get("/metrics")).text
    cancelled_before = value(before, 'stepline_runs_ended_total{status="cancelled"}') if "cancelled" in before else 0.0
    assert (await server.client.post("/fn/register", json=APP_CONFIG)).status_code == 200
    run_ids = (await server.client.post("/e/k", json={"name": "shop/signup"})).json()["run_ids"]

    scraped = await server.client.get("/metrics")

    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert value(scraped.text, "stepline_queue_depth") == 2  # two runs waiting for an app that is down
    assert "stepline_queue_oldest_ready_age_seconds" in scraped.text
    assert (await server.client.post(f"/v1/runs/{run_ids[0]}/cancel")).status_code == 200
    after = (await server.client.get("/metrics")).text
    assert value(after, 'stepline_runs_ended_total{status="cancelled"}') == cancelled_before + 1
    assert value(after, "stepline_queue_depth") == 1


async def test_steps_and_runs_are_counted_and_traced(database_url: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = stepline.Stepline(app_id="observed")

    @client.function(id="two-steps", trigger=stepline.on_event("test/observed"), retries=0)
    async def two_steps(ctx: stepline.Context) -> int:
        one = await ctx.step.run("one", lambda: 1)
        await ctx.step.sleep("nap", timedelta(seconds=2))
        return await ctx.step.run("two", lambda: one + 1)

    runs_before = sample("stepline_runs_ended_total", status="completed")
    steps_before = sample("stepline_step_duration_seconds_count", kind="run")
    assert observe.enable_tracing(provider)
    try:
        async with TestEngine(client, [two_steps], database_url=database_url) as engine:
            sent = await engine.send(stepline.Event("test/observed"))
            await engine.advance(timedelta(seconds=5))
            run = await engine.wait_for_run(sent.run_ids[0])
    finally:
        observe.disable_tracing()

    assert run.output == 2
    assert sample("stepline_runs_ended_total", status="completed") == runs_before + 1
    assert sample("stepline_step_duration_seconds_count", kind="run") == steps_before + 2
    assert sample("stepline_step_duration_seconds_count", kind="sleep") >= 1
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"step one", "step nap", "step two", "run observed-two-steps"}
    traces = {span.context.trace_id for span in spans.values()}
    assert len(traces) == 1  # one trace per run
    nap = spans["step nap"]
    assert nap.end_time is not None
    assert nap.start_time is not None
    assert nap.end_time - nap.start_time >= 2_000_000_000  # the fake clock's 2 s
    assert dict(spans["run observed-two-steps"].attributes or {})["stepline.run_id"] == run.id


def test_the_otel_setting_turns_tracing_on() -> None:
    from stepline.server import app as app_
    from stepline.server import settings as settings_

    assert not observe.tracing_enabled()
    try:
        app_.create_app(settings_.ServerSettings(dev=True, database_url="sqlite:///unused.db", otel=True))
        assert observe.tracing_enabled()
    finally:
        observe.disable_tracing()
    app_.create_app(settings_.ServerSettings(dev=True, database_url="sqlite:///unused.db"))
    assert not observe.tracing_enabled()
