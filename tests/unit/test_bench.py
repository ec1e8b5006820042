"""The benchmark harness's arithmetic, load loops, report and domain race."""

from __future__ import annotations

import asyncio
import math
import os
import time
from uuid import uuid4

import pytest

from bench import data, domain, raw, report
from bench.harness import metric
from bench.load import closed_loop, open_loop
from bench.procmon import ProcessMonitor, cpu_seconds
from bench.results import SCALES, Figure, Results
from bench.stats import (
    Spread,
    arrival_times,
    meets,
    percentile,
    rate_from_progress,
    ratios,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]

    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


def test_spread_is_median_and_range_of_finite_values() -> None:
    spread = Spread.of([0.5, math.nan, 0.9, 0.7])

    assert (spread.median, spread.low, spread.high) == (0.7, 0.5, 0.9)
    assert spread.format() == "0.70 [0.50, 0.90]"
    assert Spread.of([]).format() == "n/a"


def test_ratios_pair_rounds_and_refuse_unpaired_runs() -> None:
    assert ratios([50.0, 30.0], [100.0, 60.0]) == [0.5, 0.5]
    assert math.isnan(ratios([1.0], [0.0])[0])
    with pytest.raises(ValueError, match="as many"):
        ratios([1.0, 2.0], [1.0])


def test_rate_counts_from_the_first_progress_point() -> None:
    # 100 items were done before the first point (start-up, first batch):
    # the rate covers only what happened between the points.
    assert rate_from_progress([(10.0, 100), (12.0, 500), (14.0, 900)]) == 200.0
    assert math.isnan(rate_from_progress([(1.0, 10)]))
    assert math.isnan(rate_from_progress([(1.0, 10), (1.0, 10)]))


def test_arrivals_are_evenly_spaced_at_the_rate() -> None:
    assert arrival_times(4.0, 3, start=1.0) == [1.0, 1.25, 1.5]
    with pytest.raises(ValueError, match="positive"):
        arrival_times(0.0, 3)


def test_goals_read_at_least_and_at_most() -> None:
    assert meets(0.5, 0.5, at_least=True)
    assert not meets(0.49, 0.5, at_least=True)
    assert meets(240.0, 250.0, at_least=False)
    assert not meets(math.nan, 1.0, at_least=False)


async def test_closed_loop_keeps_concurrency_in_flight_and_counts_errors() -> None:
    in_flight = 0
    most = 0

    async def call(n: int) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if n % 5 == 0:
            raise RuntimeError(f"refused {n}")

    run = await closed_loop(call, list(range(20)), concurrency=4)

    assert most == 4
    assert run.count == 16
    assert run.errors == 4
    assert run.first_error is not None
    assert "refused" in run.first_error
    assert run.throughput > 0


async def test_open_loop_charges_a_stall_to_every_call_behind_it() -> None:
    # One server that handles a call at a time, slower than calls arrive:
    # latency counted from when each call was due keeps growing.
    server = asyncio.Lock()

    async def call(_: int) -> None:
        async with server:
            await asyncio.sleep(0.02)

    run = await open_loop(call, list(range(10)), rate_per_s=100.0)

    assert run.count == 10
    assert run.sent_at[1] == pytest.approx(0.01)
    assert run.latencies_s[-1] > run.latencies_s[0] + 0.05


def test_process_monitor_accounts_cpu_per_phase() -> None:
    monitor = ProcessMonitor(interval_s=0.05)
    monitor.watch("me", os.getpid())
    monitor.start()
    monitor.phase("busy")
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    monitor.phase("idle")
    monitor.stop()

    phases = {name: usage for name, _, usage in monitor.report()}
    assert phases["busy"]["me"].cpu_s >= 0.2
    assert phases["busy"]["me"].peak_rss > 0
    assert (cpu_seconds(os.getpid()) or 0) > 0


def test_metric_sums_the_samples_of_one_name() -> None:
    page = (
        "# HELP nova_relay_published_events_total Events\n"
        "nova_relay_published_events_total 120.0\n"
        "nova_relay_published_events_created 1.7e9\n"
        'nova_consumer_lag{partition="0"} 3.0\n'
        'nova_consumer_lag{partition="1"} 4.0\n'
    )

    assert metric(page, "nova_relay_published_events_total") == 120.0
    assert metric(page, "nova_consumer_lag") == 7.0


def test_raw_writers_map_what_the_relay_publishes() -> None:
    user = uuid4()
    key, value, _ = data.created_messages(1, seed=1, user_id=user)[0]

    item = raw.read_model_item(value)
    doc = raw.search_document(value)

    assert item["pk"] == {"S": f"AUDIO#{key.decode()}"}
    assert item["user_id"] == {"S": str(user)}
    assert item["version"] == {"N": "1"}
    assert doc["_id"] == key.decode()
    assert doc["_version"] == 1


def test_event_items_are_distinct_audios_of_one_shape() -> None:
    user = uuid4()
    items = list(data.event_items(3, seed=5, user_id=user))
    again = list(data.event_items(3, seed=5, user_id=user))

    assert len({i["pk"]["S"] for i in items}) == 3
    assert {i["sk"]["S"] for i in items} == {"v0000000001"}
    assert all(i["aggregate_id"]["S"] in i["event_data"]["S"] for i in items)
    assert [i["pk"] for i in again] == [i["pk"] for i in items]


async def test_both_sides_of_the_domain_race_live_the_same_life() -> None:
    life = domain.lives(1, seed=3)[0]
    store = domain.NovaItems()

    assert await domain.nova_life(store, life) == "completed"
    assert domain.time_library([life]) > 0
    assert domain.time_library([life], encrypted=True) > 0

    stored = await store.load(life.audio_id)
    assert stored.version == 4
    assert stored.transcription is not None
    assert stored.transcription.text == life.text


async def test_the_sealed_race_stores_no_transcript_in_clear() -> None:
    life = domain.lives(1, seed=4)[0]
    store = domain.NovaItems(domain.sealing())

    assert await domain.nova_life(store, life) == "completed"

    items = store._streams[f"AudioFile#{life.audio_id}"]
    assert len(items) == 4
    assert not any(life.text in i["event_data"]["S"] for i in items)
    opened = await store.load(life.audio_id)
    assert opened.transcription is not None
    assert opened.transcription.text == life.text


def test_report_marks_misses_and_unmeasured_figures() -> None:
    results = Results(SCALES["small"])
    results.figures = [
        Figure("throughput", ">= 0.5 x", Spread(0.6, 0.5, 0.7), "x", True),
        Figure("lag p99", "<= 250 ms", Spread(300.0, 280.0, 320.0), "ms", False),
        Figure("encryption", "reported", Spread.of([]), "x", None, "issue 10"),
    ]
    results.add_run("raw_put", 100.0)

    text = report.markdown(results)

    assert "| throughput | >= 0.5 x | 0.60 [0.50, 0.70] x | pass |" in text
    assert "| lag p99 | <= 250 ms | 300 [280, 320] ms | **miss** |" in text
    assert "| encryption | reported | n/a | not measured | issue 10 |" in text
    assert "| raw_put | 100 [100, 100] | 1 |" in text


def test_an_unwatched_process_keeps_its_cpu_and_ignores_its_pid() -> None:
    monitor = ProcessMonitor(interval_s=0.05)
    monitor.watch("me", os.getpid())
    monitor.start()
    monitor.phase("busy")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    monitor.unwatch("me")
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    monitor.stop()

    usage = {name: u for name, _, u in monitor.report()}["busy"]["me"]
    assert 0.15 <= usage.cpu_s < 0.45
