"""The relay's rules, with fakes for the stream, the broker and the lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from nova_command_api.adapters.prometheus_metrics import PrometheusRelayMetrics
from nova_command_api.application.relay import (
    ChangeBatch,
    Checkpoint,
    OutboxRelay,
    Shard,
    read_order,
)
from nova_command_api.entrypoints import relay as relay_entrypoint
from nova_command_api.entrypoints.relay import main as relay_main
from nova_command_api.entrypoints.relay import utc_time
from nova_command_api.settings import CommandApiSettings
from nova_events import EventEnvelope, EventMetadata
from nova_platform.stopping import stop_task


def envelope(version: int, audio_id: UUID | None = None) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=audio_id or uuid4(),
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data={},
    )


WRITTEN = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class FakeFeed:
    """One shard whose records are `events`, two read at a time; positions are
    list indexes. Record i was written `i` seconds after `written_at`."""

    def __init__(
        self,
        events: list[EventEnvelope],
        shard_id: str = "shard-1",
        written_at: datetime = WRITTEN,
    ) -> None:
        self.events = events
        self.shard_id = shard_id
        self.written_at = written_at

    async def shards(self) -> list[Shard]:
        return [Shard(self.shard_id)]

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch:
        start = int(after or 0)
        batch = self.events[start : start + 2]
        oldest_at = self.written_at + timedelta(seconds=start) if batch else None
        return ChangeBatch(
            shard_id, batch, str(start + len(batch)), oldest_at=oldest_at
        )

    def forget(self) -> None:
        pass


class FakeBroker:
    """Commits events and checkpoint together, like a Kafka transaction."""

    def __init__(self) -> None:
        self.committed: list[EventEnvelope] = []
        self.checkpoints: dict[str, Checkpoint] = {}
        self.fail = False
        self.fenced = 0

    async def publish(
        self, events: Sequence[EventEnvelope], checkpoint: Checkpoint
    ) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        self.committed.extend(events)
        self.checkpoints[checkpoint.shard_id] = checkpoint

    async def load_checkpoints(self) -> dict[str, Checkpoint]:
        return dict(self.checkpoints)

    async def fence(self) -> None:
        self.fenced += 1


class FakeLease:
    def __init__(self, held: bool = True) -> None:
        self.held = held

    async def acquire(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.held = False


async def drain(relay: OutboxRelay) -> None:
    while await relay.run_once():
        pass


async def catch_up(relay: OutboxRelay, feed: FakeFeed, broker: FakeBroker) -> None:
    """Pass until the feed's end is checkpointed, even by passes that skip
    everything they read."""
    end = Checkpoint(feed.shard_id, str(len(feed.events)))
    for _ in range(len(feed.events) + 2):
        if broker.checkpoints.get(feed.shard_id) == end:
            return
        await relay.run_once()
    pytest.fail(f"the relay never checkpointed {end}: {broker.checkpoints}")


async def test_publishes_everything_once_with_its_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 6)]
    broker = FakeBroker()

    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events
    assert broker.checkpoints == {"shard-1": Checkpoint("shard-1", "5")}


async def test_a_failed_publish_moves_nothing_and_the_next_pass_resumes() -> None:
    events = [envelope(v) for v in range(1, 4)]
    broker = FakeBroker()
    relay = OutboxRelay(FakeFeed(events), broker, FakeLease())
    broker.fail = True

    with pytest.raises(ConnectionError):
        await relay.run_once()
    broker.fail = False
    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events


async def test_a_new_relay_resumes_from_the_committed_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 5)]
    broker = FakeBroker()
    await OutboxRelay(FakeFeed(events), broker, FakeLease()).run_once()

    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events


async def test_a_new_active_relay_fences_before_reading_checkpoints() -> None:
    broker = FakeBroker()
    relay = OutboxRelay(FakeFeed([envelope(1)]), broker, FakeLease())

    await drain(relay)

    assert broker.fenced == 1


async def test_a_standby_publishes_nothing() -> None:
    broker = FakeBroker()
    standby = OutboxRelay(FakeFeed([envelope(1)]), broker, FakeLease(held=False))

    assert await standby.run_once() == 0
    assert broker.committed == []


def test_children_wait_for_their_parent_shard() -> None:
    shards = [Shard("a"), Shard("b", parent_id="a"), Shard("c", parent_id="gone")]

    assert [s.shard_id for s in read_order(shards, {})] == ["a", "c"]
    done = {"a": Checkpoint("a", "9", closed=True)}
    assert [s.shard_id for s in read_order(shards, done)] == ["b", "c"]


class TwoShards:
    """Two `FakeFeed`s as the shards of one stream."""

    def __init__(self, first: FakeFeed, second: FakeFeed) -> None:
        self.feeds = {first.shard_id: first, second.shard_id: second}

    async def shards(self) -> list[Shard]:
        return [Shard(shard_id) for shard_id in self.feeds]

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch:
        return await self.feeds[shard_id].read(shard_id, after)

    def forget(self) -> None:
        pass


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now.timestamp()


class Scrape:
    """Reads the relay's metrics as Prometheus would."""

    def __init__(self, now: datetime) -> None:
        self.registry = CollectorRegistry()
        self.clock = Clock(now)
        self.metrics = PrometheusRelayMetrics(self.registry, clock=self.clock)

    def __getitem__(self, name: str) -> float:
        value = self.registry.get_sample_value(name)
        assert value is not None, f"{name} is not exported"
        return value

    @property
    def backlog(self) -> tuple[float, float]:
        return (
            self["nova_relay_pending_events"],
            self["nova_relay_oldest_unpublished_age_seconds"],
        )


async def test_the_backlog_gauges_keep_what_each_pass_found_unpublished() -> None:
    scrape = Scrape(WRITTEN + timedelta(seconds=100))
    events = [envelope(1) for _ in range(5)]
    relay = OutboxRelay(FakeFeed(events), FakeBroker(), FakeLease(), scrape.metrics)

    await relay.run_once()
    after_first = scrape.backlog
    await relay.run_once()
    after_second = scrape.backlog
    await relay.run_once()
    after_third = scrape.backlog
    await relay.run_once()

    # Records 0-1, then 2-3, then 4, written 0, 2 and 4 s after WRITTEN.
    assert after_first == (2, 100.0)
    assert after_second == (2, 98.0)
    assert after_third == (1, 96.0)
    assert scrape.backlog == (0, 0.0)
    assert scrape["nova_relay_published_events_total"] == 5


async def test_the_age_keeps_rising_while_the_relay_does_not_come_back() -> None:
    scrape = Scrape(WRITTEN + timedelta(seconds=10))
    feed = FakeFeed([envelope(1) for _ in range(3)])
    relay = OutboxRelay(feed, FakeBroker(), FakeLease(), scrape.metrics)
    await relay.run_once()

    scrape.clock.now += timedelta(seconds=50)

    assert scrape.backlog == (2, 60.0)


async def test_the_backlog_sums_the_shards_and_ages_by_the_oldest() -> None:
    scrape = Scrape(WRITTEN + timedelta(seconds=30))
    first = FakeFeed([envelope(1)], "shard-a")
    later = WRITTEN + timedelta(seconds=20)
    second = FakeFeed([envelope(1) for _ in range(4)], "shard-b", later)
    relay = OutboxRelay(
        TwoShards(first, second), FakeBroker(), FakeLease(), scrape.metrics
    )

    await relay.run_once()
    both = scrape.backlog
    await relay.run_once()
    only_b = scrape.backlog
    await relay.run_once()

    assert both == (3, 30.0)  # shard-a's record is the oldest
    assert only_b == (2, 8.0)  # shard-a found nothing; shard-b's from +22 s
    assert scrape.backlog == (0, 0.0)


async def test_a_standby_reports_no_backlog() -> None:
    scrape = Scrape(WRITTEN + timedelta(seconds=5))
    lease = FakeLease()
    feed = FakeFeed([envelope(1) for _ in range(3)])
    relay = OutboxRelay(feed, FakeBroker(), lease, scrape.metrics)
    await relay.run_once()

    lease.held = False
    await relay.run_once()

    assert scrape.backlog == (0, 0.0)
    assert scrape["nova_relay_active"] == 0


async def test_events_met_again_after_a_checkpoint_went_back_are_not_resent() -> None:
    scrape = Scrape(WRITTEN)
    audio_id = uuid4()
    events = [envelope(v, audio_id) for v in range(1, 5)]
    broker = FakeBroker()
    lease = FakeLease()
    feed = FakeFeed(events)
    relay = OutboxRelay(feed, broker, lease, scrape.metrics)
    await drain(relay)
    broker.checkpoints["shard-1"] = Checkpoint("shard-1", "1")  # lost progress
    lease.held = False
    await relay.run_once()  # a standby pass: the checkpoints are read again
    lease.held = True
    events.append(envelope(5, audio_id))

    await catch_up(relay, feed, broker)

    assert [e.version for e in broker.committed] == [1, 2, 3, 4, 5]
    assert broker.checkpoints["shard-1"] == Checkpoint("shard-1", "5")
    assert relay.duplicates == 3
    assert scrape["nova_relay_duplicate_events_total"] == 3
    assert scrape["nova_relay_published_events_total"] == 5


async def test_only_the_latest_publications_are_remembered() -> None:
    events = [envelope(1) for _ in range(4)]
    broker = FakeBroker()
    lease = FakeLease()
    feed = FakeFeed(events)
    relay = OutboxRelay(feed, broker, lease, remembered=3)
    await drain(relay)
    broker.checkpoints["shard-1"] = Checkpoint("shard-1", "0")
    lease.held = False
    await relay.run_once()
    lease.held = True

    await catch_up(relay, feed, broker)

    # The first was forgotten, so it goes again: at least once, as before.
    assert broker.committed == [*events, events[0]]
    assert relay.duplicates == 3


# stopping


class CancellationLosingLease(FakeLease):
    """Its first renewal lasts until cancelled and then returns normally, as a
    DynamoDB call can on Python 3.11 when the cancellation arrives as the call
    completes (aiobotocore bounds it with `asyncio.wait_for`); later ones
    answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.lost = 0

    async def acquire(self) -> bool:
        if not self.renewing.is_set():
            self.renewing.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.lost += 1
        return self.held


async def test_a_stopped_relay_ends_although_its_cancellation_was_lost() -> None:
    lease = CancellationLosingLease()
    relay = OutboxRelay(FakeFeed([]), FakeBroker(), lease, poll_interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await lease.renewing.wait()

    stop.set()
    task.cancel()  # lost inside the lease renewal
    done, _ = await asyncio.wait({task}, timeout=5)

    assert lease.lost == 1
    assert task in done, "the relay went on after its stop was set"
    assert not lease.held, "the lease is released on the way out"


class StuckRelay:
    """A relay stuck in a call that swallows its cancellation and never ends
    (a Kafka transaction that never completes), until the test releases it."""

    made: list[StuckRelay] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.running = asyncio.Event()
        self.released = asyncio.Event()
        self.cancellations = 0
        StuckRelay.made.append(self)

    async def run(self, stop: asyncio.Event) -> None:
        self.running.set()
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.cancellations += 1


async def test_the_relay_process_stops_within_its_bound_even_if_the_relay_is_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_entrypoint, "OutboxRelay", StuckRelay)
    monkeypatch.setattr(relay_entrypoint, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(
        relay_entrypoint, "stop_task", partial(stop_task, backstop_s=0.2)
    )
    app = relay_entrypoint.create_app(CommandApiSettings(jwt_secret="s" * 32))

    async def serve_then_stop(app: FastAPI) -> None:
        async with app.router.lifespan_context(app):
            await StuckRelay.made[-1].running.wait()

    started = time.monotonic()
    stopping = asyncio.create_task(serve_then_stop(app))
    done, _ = await asyncio.wait({stopping}, timeout=10)
    took = time.monotonic() - started
    relay = StuckRelay.made[-1]
    relay.released.set()  # let it go, or the session's event loop keeps it
    await asyncio.wait({app.state.relay_task}, timeout=5)

    assert stopping in done, "the lifespan waited for a relay that never ends"
    assert took < 5.0
    assert relay.cancellations == 1  # the backstop came, and was swallowed
    assert stopping.exception() is None


# the republish command's arguments


def test_republish_refuses_an_until_without_a_since(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        relay_main(["republish", "--aggregate", str(uuid4()), "--until", "2025-01-06"])

    assert exited.value.code == 2
    assert "--until only bounds --since" in capsys.readouterr().err


def test_republish_refuses_a_time_that_is_not_iso_8601(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        relay_main(["republish", "--since", "yesterday"])

    assert "'yesterday' is not an ISO 8601 time" in capsys.readouterr().err


def test_command_line_times_are_utc_and_naive_means_utc() -> None:
    assert utc_time("2025-01-06T18:00:00+09:00") == datetime(2025, 1, 6, 9, tzinfo=UTC)
    assert utc_time("2025-01-06T09:00") == datetime(2025, 1, 6, 9, tzinfo=UTC)
    assert utc_time("2025-01-06T09:00:00Z") == datetime(2025, 1, 6, 9, tzinfo=UTC)


def test_republish_refuses_a_range_that_ends_before_it_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        relay_main(
            [
                "republish",
                "--since",
                "2025-01-06T18:00:00+09:00",
                "--until",
                "2025-01-06T09:00",
            ]
        )

    assert "is not before --until" in capsys.readouterr().err
