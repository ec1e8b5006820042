"""The envelope every stored and published event travels in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)

SEALED_KEY = "_sealed"
"""The key of an envelope's `data` that holds its personal fields, encrypted,
as stored and published (see `nova_events.personal`)."""


class EventMetadata(BaseModel):
    """Who caused an event and which request it belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    correlation_id: str
    causation_id: str | None = None
    user_id: str | None = None
    command_id: str | None = None
    traceparent: str | None = None


class EventEnvelope(BaseModel):
    """One committed event: identity, position in its stream, payload, metadata.

    `version` is the position in the aggregate's stream (1 for the first event);
    `schema_version` is the version of the payload's shape for `event_type`.

    As stored and published, the personal fields of `data` are sealed (see
    `nova_events.personal`); readers open envelopes before decoding them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    aggregate_type: str
    aggregate_id: UUID
    event_type: str
    schema_version: int = Field(ge=1)
    version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    metadata: EventMetadata
    data: dict[str, Any]

    # Set only by opening (never read from, or written to, the wire).
    _erased: bool = PrivateAttr(default=False)

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def erased(self) -> bool:
        """True when this envelope was opened after its owner's data key was
        destroyed: its personal fields hold erased values, not what was said."""
        return self._erased

    def as_erased(self, data: dict[str, Any]) -> EventEnvelope:
        """A copy with `data` (its personal fields erased), marked `erased`."""
        copy = self.model_copy(update={"data": data})
        copy._erased = True
        return copy

    @property
    def stream_key(self) -> str:
        """The event store's partition key for this event's stream."""
        return f"{self.aggregate_type}#{self.aggregate_id}"
