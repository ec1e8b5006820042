"""The `AudioFile` aggregate: the seed's shape plus failure and erasure."""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from uuid import UUID, uuid4

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    Segment,
    TranscriptionCompleted,
)

from .errors import InvalidStateError


class ProcessingStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    TRANSCRIBED = "transcribed"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"


_S = ProcessingStatus


@functools.cache  # one regex per event class, not per event replayed
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AudioFile:
    """An uploaded audio file and its transcription, rebuilt from its events.

    Command methods check the status, then `_apply` an event; `_when` is the only
    place state changes, so replaying history and deciding share one code path.
    """

    def __init__(self) -> None:
        self.id: UUID | None = None
        self.user_id: UUID | None = None
        self.s3_key = ""
        self.metadata: dict[str, str] = {}
        self.status = ProcessingStatus.PENDING
        self.language: str | None = None
        self.transcription: TranscriptionCompleted | None = None
        self.failure_reason: str | None = None
        self.attempts = 0
        self._version = 0
        self._uncommitted_events: list[DomainEvent] = []

    @property
    def version(self) -> int:
        """The stream version of the last committed event (0 for a new file)."""
        return self._version

    @property
    def audio_id(self) -> UUID:
        if self.id is None:
            raise InvalidStateError("use", "not created", ("created",))
        return self.id

    # === Commands ===

    @classmethod
    def create(
        cls,
        user_id: UUID,
        s3_key: str,
        metadata: dict[str, str] | None = None,
        audio_id: UUID | None = None,
        *,
        title: str | None = None,
        file_name: str | None = None,
        content_type: str | None = None,
        size_bytes: int | None = None,
        duration_s: float | None = None,
        language: str | None = None,
    ) -> AudioFile:
        audio = cls()
        audio._apply(
            AudioCreated(
                audio_id=audio_id or uuid4(),
                user_id=user_id,
                s3_key=s3_key,
                metadata=metadata or {},
                title=title,
                file_name=file_name,
                content_type=content_type,
                size_bytes=size_bytes,
                duration_s=duration_s,
                language=language,
            )
        )
        return audio

    def start_processing(
        self, language: str = "ja-JP", enable_diarization: bool = False
    ) -> None:
        self._require("start processing", _S.PENDING, _S.FAILED, _S.COMPLETED)
        self._apply(
            AudioProcessingStarted(
                audio_id=self.audio_id,
                language=language,
                enable_diarization=enable_diarization,
                attempt=self.attempts + 1,
            )
        )

    def complete_transcription(
        self,
        text: str,
        confidence: float,
        language: str,
        segments: tuple[Segment, ...] = (),
    ) -> None:
        self._require("complete the transcription of", _S.PROCESSING)
        self._apply(
            TranscriptionCompleted(
                audio_id=self.audio_id,
                text=text,
                confidence=confidence,
                language=language,
                segments=segments,
            )
        )

    def complete_processing(self) -> None:
        self._require("complete processing of", _S.TRANSCRIBED)
        self._apply(AudioProcessingCompleted(audio_id=self.audio_id))

    def fail_processing(self, reason: str, retryable: bool) -> None:
        self._require("fail processing of", _S.PROCESSING, _S.TRANSCRIBED)
        self._apply(
            AudioProcessingFailed(
                audio_id=self.audio_id, reason=reason, retryable=retryable
            )
        )

    def delete(self) -> None:
        self._require(
            "delete", _S.PENDING, _S.PROCESSING, _S.TRANSCRIBED, _S.COMPLETED, _S.FAILED
        )
        self._apply(AudioDeleted(audio_id=self.audio_id))

    def _require(self, command: str, *allowed: ProcessingStatus) -> None:
        if self.status not in allowed:
            raise InvalidStateError(command, self.status.value, allowed)

    # === Event sourcing ===

    def _apply(self, event: DomainEvent) -> None:
        self._when(event)
        self._uncommitted_events.append(event)

    def _when(self, event: DomainEvent) -> None:
        handler = getattr(self, f"_on_{_snake(type(event).__name__)}")
        handler(event)

    def _on_audio_created(self, event: AudioCreated) -> None:
        self.id = event.audio_id
        self.user_id = event.user_id
        self.s3_key = event.s3_key
        self.metadata = dict(event.metadata)
        self.language = event.language
        self.status = _S.PENDING

    def _on_audio_processing_started(self, event: AudioProcessingStarted) -> None:
        self.status = _S.PROCESSING
        self.language = event.language
        self.attempts = event.attempt
        self.failure_reason = None

    def _on_transcription_completed(self, event: TranscriptionCompleted) -> None:
        self.status = _S.TRANSCRIBED
        self.transcription = event

    def _on_audio_processing_completed(self, _: AudioProcessingCompleted) -> None:
        self.status = _S.COMPLETED

    def _on_audio_processing_failed(self, event: AudioProcessingFailed) -> None:
        self.status = _S.FAILED
        self.failure_reason = event.reason

    def _on_audio_deleted(self, _: AudioDeleted) -> None:
        self.status = _S.DELETED
        self.transcription = None

    @classmethod
    def reconstitute(cls, history: list[tuple[int, DomainEvent]]) -> AudioFile:
        """Rebuild from `(version, event)` pairs in stream order."""
        audio = cls()
        for version, event in history:
            audio._when(event)
            audio._version = version
        return audio

    def get_uncommitted_events(self) -> list[DomainEvent]:
        return self._uncommitted_events.copy()

    def mark_events_as_committed(self) -> None:
        self._version += len(self._uncommitted_events)
        self._uncommitted_events.clear()
