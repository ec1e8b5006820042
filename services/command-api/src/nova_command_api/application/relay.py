"""The outbox relay: every committed event reaches Kafka exactly once, in order.

The event store's change stream is the outbox. For each shard the relay reads
from its checkpoint and publishes the events *and the new checkpoint* in one
Kafka transaction, so a relay killed at any moment either published a batch
and its checkpoint, or neither: nothing is lost and nothing is doubled for
`read_committed` readers.

Order: an aggregate's version n+1 is only appended after version n was
committed (the command handler read it), so n's stream record precedes n+1's
in the stream; shards are read parents first, as DynamoDB Streams asks. No
wall clock is involved, so command-api replicas whose clocks disagree do not
matter. One relay instance is active at a time (a lease); a second one waits
as a standby, and Kafka fences a stale one out by its transactional id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import EventEnvelope

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a shard is published; `closed` once a closed shard is done."""

    shard_id: str
    position: str | None
    closed: bool = False


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Events read from one shard and the position after the last record."""

    shard_id: str
    events: Sequence[EventEnvelope]
    position: str | None
    closed: bool = False
    oldest_at: datetime | None = None


class ChangeFeed(Protocol):
    async def shards(self) -> list[Shard]: ...

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch: ...

    def forget(self) -> None:
        """Drop read positions held in memory; the next read starts from `after`."""
        ...


class Publisher(Protocol):
    async def publish(
        self, events: Sequence[EventEnvelope], checkpoint: Checkpoint
    ) -> None:
        """Publish `events` and `checkpoint` atomically, or raise having done
        neither."""
        ...

    async def load_checkpoints(self) -> dict[str, Checkpoint]:
        """The checkpoints of every shard as last committed."""
        ...

    async def fence(self) -> None:
        """Make sure no earlier holder of the lease can still commit a batch."""
        ...


class Lease(Protocol):
    async def acquire(self) -> bool:
        """Take or renew the lease; False while another relay holds it."""
        ...

    async def release(self) -> None: ...


class RelayMetrics(Protocol):
    def published(self, count: int) -> None: ...

    def duplicates(self, count: int) -> None:
        """`count` events met again in the stream after this relay had
        published them; they were skipped, not sent twice."""
        ...

    def backlog(self, pending: int, oldest_at: datetime | None) -> None:
        """The events found unpublished at the latest read of every shard, and
        when the oldest of them was written (None when there were none)."""
        ...

    def active(self, is_active: bool) -> None: ...


class NoMetrics:
    def published(self, count: int) -> None:
        pass

    def duplicates(self, count: int) -> None:
        pass

    def backlog(self, pending: int, oldest_at: datetime | None) -> None:
        pass

    def active(self, is_active: bool) -> None:
        pass


def read_order(
    shards: Sequence[Shard], checkpoints: dict[str, Checkpoint]
) -> list[Shard]:
    """Shards that may be read now, parents before children.

    A child waits until its parent (if the stream still lists it) is closed and
    fully published; finished shards are left out.
    """
    listed = {s.shard_id for s in shards}
    done = {s for s, c in checkpoints.items() if c.closed}
    ready: list[Shard] = []
    for shard in shards:
        if shard.shard_id in done:
            continue
        parent = shard.parent_id
        if parent is not None and parent in listed and parent not in done:
            continue
        ready.append(shard)
    return ready


@dataclass(frozen=True, slots=True)
class _Backlog:
    """What a shard's latest read found unpublished."""

    pending: int
    oldest_at: datetime | None


class OutboxRelay:
    """Publishes every shard's new events with their checkpoint, pass by pass.

    Metrics: the backlog gauges hold what the latest read of each shard found
    unpublished (kept until that shard is read again, so a scrape between
    passes sees it); the duplicate count is the events this relay published
    earlier, among the last `remembered` ones, and met again in the stream
    (after a checkpoint went backwards, say): they are skipped, not sent twice.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        publisher: Publisher,
        lease: Lease,
        metrics: RelayMetrics | None = None,
        poll_interval_s: float = 0.2,
        remembered: int = 100_000,
    ) -> None:
        self._feed = feed
        self._publisher = publisher
        self._lease = lease
        self._metrics = metrics or NoMetrics()
        self._poll_interval_s = poll_interval_s
        self._checkpoints: dict[str, Checkpoint] | None = None
        self._backlog: dict[str, _Backlog] = {}
        # (aggregate id, version) of recent publications, oldest first.
        self._recent: dict[tuple[UUID, int], None] = {}
        self._remembered = remembered
        self.published = 0
        self.duplicates = 0

    async def run_once(self) -> int:
        """Publish what is pending on every shard; returns how many events."""
        active = await self._lease.acquire()
        self._metrics.active(active)
        if not active:
            self._checkpoints = None  # the active relay moves them meanwhile
            self._backlog.clear()  # and reports the backlog
            self._report_backlog()
            return 0
        if self._checkpoints is None:
            # Fence first: a relay that lost the lease while publishing must not
            # commit after we read the checkpoints, or its batch would go twice.
            await self._publisher.fence()
            self._checkpoints = await self._publisher.load_checkpoints()
            self._feed.forget()
        checkpoints = self._checkpoints
        ready = read_order(await self._feed.shards(), checkpoints)
        for gone in self._backlog.keys() - {s.shard_id for s in ready}:
            del self._backlog[gone]  # finished, or trimmed from the stream
        total = 0
        for shard in ready:
            current = checkpoints.get(shard.shard_id)
            after = current.position if current else None
            batch = await self._feed.read(shard.shard_id, after)
            events = [e for e in batch.events if _identity(e) not in self._recent]
            self._backlog[shard.shard_id] = _Backlog(
                len(events), batch.oldest_at if events else None
            )
            self._report_backlog()
            moved = batch.position != after or batch.closed
            if not batch.events and not moved:
                continue
            if not await self._lease.acquire():
                # Lost the lease mid-pass; the new holder fenced us anyway.
                self._checkpoints = None
                break
            checkpoint = Checkpoint(shard.shard_id, batch.position, batch.closed)
            await self._publisher.publish(events, checkpoint)
            checkpoints[shard.shard_id] = checkpoint
            self._remember(events)
            self._count_duplicates(len(batch.events) - len(events))
            total += len(events)
        self._metrics.published(total)
        self.published += total
        return total

    def _report_backlog(self) -> None:
        found = [b.oldest_at for b in self._backlog.values() if b.oldest_at]
        self._metrics.backlog(
            sum(b.pending for b in self._backlog.values()),
            min(found) if found else None,
        )

    def _remember(self, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            self._recent[_identity(event)] = None
        while len(self._recent) > self._remembered:
            del self._recent[next(iter(self._recent))]

    def _count_duplicates(self, count: int) -> None:
        if count:
            logger.warning(
                "skipped events this relay had published already",
                extra={"count": count},
            )
            self.duplicates += count
            self._metrics.duplicates(count)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    published = await self.run_once()
                except Exception:
                    logger.exception("relay pass failed; resuming from the checkpoint")
                    self._checkpoints = None
                    published = 0
                    await asyncio.sleep(1.0)
                if published:
                    logger.info("events published", extra={"count": published})
                else:
                    await _wait(stop, self._poll_interval_s)
        finally:
            await self._lease.release()


def _identity(event: EventEnvelope) -> tuple[UUID, int]:
    return event.aggregate_id, event.version


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
