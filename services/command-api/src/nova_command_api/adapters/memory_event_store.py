"""An in-memory event store for fast unit tests; same contract as DynamoDB's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from nova_events import DomainEvent, EventEnvelope, EventMetadata

from ..application.ports import ConcurrencyError
from .envelopes import as_utc, new_envelopes


class InMemoryEventStore:
    def __init__(self) -> None:
        self._streams: dict[str, list[EventEnvelope]] = {}
        self._lock = asyncio.Lock()

    async def append_events(
        self,
        aggregate_type: str,
        aggregate_id: UUID,
        events: Sequence[DomainEvent],
        expected_version: int,
        metadata: EventMetadata,
    ) -> list[EventEnvelope]:
        envelopes = new_envelopes(
            aggregate_type, aggregate_id, events, expected_version, metadata
        )
        stream = f"{aggregate_type}#{aggregate_id}"
        async with self._lock:
            stored = self._streams.get(stream, [])
            # Behind the stream is a conflict; ahead of it would leave a gap.
            if len(stored) != expected_version:
                raise ConcurrencyError(stream, expected_version, len(stored))
            self._streams[stream] = [*stored, *envelopes]
        return envelopes

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        stream = self._streams.get(f"{aggregate_type}#{aggregate_id}", [])
        return [e for e in stream if e.version >= from_version]

    async def get_events_by_type(
        self, event_type: str, from_time: datetime | None = None, limit: int = 100
    ) -> list[EventEnvelope]:
        since = None if from_time is None else as_utc(from_time)
        matches = [
            e
            for stream in self._streams.values()
            for e in stream
            if e.event_type == event_type and (since is None or e.occurred_at >= since)
        ]
        matches.sort(key=lambda e: e.occurred_at.isoformat())
        return matches[:limit]
