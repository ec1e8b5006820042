"""Events of the `AudioFile` aggregate, the seed's names plus failure and erasure.

Fields marked `personal` hold what a user typed or said; they are the ones that
crypto-shredding will encrypt (see ARCHITECTURE.md, "Personal data").
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

AUDIO_FILE = "AudioFile"


def personal(**kwargs: Any) -> Any:
    """A field that holds personal data, marked in the JSON Schema."""
    return Field(json_schema_extra={"x-personal": True}, **kwargs)


class EventPayload(BaseModel):
    """Base of every event payload: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


class DomainEvent(EventPayload):
    """Base of the `AudioFile` events: each names its audio."""

    audio_id: UUID


class AudioCreated(DomainEvent):
    """An audio file was stored under its owner's S3 prefix and registered."""

    user_id: UUID
    s3_key: str = personal(min_length=1)
    metadata: dict[str, str] = personal(default_factory=dict)
    title: str | None = personal(default=None)
    file_name: str | None = personal(default=None)
    content_type: str | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, ge=0)
    language: str | None = None


class AudioProcessingStarted(DomainEvent):
    language: str = "ja-JP"
    enable_diarization: bool = False
    attempt: int = Field(default=1, ge=1)


class Segment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str = personal()
    confidence: float | None = Field(default=None, ge=0, le=1)
    language: str | None = None


class TranscriptionCompleted(DomainEvent):
    text: str = personal()
    confidence: float = Field(ge=0, le=1)
    language: str
    segments: tuple[Segment, ...] = ()


class AudioProcessingCompleted(DomainEvent):
    pass


class AudioProcessingFailed(DomainEvent):
    """The attempt ended without a transcript; `retryable` says if trying again
    may succeed (a timeout) or not (audio that cannot be decoded)."""

    reason: str
    retryable: bool


class AudioDeleted(DomainEvent):
    pass


AUDIO_EVENTS: tuple[type[DomainEvent], ...] = (
    AudioCreated,
    AudioProcessingStarted,
    TranscriptionCompleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioDeleted,
)
