"""The outbox relay: every committed event goes to Kafka, at least once, in order.

The event store's change stream is the outbox. The relay reads each shard from
its checkpoint, publishes the batch without awaiting message by message, waits
until Kafka has acknowledged all of it, and only then moves the checkpoint. A
relay killed at any point therefore re-publishes (duplicates), never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nova_events import EventEnvelope

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Events read from one shard, and the position after the last of them."""

    shard_id: str
    events: Sequence[EventEnvelope]
    position: str | None


class ChangeFeed(Protocol):
    async def shards(self) -> list[str]: ...

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch: ...

    def forget(self) -> None:
        """Drop read positions held in memory; the next read starts from `after`."""
        ...


class Checkpoints(Protocol):
    async def load(self, shard_id: str) -> str | None: ...

    async def save(self, shard_id: str, position: str) -> None: ...


class Publisher(Protocol):
    async def publish(self, events: Sequence[EventEnvelope]) -> None:
        """Return once the broker has acknowledged every event."""
        ...


class OutboxRelay:
    def __init__(
        self,
        feed: ChangeFeed,
        checkpoints: Checkpoints,
        publisher: Publisher,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._feed = feed
        self._checkpoints = checkpoints
        self._publisher = publisher
        self._poll_interval_s = poll_interval_s
        self._positions: dict[str, str | None] = {}
        self.published = 0

    async def run_once(self) -> int:
        """Publish what is pending on every shard; returns how many events."""
        total = 0
        for shard_id in await self._feed.shards():
            if shard_id not in self._positions:
                self._positions[shard_id] = await self._checkpoints.load(shard_id)
            batch = await self._feed.read(shard_id, self._positions[shard_id])
            if batch.events:
                await self._publisher.publish(batch.events)
                total += len(batch.events)
            if batch.position and batch.position != self._positions[shard_id]:
                await self._checkpoints.save(shard_id, batch.position)
                self._positions[shard_id] = batch.position
        self.published += total
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                published = await self.run_once()
            except Exception:
                logger.exception("relay pass failed; retrying from the checkpoint")
                self._positions.clear()
                self._feed.forget()
                published = 0
                await asyncio.sleep(1.0)
            if published:
                logger.info("events published", extra={"count": published})
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_interval_s)
