"""Commands the command API accepts: imperative, validated at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO
from uuid import UUID

from nova_events import Segment


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sends a command: the token's user, and whether they may act on any
    user's audio (an admin, or the transcriber service)."""

    user_id: UUID
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class UploadAudio:
    """Store an uploaded file under the caller's prefix and register it."""

    actor: Actor
    file: BinaryIO
    size: int
    file_name: str | None = None
    title: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterAudio:
    """Register an object already stored under the caller's S3 prefix."""

    actor: Actor
    s3_key: str
    metadata: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class TranscribeAudio:
    actor: Actor
    audio_id: UUID
    language: str | None = None
    enable_diarization: bool = False
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class RecordTranscription:
    """The transcriber's transcript for one attempt."""

    actor: Actor
    audio_id: UUID
    attempt: int
    text: str
    confidence: float
    language: str
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordTranscriptionFailure:
    actor: Actor
    audio_id: UUID
    attempt: int
    reason: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class DeleteAudio:
    actor: Actor
    audio_id: UUID
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class EraseUser:
    """Erase every personal datum of `user_id`: their own account deletion,
    or an admin's."""

    actor: Actor
    user_id: UUID
