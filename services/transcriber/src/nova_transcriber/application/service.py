"""The transcription use case: one `AudioProcessingStarted` -> one result.

For each request it looks the audio up in the event store (its S3 key, and
whether this attempt still waits for a result), runs the engine, and submits
a completed or failed result to command-api. Only transient errors escape,
so the shared consume loop rewinds the batch and retries it with backoff; the
offset is committed only after command-api recorded every result of the batch.

A result that was computed but could not be submitted is kept (a few, in
memory) so that the retry submits it without running the engine again. A
duplicate delivery of a request that already has a result is skipped before
the engine runs; command-api refusing a result as stale (409) is also done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from uuid import UUID

from nova_events import AudioProcessingStarted, EventEnvelope, decode_payload
from nova_platform.stopping import stop_task

from .ports import (
    AudioCatalog,
    Completed,
    Failed,
    IAudioTranscriptionGateway,
    ProgressStore,
    Result,
    ResultRejectedError,
    ResultSink,
    Transcript,
    TranscriptionFailedError,
)
from .progress import ProgressReporter

logger = logging.getLogger(__name__)

UNSUBMITTED_KEPT = 16


class TranscriptionService:
    """Handles the transcription requests of a consumed batch, in order."""

    def __init__(
        self,
        catalog: AudioCatalog,
        engine: IAudioTranscriptionGateway,
        sink: ResultSink,
        max_duration_s: float,
        progress: ProgressStore | None = None,
        on_transcribed: Callable[[str, float], None] | None = None,
    ) -> None:
        """`on_transcribed(outcome, seconds)` hears how each recognition went
        (`completed` or `failed`) and how long it took (for metrics)."""
        self._catalog = catalog
        self._on_transcribed = on_transcribed
        self._progress = progress
        self._engine = engine
        self._sink = sink
        self._max_duration_s = max_duration_s
        self._unsubmitted: OrderedDict[tuple[UUID, int], Result] = OrderedDict()

    async def handle(self, envelopes: Sequence[EventEnvelope]) -> None:
        """The consumer's batch handler: every other event type is ignored."""
        wanted = AudioProcessingStarted.event_type()
        for envelope in envelopes:
            if envelope.event_type != wanted:
                continue
            event = decode_payload(envelope)
            assert isinstance(event, AudioProcessingStarted)
            await self.process(event)

    async def process(self, event: AudioProcessingStarted) -> None:
        audio_id, attempt = event.audio_id, event.attempt
        log = {"audio_id": str(audio_id), "attempt": attempt}
        key = (audio_id, attempt)
        result = self._unsubmitted.get(key)
        if result is None:
            audio = await self._catalog.find(audio_id)
            if audio is None:
                logger.warning("no such audio in the event store; skipped", extra=log)
                return
            if audio.current_attempt != attempt or not audio.open:
                logger.info(
                    "attempt already has a result or was superseded; skipped",
                    extra={**log, "current_attempt": audio.current_attempt},
                )
                return
            result = await self._run(event, audio.s3_key, audio.duration_s)
            self._keep(key, result)
        await self._submit(audio_id, result, log)
        self._unsubmitted.pop(key, None)

    async def _run(
        self, event: AudioProcessingStarted, s3_key: str, duration_s: float | None
    ) -> Result:
        attempt = event.attempt
        if duration_s is not None and duration_s > self._max_duration_s:
            return Failed(attempt, too_long(duration_s, self._max_duration_s))
        started = time.monotonic()
        try:
            transcript = await self._transcribe(event, s3_key)
        except TranscriptionFailedError as exc:
            self._observe("failed", started)
            logger.info(
                "transcription failed",
                extra={"audio_id": str(event.audio_id), "reason": exc.reason},
            )
            return Failed(attempt, exc.reason[:2000], exc.retryable)
        self._observe("completed", started)
        logger.info(
            "transcribed",
            extra={
                "audio_id": str(event.audio_id),
                "attempt": attempt,
                "seconds": round(time.monotonic() - started, 3),
                "audio_seconds": transcript.duration_s,
                "segments": len(transcript.segments),
                "language": transcript.language,
            },
        )
        return Completed(attempt, transcript)

    def _observe(self, outcome: str, started: float) -> None:
        if self._on_transcribed is not None:
            self._on_transcribed(outcome, time.monotonic() - started)

    async def _transcribe(
        self, event: AudioProcessingStarted, s3_key: str
    ) -> Transcript:
        """The engine's transcript, with its progress flushed meanwhile."""
        job_key = f"{event.audio_id}-{event.attempt}"
        if self._progress is None:
            return await self._engine.transcribe(
                s3_key, event.language, event.enable_diarization, job_key=job_key
            )
        reporter = ProgressReporter(self._progress, event.audio_id, event.attempt)
        flusher = asyncio.create_task(reporter.run())
        try:
            return await self._engine.transcribe(
                s3_key,
                event.language,
                event.enable_diarization,
                on_progress=reporter.report,
                job_key=job_key,
            )
        finally:
            reporter.stop()  # the cancellation alone can be lost (see progress)
            await stop_task(flusher, what="the progress flusher")

    async def _submit(
        self, audio_id: UUID, result: Result, log: dict[str, object]
    ) -> None:
        try:
            recorded = await self._sink.submit(audio_id, result)
        except ResultRejectedError as exc:
            if not isinstance(result, Completed):
                raise
            # The transcript itself was refused (too large for one event, or
            # out of the contract): the attempt still needs an ending.
            logger.error(
                "command-api refused the transcript", extra={**log, "error": str(exc)}
            )
            fallback = Failed(
                result.attempt,
                f"the transcript could not be recorded: {exc.detail}"[:2000],
            )
            recorded = await self._sink.submit(audio_id, fallback)
        logger.info(
            "result recorded" if recorded else "result no longer applies; done",
            extra=log,
        )

    def _keep(self, key: tuple[UUID, int], result: Result) -> None:
        self._unsubmitted[key] = result
        while len(self._unsubmitted) > UNSUBMITTED_KEPT:
            self._unsubmitted.popitem(last=False)


def too_long(duration_s: float, limit_s: float) -> str:
    return (
        f"the audio plays for {duration_s / 60:.1f} min, longer than the "
        f"{limit_s / 60:.1f} min this service transcribes; split it into "
        "shorter files"
    )
