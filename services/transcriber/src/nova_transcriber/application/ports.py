"""What the transcription use case needs from the outside world.

`IAudioTranscriptionGateway` is the seed's engine interface: one call turns
the audio under an S3 key into a `Transcript`. A gateway raises
`TranscriptionFailedError` when the audio itself cannot be transcribed (the
attempt then ends as `failed`), and lets transient errors (S3 unreachable,
throttling) escape so that the consumer retries the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

ProgressCallback = Callable[[float, float, int], None]
"""`(seconds_done, duration_s, segments_done)`: how far the engine is. An
engine may call it from a worker thread; it never raises and never blocks."""


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    confidence: float | None = None
    language: str | None = None


@dataclass(frozen=True)
class Transcript:
    """A finished recognition; `language` is a seed code such as `en-US`."""

    text: str
    confidence: float
    language: str
    segments: tuple[TranscriptSegment, ...] = ()
    duration_s: float | None = None


class TranscriptionFailedError(Exception):
    """The audio cannot be transcribed; `reason` is shown to the user.

    `retryable` is True only when a new attempt may succeed unchanged (an
    engine that timed out), False for audio that is broken, empty or too long.
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class IAudioTranscriptionGateway(Protocol):
    """A speech-to-text engine (faster-whisper locally, Amazon Transcribe)."""

    async def transcribe(
        self,
        s3_key: str,
        language: str,
        enable_diarization: bool,
        on_progress: ProgressCallback | None = None,
        *,
        job_key: str | None = None,
    ) -> Transcript:
        """Recognise the speech in the object `s3_key` of the audio bucket.

        `language` is a seed code (`ja-JP`, `en-US`, ...) or `auto` to detect it.
        An engine that knows how far it is calls `on_progress` as it goes.
        `job_key` is the same for every delivery of one request (audio id and
        attempt): an engine that runs remote jobs names its job after it, so a
        request picked up again reuses that job instead of starting another.
        """
        ...


class ProgressStore(Protocol):
    """Where progress goes (Redis); best effort, any error may escape."""

    async def write(self, audio_id: UUID, entry: Mapping[str, object]) -> None: ...


@dataclass(frozen=True)
class AudioToTranscribe:
    """What the event store says about one audio, for one attempt."""

    s3_key: str
    duration_s: float | None
    current_attempt: int
    open: bool
    """True while the current attempt has no result yet (and not deleted)."""


class AudioCatalog(Protocol):
    async def find(self, audio_id: UUID) -> AudioToTranscribe | None:
        """The audio's S3 key and attempt state; None if it does not exist."""
        ...


@dataclass(frozen=True)
class Completed:
    attempt: int
    transcript: Transcript


@dataclass(frozen=True)
class Failed:
    attempt: int
    reason: str
    retryable: bool = False


Result = Completed | Failed


class ResultRejectedError(Exception):
    """command-api refused a result for a reason other than it being stale."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(f"command-api answered {status} {kind}: {detail}")
        self.status = status
        self.kind = kind
        self.detail = detail


class ResultSink(Protocol):
    async def submit(self, audio_id: UUID, result: Result) -> bool:
        """Hand `result` to command-api.

        True when it was recorded; False when it no longer applies (a newer
        attempt exists or the audio already has a result): nothing to do.
        Raises a transient error when command-api cannot be reached, and
        `ResultRejectedError` when it refuses the result itself.
        """
        ...
