"""The production engine: Amazon Transcribe, through aioboto3.

It starts a batch job on the object in place (`s3://<audio bucket>/<key>`),
polls it, and reads the result JSON from the output location it named. The
job is named after the request (`job_key`: audio id and attempt), so a
request picked up again (a transcriber killed mid-job, a rewound batch)
reuses the job already running instead of paying for a second one. Only
unit-tested with a fake client: this workspace has no AWS account, and moto
does not run transcription jobs.

Errors are translated here: throttling and 5xx answers are transient
(`TranscribeBusyError`, the batch is retried), any other refusal and a result
document this service cannot read end the attempt as failed with a reason
the user can read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any
from uuid import uuid4

from botocore.exceptions import ClientError

from ..application.languages import to_aws
from ..application.ports import (
    ProgressCallback,
    Transcript,
    TranscriptionFailedError,
    TranscriptSegment,
)

logger = logging.getLogger(__name__)

MAX_SPEAKERS = 10
_RETRY_LATER = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "InternalFailureException",
        "ServiceUnavailableException",
        "SlowDown",
        "RequestTimeout",
    }
)
_MISSING_OUTPUT = frozenset({"NoSuchKey", "404", "NotFound"})
_JOB_NAME_UNSAFE = re.compile(r"[^0-9A-Za-z._-]")
MAX_JOB_NAME = 200
"""Amazon Transcribe's limit on `TranscriptionJobName`."""


class TranscribeBusyError(Exception):
    """Amazon Transcribe (or S3) is throttling or failing inside; retry later."""

    retriable = True  # read by nova_platform.batches.is_transient


class _OutputMissingError(Exception):
    """Raised when a completed job's result JSON is not (or no longer) there."""


def job_name(job_key: str | None) -> str:
    """The Amazon Transcribe job of a request: `nova-<job_key>`, in the
    characters job names allow; a fresh name when there is no key."""
    if job_key is None:
        return f"nova-{uuid4().hex}"
    return f"nova-{_JOB_NAME_UNSAFE.sub('-', job_key)}"[:MAX_JOB_NAME]


def translate(exc: ClientError, what: str) -> Exception:
    """The project's error for an AWS refusal: transient for throttling and
    5xx, a failed attempt (with the reason) for any other 4xx."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or "no message"
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code in _RETRY_LATER or status == 429 or status >= 500:
        return TranscribeBusyError(f"{what}: {code or status}")
    if code == "BadRequestException":
        return TranscriptionFailedError(
            f"Amazon Transcribe refused the audio: {message}"
        )
    return TranscriptionFailedError(
        f"{what} refused the request ({code or status}: {message}); the "
        "transcriber's AWS setup needs fixing before the transcription is "
        "started again",
        retryable=True,
    )


class AmazonTranscribeGateway:
    """`IAudioTranscriptionGateway` with Amazon Transcribe batch jobs.

    `transcribe` and `s3` are open aioboto3 clients; the result JSON is written
    to `output_bucket` under `output_prefix` and deleted once read.
    """

    def __init__(
        self,
        transcribe: Any,
        s3: Any,
        audio_bucket: str,
        output_bucket: str,
        *,
        output_prefix: str = "transcripts/",
        poll_interval_s: float = 5.0,
        timeout_s: float = 3 * 3600.0,
    ) -> None:
        self._transcribe = transcribe
        self._s3 = s3
        self._audio_bucket = audio_bucket
        self._output_bucket = output_bucket
        self._output_prefix = output_prefix
        self._poll_interval_s = poll_interval_s
        self._timeout_s = timeout_s

    async def transcribe(
        self,
        s3_key: str,
        language: str,
        enable_diarization: bool,
        on_progress: ProgressCallback | None = None,
        *,
        job_key: str | None = None,
    ) -> Transcript:
        """Amazon Transcribe reports no progress: `on_progress` is not called.

        Speaker labels are requested with `enable_diarization`, but segments
        do not carry them yet: the event schema's `Segment` has no speaker.
        """
        try:
            code = to_aws(language)
        except ValueError as exc:
            raise TranscriptionFailedError(str(exc)) from exc
        name = job_name(job_key)
        output_key = f"{self._output_prefix}{name}.json"
        request: dict[str, Any] = {
            "TranscriptionJobName": name,
            "Media": {"MediaFileUri": f"s3://{self._audio_bucket}/{s3_key}"},
            "OutputBucketName": self._output_bucket,
            "OutputKey": output_key,
        }
        if code is None:
            request["IdentifyLanguage"] = True
        else:
            request["LanguageCode"] = code
        if enable_diarization:
            request["Settings"] = {
                "ShowSpeakerLabels": True,
                "MaxSpeakerLabels": MAX_SPEAKERS,
            }
        reused = await self._start(request)
        for rerun in (False, True):
            try:
                job, raw = await self._run(name, output_key)
                break
            except _OutputMissingError:
                if not reused or rerun:
                    raise TranscriptionFailedError(
                        f"Amazon Transcribe job {name} completed without its "
                        f"result at s3://{self._output_bucket}/{output_key}; "
                        "start the transcription again",
                        retryable=True,
                    ) from None
            # An earlier pick read (and deleted) the reused job's result but
            # never got it recorded: only a new job can produce it again.
            logger.warning(
                "the reused job's result is gone; running the job again",
                extra={"job": name},
            )
            await self._aws(
                "Amazon Transcribe",
                self._transcribe.delete_transcription_job,
                TranscriptionJobName=name,
            )
            reused = await self._start(request)
        return _parse(raw, name, job.get("LanguageCode") or code or "auto")

    async def _start(self, request: dict[str, Any]) -> bool:
        """Start the job; True when one of that name existed and is reused."""
        try:
            await self._transcribe.start_transcription_job(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConflictException":
                raise translate(exc, "Amazon Transcribe") from exc
            logger.info(
                "reusing the Amazon Transcribe job of this request",
                extra={"job": request["TranscriptionJobName"]},
            )
            return True
        return False

    async def _run(self, name: str, output_key: str) -> tuple[dict[str, Any], bytes]:
        """The finished job and its result JSON; raises for a failed job."""
        job = await self._wait(name)
        if job["TranscriptionJobStatus"] == "FAILED":
            raise TranscriptionFailedError(
                "Amazon Transcribe could not transcribe the audio: "
                f"{job.get('FailureReason', 'no reason given')}"
            )
        return job, await self._read_output(output_key)

    async def _wait(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        while True:
            found = await self._aws(
                "Amazon Transcribe",
                self._transcribe.get_transcription_job,
                TranscriptionJobName=name,
            )
            job: dict[str, Any] = found["TranscriptionJob"]
            if job["TranscriptionJobStatus"] in ("COMPLETED", "FAILED"):
                return job
            if time.monotonic() > deadline:
                raise TranscriptionFailedError(
                    f"Amazon Transcribe job {name} did not finish within "
                    f"{self._timeout_s / 60:.0f} min; start the transcription again",
                    retryable=True,
                )
            await asyncio.sleep(self._poll_interval_s)

    async def _read_output(self, key: str) -> bytes:
        try:
            response = await self._s3.get_object(Bucket=self._output_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_OUTPUT:
                raise _OutputMissingError(key) from exc
            raise translate(exc, "S3 (the transcript's output bucket)") from exc
        async with response["Body"] as stream:
            raw: bytes = await stream.read()
        try:
            await self._s3.delete_object(Bucket=self._output_bucket, Key=key)
        except ClientError:
            logger.warning("could not delete the transcript JSON", extra={"key": key})
        return raw

    @staticmethod
    async def _aws(what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except ClientError as exc:
            raise translate(exc, what) from exc


def _parse(raw: bytes, name: str, language: str) -> Transcript:
    try:
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise TypeError(f"a JSON {type(document).__name__}, not an object")
        return parse_result(document, language)
    except TranscriptionFailedError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise TranscriptionFailedError(
            f"Amazon Transcribe job {name} returned a result this service cannot "
            f"read ({type(exc).__name__}: {str(exc)[:200]}); start the "
            "transcription again",
            retryable=True,
        ) from exc


def parse_result(document: dict[str, Any], language: str) -> Transcript:
    """A `Transcript` from Amazon Transcribe's result JSON."""
    results = document.get("results", {})
    transcripts = results.get("transcripts") or [{}]
    text = str(transcripts[0].get("transcript", "")).strip()
    items = {str(i.get("id")): i for i in results.get("items", [])}
    segments: list[TranscriptSegment] = []
    for seg in results.get("audio_segments", []):
        confidences = [
            _confidence(items[str(i)]) for i in seg.get("items", []) if str(i) in items
        ]
        words = [c for c in confidences if c is not None]
        segments.append(
            TranscriptSegment(
                start=float(seg.get("start_time", 0.0)),
                end=float(seg.get("end_time", seg.get("start_time", 0.0))),
                text=str(seg.get("transcript", "")).strip(),
                confidence=round(sum(words) / len(words), 4) if words else None,
                language=language,
            )
        )
    spoken = [
        c for c in (_confidence(i) for i in results.get("items", [])) if c is not None
    ]
    if not text:
        raise TranscriptionFailedError("no speech was recognised in the audio")
    return Transcript(
        text=text,
        confidence=round(sum(spoken) / len(spoken), 4) if spoken else 0.0,
        language=language,
        segments=tuple(segments),
    )


def _confidence(item: dict[str, Any]) -> float | None:
    if item.get("type") != "pronunciation":
        return None
    alternatives = item.get("alternatives") or [{}]
    try:
        return min(1.0, max(0.0, float(alternatives[0].get("confidence", 0.0))))
    except (TypeError, ValueError):
        return None
