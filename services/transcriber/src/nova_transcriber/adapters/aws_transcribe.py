"""The production engine: Amazon Transcribe, through aioboto3.

It starts a batch job on the object in place (`s3://<audio bucket>/<key>`),
polls it, and reads the result JSON from the output location it named. Only
unit-tested with a fake client: this workspace has no AWS account, and moto
does not run transcription jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
    {"LimitExceededException", "ThrottlingException", "InternalFailureException"}
)


class TranscribeBusyError(Exception):
    """Amazon Transcribe is throttling or failing inside; retry later."""

    retriable = True  # read by nova_platform.batches.is_transient


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
    ) -> Transcript:
        """Amazon Transcribe reports no progress: `on_progress` is not called."""
        try:
            code = to_aws(language)
        except ValueError as exc:
            raise TranscriptionFailedError(str(exc)) from exc
        name = f"nova-{uuid4().hex}"
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
        await self._call(self._transcribe.start_transcription_job, **request)
        job = await self._wait(name)
        status = job["TranscriptionJobStatus"]
        if status == "FAILED":
            raise TranscriptionFailedError(
                "Amazon Transcribe could not transcribe the audio: "
                f"{job.get('FailureReason', 'no reason given')}"
            )
        document = await self._read_output(output_key)
        return parse_result(document, job.get("LanguageCode") or code or "auto")

    async def _wait(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        while True:
            found = await self._call(
                self._transcribe.get_transcription_job, TranscriptionJobName=name
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

    async def _read_output(self, key: str) -> dict[str, Any]:
        response = await self._s3.get_object(Bucket=self._output_bucket, Key=key)
        async with response["Body"] as stream:
            raw = await stream.read()
        try:
            await self._s3.delete_object(Bucket=self._output_bucket, Key=key)
        except ClientError:
            logger.warning("could not delete the transcript JSON", extra={"key": key})
        document: dict[str, Any] = json.loads(raw)
        return document

    @staticmethod
    async def _call(method: Any, **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _RETRY_LATER:
                raise TranscribeBusyError(f"Amazon Transcribe: {code}") from exc
            if code == "BadRequestException":
                message = exc.response.get("Error", {}).get("Message", "")
                raise TranscriptionFailedError(
                    f"Amazon Transcribe refused the audio: {message}"
                ) from exc
            raise


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
