"""The ports the command side depends on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import DomainEvent, EventEnvelope, EventMetadata


class ConcurrencyError(Exception):
    """Raised when another writer appended to the stream first.

    Reload the aggregate and decide again; `actual_version` is what is stored now.
    """

    def __init__(self, stream: str, expected_version: int, actual_version: int) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream} is at version {actual_version}, not the expected "
            f"{expected_version}; reload it and retry the command"
        )


class EventStore(Protocol):
    """An append-only store of event streams, one stream per aggregate."""

    async def append_events(
        self,
        aggregate_type: str,
        aggregate_id: UUID,
        events: Sequence[DomainEvent],
        expected_version: int,
        metadata: EventMetadata,
    ) -> list[EventEnvelope]:
        """Append `events` after `expected_version`, all or nothing.

        `expected_version` must be a version the caller has read (0 for a new
        stream). Raises `ConcurrencyError` if the stream has moved on.
        """
        ...

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        """Every event of the stream from `from_version` on, in version order."""
        ...

    async def get_events_by_type(
        self, event_type: str, from_time: datetime | None = None, limit: int = 100
    ) -> list[EventEnvelope]:
        """Up to `limit` events of `event_type` from `from_time` on, oldest first."""
        ...
