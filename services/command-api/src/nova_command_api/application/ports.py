"""The ports the command side depends on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import EventEnvelope, EventMetadata, EventPayload

# DynamoDB refuses items over 400 KB; keep room for the item's attribute names.
MAX_EVENT_BYTES = 350_000


class EventTooLargeError(ValueError):
    """Raised when one event would not fit in an event store item.

    Nothing is written. Send less (fewer or shorter segments) in one event.
    """

    def __init__(self, event_type: str, size: int) -> None:
        self.event_type = event_type
        self.size = size
        super().__init__(
            f"{event_type} would take {size / 1000:.0f} kB; one event holds at most "
            f"{MAX_EVENT_BYTES / 1000:.0f} kB. Send a shorter transcript or fewer "
            "segments"
        )


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


class EventStoreUnavailableError(Exception):
    """Raised when the event store could not take a commit right now.

    DynamoDB throttled the write or a concurrent transaction held one of its
    items. Nothing was written and the stream's version is unknown to the
    writer: `retriable` is True, so retry the whole command after a moment.
    """

    retriable = True

    def __init__(self, stream: str, reason: str) -> None:
        self.stream = stream
        self.reason = reason
        super().__init__(
            f"the event store could not append to {stream} right now ({reason}); "
            "nothing was written, retry in a moment"
        )


class EventStore(Protocol):
    """An append-only store of event streams, one stream per aggregate."""

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
        """Append `events` after `expected_version`, all or nothing.

        `expected_version` must be the version of the stream the caller has
        read (0 for a new stream). Raises `ConcurrencyError` if the stream has
        moved on, and also if it never reached `expected_version` (a version
        nobody read cannot be appended after: that would leave a gap). Raises
        `EventStoreUnavailableError` when the store is throttled; retry then.

        `owner` is the user whose data key seals the events' personal fields
        (the audio's owner); the returned envelopes are open. Raises
        `nova_platform.personal.UserErasedError` when the owner was erased.
        """
        ...

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        """Every event of the stream from `from_version` on, in version order,
        opened (see `nova_platform.personal`)."""
        ...

    async def get_events_by_type(
        self, event_type: str, from_time: datetime | None = None, limit: int = 100
    ) -> list[EventEnvelope]:
        """Up to `limit` events of `event_type` from `from_time` on, oldest first.

        `from_time` must be timezone-aware; any offset is fine (it is compared
        as the same instant in UTC).
        """
        ...
