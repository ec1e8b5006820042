"""An `EventStore` that counts its appends and their conflicts (Prometheus)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter

from nova_events import EventEnvelope, EventMetadata, EventPayload

from ..application.ports import ConcurrencyError, EventStore


class MeteredEventStore:
    def __init__(self, store: EventStore, registry: CollectorRegistry) -> None:
        self._store = store
        self._commits = Counter(
            "nova_event_store_commits",
            "Commits appended to the event store",
            registry=registry,
        )
        self._events = Counter(
            "nova_event_store_appended_events",
            "Events appended to the event store",
            registry=registry,
        )
        self._conflicts = Counter(
            "nova_event_store_conflicts",
            "Appends refused because another writer moved the stream on",
            registry=registry,
        )

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
        try:
            appended = await self._store.append_events(
                aggregate_type,
                aggregate_id,
                events,
                expected_version,
                metadata,
                owner=owner,
            )
        except ConcurrencyError:
            self._conflicts.inc()
            raise
        self._commits.inc()
        self._events.inc(len(appended))
        return appended

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        return await self._store.get_events(aggregate_type, aggregate_id, from_version)

    async def get_events_by_type(
        self, event_type: str, from_time: datetime | None = None, limit: int = 100
    ) -> list[EventEnvelope]:
        return await self._store.get_events_by_type(event_type, from_time, limit)
