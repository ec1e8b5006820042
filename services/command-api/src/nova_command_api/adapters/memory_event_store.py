"""An in-memory event store for fast unit tests; same contract as DynamoDB's.

Given a `PersonalData`, it keeps the sealed form, as DynamoDB's does; `stored`
shows it to tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from nova_events import EventEnvelope, EventMetadata, EventPayload
from nova_platform.personal import PersonalData

from ..application.ports import ConcurrencyError
from .envelopes import as_utc, new_envelopes, stored_envelopes


class InMemoryEventStore:
    def __init__(self, personal: PersonalData | None = None) -> None:
        self._streams: dict[str, list[EventEnvelope]] = {}
        self._lock = asyncio.Lock()
        self._personal = personal

    async def append_events(
        self,
        aggregate_type: str,
        aggregate_id: UUID,
        events: Sequence[EventPayload],
        expected_version: int,
        metadata: EventMetadata,
        *,
        owner: UUID | None = None,
    ) -> list[EventEnvelope]:
        envelopes = new_envelopes(
            aggregate_type, aggregate_id, events, expected_version, metadata
        )
        sealed = await stored_envelopes(envelopes, self._personal, owner)
        stream = f"{aggregate_type}#{aggregate_id}"
        async with self._lock:
            stored = self._streams.get(stream, [])
            # Behind the stream is a conflict; ahead of it would leave a gap.
            if len(stored) != expected_version:
                raise ConcurrencyError(stream, expected_version, len(stored))
            self._streams[stream] = [*stored, *sealed]
        return envelopes

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        stream = self._streams.get(f"{aggregate_type}#{aggregate_id}", [])
        return await self._open([e for e in stream if e.version >= from_version])

    def stored(self) -> list[EventEnvelope]:
        """Every stored envelope as kept (sealed), stream by stream."""
        return [e for stream in self._streams.values() for e in stream]

    async def _open(self, envelopes: list[EventEnvelope]) -> list[EventEnvelope]:
        if self._personal is None:
            return envelopes
        return await self._personal.open_all(envelopes)

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
        return await self._open(matches[:limit])
