"""The transcriber's use case with a fake engine and a fake command-api."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import wave
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from botocore.exceptions import ClientError

from nova_events import (
    AudioCreated,
    AudioProcessingCompleted,
    AudioProcessingStarted,
    TranscriptionCompleted,
)
from nova_platform.batches import is_transient
from nova_platform.cache import progress_key
from nova_platform.settings import NovaSettings
from nova_transcriber.adapters.aws_transcribe import (
    AmazonTranscribeGateway,
    TranscribeBusyError,
    job_name,
)
from nova_transcriber.adapters.command_api import (
    SCOPE,
    CommandApiUnavailableError,
    HttpCommandApi,
    dev_token_provider,
)
from nova_transcriber.adapters.event_store_catalog import summarize
from nova_transcriber.adapters.redis_progress import RedisProgressStore
from nova_transcriber.adapters.s3_audio import S3AudioSource
from nova_transcriber.adapters.whisper import (
    WhisperGateway,
    confidence,
    overall_confidence,
)
from nova_transcriber.application.languages import from_whisper, to_aws, to_whisper
from nova_transcriber.application.ports import (
    AudioToTranscribe,
    ProgressCallback,
    Transcript,
    TranscriptionFailedError,
    TranscriptSegment,
)
from nova_transcriber.application.progress import ProgressReporter
from nova_transcriber.application.service import TranscriptionService

from ..speech import corrupt_flac

KEY = "audio/u/a.wav"
TRANSCRIPT = Transcript(
    text="the quick brown fox",
    confidence=0.9,
    language="en-US",
    segments=(TranscriptSegment(0.0, 1.5, "the quick brown fox", 0.9, "en-US"),),
    duration_s=1.5,
)


class FakeCatalog:
    def __init__(self, audio: AudioToTranscribe | None) -> None:
        self.audio = audio

    async def find(self, audio_id: UUID) -> AudioToTranscribe | None:
        return self.audio


class FakeEngine:
    def __init__(self, outcome: Transcript | Exception = TRANSCRIPT) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, str, bool]] = []
        self.job_keys: list[str | None] = []
        self.progress: list[tuple[float, float, int]] = []
        self.pause_s = 0.0

    async def transcribe(
        self,
        s3_key: str,
        language: str,
        enable_diarization: bool,
        on_progress: ProgressCallback | None = None,
        *,
        job_key: str | None = None,
    ) -> Transcript:
        self.calls.append((s3_key, language, enable_diarization))
        self.job_keys.append(job_key)
        for seconds_done, duration_s, segments_done in self.progress:
            assert on_progress is not None
            on_progress(seconds_done, duration_s, segments_done)
            await asyncio.sleep(self.pause_s)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class FakeCommandApi:
    """command-api's result route: answers from a list, records the bodies."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers) or [(200, "")]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, kind = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if status == 200:
            return httpx.Response(
                200, json={"audio_id": "x", "version": 4, "status": "completed"}
            )
        return httpx.Response(
            status,
            json={
                "type": f"https://nova.example/problems/{kind}",
                "status": status,
                "detail": f"{kind} happened",
            },
            headers={"content-type": "application/problem+json"},
        )

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def service(
    engine: Any,
    api: FakeCommandApi,
    audio: AudioToTranscribe | None = None,
    max_duration_s: float = 1800.0,
) -> TranscriptionService:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(api), base_url="http://command-api"
    )
    sink = HttpCommandApi(client, lambda: "token", first_backoff_s=0.0)
    found = audio or AudioToTranscribe(KEY, 1.5, current_attempt=3, open=True)
    return TranscriptionService(FakeCatalog(found), engine, sink, max_duration_s)


def started(attempt: int = 3, language: str = "en-US") -> AudioProcessingStarted:
    return AudioProcessingStarted(audio_id=uuid4(), language=language, attempt=attempt)


async def test_success_posts_the_transcript_with_the_events_attempt() -> None:
    api, engine = FakeCommandApi(), FakeEngine()
    event = started()
    await service(engine, api).process(event)

    assert engine.calls == [(KEY, "en-US", False)]
    assert engine.job_keys == [f"{event.audio_id}-3"]  # the same on a redelivery
    [request] = api.requests
    assert request.url.path == f"/commands/audio/{event.audio_id}/transcription-result"
    assert request.headers["authorization"] == "Bearer token"
    assert api.bodies == [
        {
            "outcome": "completed",
            "attempt": 3,
            "text": "the quick brown fox",
            "confidence": 0.9,
            "language": "en-US",
            "segments": [
                {
                    "start": 0.0,
                    "end": 1.5,
                    "text": "the quick brown fox",
                    "confidence": 0.9,
                    "language": "en-US",
                }
            ],
        }
    ]


async def test_engine_failure_posts_a_failed_result() -> None:
    api = FakeCommandApi()
    engine = FakeEngine(TranscriptionFailedError("the audio file cannot be decoded"))
    await service(engine, api).process(started())
    assert api.bodies == [
        {
            "outcome": "failed",
            "attempt": 3,
            "reason": "the audio file cannot be decoded",
            "retryable": False,
        }
    ]


class FakeModel:
    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("bad audio must not reach the model")


class LocalFiles:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def download(self, key: str) -> AsyncIterator[Path]:
        yield self.path


def wav(frames: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(frames)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "cannot be decoded"),
        (b"\x00 certainly not audio" * 50, "cannot be decoded"),
        (wav(b""), "no decodable sound"),
        (corrupt_flac(), "no decodable sound"),
    ],
    ids=["empty-file", "garbage", "wav-without-frames", "flac-with-garbage-frames"],
)
async def test_empty_or_corrupt_audio_ends_in_a_failed_result(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "audio"
    path.write_bytes(content)
    model = FakeModel()
    api = FakeCommandApi()
    engine = WhisperGateway(model, LocalFiles(path), max_duration_s=60)
    await service(engine, api).process(started())

    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert why in body["reason"]
    assert body["retryable"] is False
    assert model.calls == 0


async def test_audio_longer_than_the_limit_fails_before_decoding() -> None:
    api, engine = FakeCommandApi(), FakeEngine()
    audio = AudioToTranscribe(KEY, 3600.0, current_attempt=3, open=True)
    await service(engine, api, audio, max_duration_s=1800).process(started())
    assert engine.calls == []
    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert "60.0 min, longer than the 30.0 min" in body["reason"]


class MissingObjectS3:
    async def get_object(self, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "NoSuchKey", "Message": "gone"}},
            "GetObject",
        )


async def test_missing_s3_object_ends_in_a_failed_result() -> None:
    api = FakeCommandApi()
    source = S3AudioSource(MissingObjectS3(), "nova-audio")  # type: ignore[arg-type]
    engine = WhisperGateway(FakeModel(), source, max_duration_s=60)
    await service(engine, api).process(started())
    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert "not in storage (s3://nova-audio/audio/u/a.wav)" in body["reason"]


@pytest.mark.parametrize("kind", ["invalid-state", "stale-attempt"])
async def test_command_api_409_means_the_result_is_done(kind: str) -> None:
    api, engine = FakeCommandApi((409, kind)), FakeEngine()
    await service(engine, api).process(started())  # no error: offset may move on
    assert len(api.requests) == 1


async def test_command_api_503_is_transient_and_the_retry_skips_the_engine() -> None:
    api, engine = FakeCommandApi((503, "storage-unavailable")), FakeEngine()
    transcriber, event = service(engine, api), started()
    with pytest.raises(CommandApiUnavailableError) as raised:
        await transcriber.process(event)
    assert is_transient(raised.value)  # the consume loop rewinds the batch
    assert len(api.requests) == 4  # retried here with backoff first

    api.answers = [(200, "")]
    await transcriber.process(event)  # the redelivery
    assert len(engine.calls) == 1
    assert api.bodies[-1]["outcome"] == "completed"


async def test_unreachable_command_api_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.AsyncClient(
        transport=httpx.MockTransport(refuse), base_url="http://command-api"
    )
    sink = HttpCommandApi(client, lambda: "t", tries=2, first_backoff_s=0.0)
    transcriber = TranscriptionService(
        FakeCatalog(AudioToTranscribe(KEY, 1.0, 3, True)), FakeEngine(), sink, 60
    )
    with pytest.raises(CommandApiUnavailableError, match="is it running at"):
        await transcriber.process(started())


async def test_a_refused_transcript_still_ends_the_attempt() -> None:
    api, engine = FakeCommandApi((413, "event-too-large"), (200, "")), FakeEngine()
    await service(engine, api).process(started())
    assert [b["outcome"] for b in api.bodies] == ["completed", "failed"]
    assert "could not be recorded: event-too-large happened" in api.bodies[1]["reason"]


@pytest.mark.parametrize(
    "audio",
    [
        AudioToTranscribe(KEY, 1.0, current_attempt=3, open=False),
        AudioToTranscribe(KEY, 1.0, current_attempt=4, open=True),
    ],
    ids=["already-has-a-result", "superseded"],
)
async def test_duplicate_or_stale_request_runs_nothing(
    audio: AudioToTranscribe,
) -> None:
    api, engine = FakeCommandApi(), FakeEngine()
    await service(engine, api, audio).process(started(attempt=3))
    assert engine.calls == []
    assert api.requests == []


def test_the_catalog_folds_the_audios_events() -> None:
    audio_id, user = uuid4(), uuid4()
    history = [
        AudioCreated(audio_id=audio_id, user_id=user, s3_key=KEY, duration_s=2.0),
        AudioProcessingStarted(audio_id=audio_id, attempt=1),
    ]
    assert summarize(history) == AudioToTranscribe(KEY, 2.0, 1, True)
    done = [
        *history,
        TranscriptionCompleted(
            audio_id=audio_id, text="x", confidence=1, language="en-US"
        ),
        AudioProcessingCompleted(audio_id=audio_id),
    ]
    assert summarize(done) == AudioToTranscribe(KEY, 2.0, 1, False)
    assert summarize([]) is None


@pytest.mark.parametrize(
    ("seed", "whisper"),
    [("ja-JP", "ja"), ("en-US", "en"), ("en-GB", "en"), ("auto", None)],
)
def test_language_codes_map_to_whisper(seed: str, whisper: str | None) -> None:
    assert to_whisper(seed) == whisper


def test_language_mapping_back_and_to_aws() -> None:
    assert from_whisper("en", "en-GB") == "en-GB"
    assert from_whisper("ja", "auto") == "ja-JP"
    assert from_whisper("en", "ja-JP") == "en-US"  # what was heard wins
    assert from_whisper("haw", "auto") == "auto"
    assert to_aws("ja-JP") == "ja-JP"
    assert to_aws("auto") is None
    with pytest.raises(ValueError, match="not a code like"):
        to_whisper("english")


def test_confidence_comes_from_the_average_log_probability() -> None:
    assert confidence(0.0) == 1.0
    assert confidence(-0.5) == pytest.approx(0.6065, abs=1e-4)
    assert confidence(float("-inf")) == 0.0
    segments = (
        TranscriptSegment(0.0, 3.0, "a", 1.0),
        TranscriptSegment(3.0, 4.0, "b", 0.2),
    )
    assert overall_confidence(segments) == pytest.approx(0.8)


def test_dev_tokens_carry_the_transcriber_scope() -> None:
    token = dev_token_provider("a-development-secret-of-32-bytes!")()
    claims = jwt.decode(
        token, "a-development-secret-of-32-bytes!", algorithms=["HS256"]
    )
    assert claims["scope"] == SCOPE


class FakeBody:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def __aenter__(self) -> FakeBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.raw


def client_error(code: str, status: int, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} said so"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


RESULT = {
    "results": {
        "transcripts": [{"transcript": "こんにちは 世界"}],
        "items": [
            {
                "id": 0,
                "type": "pronunciation",
                "alternatives": [{"confidence": "0.9", "content": "x"}],
            },
            {
                "id": 1,
                "type": "pronunciation",
                "alternatives": [{"confidence": "0.7", "content": "y"}],
            },
        ],
        "audio_segments": [
            {
                "id": 0,
                "transcript": "こんにちは 世界",
                "start_time": "0.1",
                "end_time": "1.9",
                "items": [0, 1],
            }
        ],
    }
}


class FakeTranscribe:
    """Amazon Transcribe and S3 as far as the gateway uses them: jobs by name
    (a second start of a name is a ConflictException), each COMPLETED on its
    second poll, when its result JSON appears under its OutputKey."""

    def __init__(self, final: str = "COMPLETED", result: bytes | None = None) -> None:
        self.final = final
        self.result = json.dumps(RESULT).encode() if result is None else result
        self.jobs: dict[str, dict[str, Any]] = {}
        self.started: dict[str, Any] = {}
        self.starts = 0
        self.polls = 0
        self.outputs: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self.deleted_jobs: list[str] = []
        self.errors: dict[str, list[ClientError]] = {}
        """Raised, first one first, by the operation named by the key."""

    def _fail(self, operation: str) -> None:
        if self.errors.get(operation):
            raise self.errors[operation].pop(0)

    async def start_transcription_job(self, **kwargs: Any) -> dict[str, Any]:
        self._fail("start_transcription_job")
        name = kwargs["TranscriptionJobName"]
        if name in self.jobs:
            raise client_error("ConflictException", 400, "StartTranscriptionJob")
        self.jobs[name] = {"request": kwargs, "polls": 0}
        self.started = kwargs
        self.starts += 1
        return {}

    async def get_transcription_job(self, **kwargs: Any) -> dict[str, Any]:
        self._fail("get_transcription_job")
        job = self.jobs[kwargs["TranscriptionJobName"]]
        self.polls += 1
        job["polls"] += 1
        status = "IN_PROGRESS" if job["polls"] < 2 else self.final
        if status == "COMPLETED" and job["polls"] == 2:
            self.outputs[job["request"]["OutputKey"]] = self.result
        return {
            "TranscriptionJob": {
                "TranscriptionJobStatus": status,
                "LanguageCode": "ja-JP",
                "FailureReason": "Unsupported audio format",
            }
        }

    async def delete_transcription_job(self, **kwargs: Any) -> dict[str, Any]:
        del self.jobs[kwargs["TranscriptionJobName"]]
        self.deleted_jobs.append(kwargs["TranscriptionJobName"])
        return {}

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self._fail("get_object")
        if kwargs["Key"] not in self.outputs:
            raise client_error("NoSuchKey", 404, "GetObject")
        return {"Body": FakeBody(self.outputs[kwargs["Key"]])}

    async def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        self.outputs.pop(kwargs["Key"], None)
        self.deleted.append(kwargs["Key"])
        return {}


def aws(fake: FakeTranscribe) -> AmazonTranscribeGateway:
    return AmazonTranscribeGateway(
        fake, fake, "nova-audio", "nova-out", poll_interval_s=0.0
    )


async def test_amazon_transcribe_job_is_started_polled_and_read() -> None:
    fake = FakeTranscribe()
    transcript = await aws(fake).transcribe(KEY, "ja-JP", True, job_key="a-3")
    assert fake.started["TranscriptionJobName"] == "nova-a-3"
    assert fake.started["OutputKey"] == "transcripts/nova-a-3.json"
    assert fake.started["Media"] == {"MediaFileUri": f"s3://nova-audio/{KEY}"}
    assert fake.started["LanguageCode"] == "ja-JP"
    assert fake.started["Settings"]["ShowSpeakerLabels"] is True
    assert fake.polls == 2
    assert transcript.text == "こんにちは 世界"
    assert transcript.language == "ja-JP"
    assert transcript.confidence == pytest.approx(0.8)
    assert transcript.segments == (
        TranscriptSegment(0.1, 1.9, "こんにちは 世界", 0.8, "ja-JP"),
    )
    assert fake.deleted == [fake.started["OutputKey"]]
    assert fake.outputs == {}


async def test_amazon_transcribe_auto_language_and_failures() -> None:
    fake = FakeTranscribe(final="FAILED")
    with pytest.raises(TranscriptionFailedError, match="Unsupported audio format"):
        await aws(fake).transcribe(KEY, "auto", False)
    assert fake.started["IdentifyLanguage"] is True
    assert "LanguageCode" not in fake.started
    busy = FakeTranscribe()
    busy.errors["start_transcription_job"] = [
        client_error("LimitExceededException", 400, "StartTranscriptionJob")
    ]
    with pytest.raises(TranscribeBusyError) as raised:
        await aws(busy).transcribe(KEY, "en-US", False)
    assert is_transient(raised.value)


def test_job_names_come_from_the_request_in_the_characters_aws_allows() -> None:
    audio_id = uuid4()
    assert job_name(f"{audio_id}-2") == f"nova-{audio_id}-2"
    assert job_name("a b/c:d") == "nova-a-b-c-d"
    assert len(job_name("x" * 500)) == 200
    assert job_name(None) != job_name(None)


async def test_a_request_picked_up_again_reuses_its_running_job() -> None:
    fake = FakeTranscribe()
    # The first pick started the job, then its transcriber was killed.
    await fake.start_transcription_job(
        TranscriptionJobName="nova-a-3", OutputKey="transcripts/nova-a-3.json"
    )

    transcript = await aws(fake).transcribe(KEY, "ja-JP", False, job_key="a-3")

    assert fake.starts == 1  # no second AWS job
    assert list(fake.jobs) == ["nova-a-3"]
    assert transcript.text == "こんにちは 世界"


async def test_a_reused_job_whose_result_was_already_taken_runs_again() -> None:
    fake = FakeTranscribe()
    # The first pick read (and deleted) the result, then died unrecorded.
    await aws(fake).transcribe(KEY, "ja-JP", False, job_key="a-3")

    transcript = await aws(fake).transcribe(KEY, "ja-JP", False, job_key="a-3")

    assert fake.deleted_jobs == ["nova-a-3"]
    assert fake.starts == 2
    assert transcript.text == "こんにちは 世界"


@pytest.mark.parametrize(
    ("operation", "error", "reason", "retryable"),
    [
        (
            "start_transcription_job",
            client_error("BadRequestException", 400, "StartTranscriptionJob"),
            "Amazon Transcribe refused the audio: BadRequestException said so",
            False,
        ),
        (
            "start_transcription_job",
            client_error("AccessDeniedException", 403, "StartTranscriptionJob"),
            "Amazon Transcribe refused the request (AccessDeniedException: "
            "AccessDeniedException said so); the transcriber's AWS setup needs "
            "fixing",
            True,
        ),
        (
            "get_transcription_job",
            client_error("NotFoundException", 404, "GetTranscriptionJob"),
            "Amazon Transcribe refused the request (NotFoundException",
            True,
        ),
        (
            "get_object",
            client_error("AccessDenied", 403, "GetObject"),
            "S3 (the transcript's output bucket) refused the request (AccessDenied",
            True,
        ),
    ],
    ids=["bad-request", "access-denied", "job-not-found", "output-access-denied"],
)
async def test_a_refusal_by_aws_ends_the_attempt_with_its_reason(
    operation: str, error: ClientError, reason: str, retryable: bool
) -> None:
    fake = FakeTranscribe()
    fake.errors[operation] = [error]
    api = FakeCommandApi()

    await service(aws(fake), api).process(started())

    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert body["reason"].startswith(reason)
    assert body["retryable"] is retryable


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (
            "start_transcription_job",
            client_error("InternalFailureException", 500, "StartTranscriptionJob"),
        ),
        (
            "get_transcription_job",
            client_error("ThrottlingException", 400, "GetTranscriptionJob"),
        ),
        ("get_transcription_job", client_error("", 503, "GetTranscriptionJob")),
        ("get_object", client_error("SlowDown", 503, "GetObject")),
        ("get_object", client_error("InternalError", 500, "GetObject")),
    ],
    ids=["internal-failure", "throttled", "bare-503", "s3-slow-down", "s3-500"],
)
async def test_throttling_and_5xx_are_transient_and_submit_nothing(
    operation: str, error: ClientError
) -> None:
    fake = FakeTranscribe()
    fake.errors[operation] = [error]
    api = FakeCommandApi()
    transcriber, event = service(aws(fake), api), started()

    with pytest.raises(TranscribeBusyError) as raised:
        await transcriber.process(event)
    assert is_transient(raised.value)
    assert api.requests == []

    await transcriber.process(event)  # the rewound batch, redelivered
    assert fake.starts == 1  # the retry reused the job it had started, if any
    assert [b["outcome"] for b in api.bodies] == ["completed"]


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (b"{not json", "JSONDecodeError"),
        (b"[1, 2]", "a JSON list, not an object"),
        (json.dumps({"results": {"transcripts": "oops"}}).encode(), "AttributeError"),
        (
            json.dumps(
                {
                    "results": {
                        "transcripts": [{"transcript": "hi"}],
                        "audio_segments": [{"start_time": "soon"}],
                    }
                }
            ).encode(),
            "ValueError",
        ),
    ],
    ids=["not-json", "not-an-object", "transcripts-not-a-list", "bad-time"],
)
async def test_a_result_document_that_cannot_be_read_fails_the_attempt(
    result: bytes, why: str
) -> None:
    api = FakeCommandApi()

    await service(aws(FakeTranscribe(result=result)), api).process(started())

    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert "returned a result this service cannot read" in body["reason"]
    assert why in body["reason"]
    assert body["retryable"] is True


# --- progress ------------------------------------------------------------------


class FakeProgressStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.writes: list[tuple[UUID, dict[str, object]]] = []

    async def write(self, audio_id: UUID, entry: Mapping[str, object]) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.writes.append((audio_id, dict(entry)))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_progress_is_written_at_most_once_per_interval() -> None:
    store, clock, audio_id = FakeProgressStore(), Clock(), uuid4()
    reporter = ProgressReporter(
        store, audio_id, 3, min_interval_s=1.0, clock=clock, now=lambda: "T"
    )
    assert await reporter.flush() is False  # nothing reported yet
    reporter.report(1.0, 10.0, 1)
    assert await reporter.flush() is True
    reporter.report(2.0, 10.0, 2)
    reporter.report(3.0, 10.0, 3)
    clock.now += 0.5
    assert await reporter.flush() is False  # too soon
    clock.now += 0.5
    assert await reporter.flush() is True  # the latest, not each report
    clock.now += 5
    assert await reporter.flush() is False  # unchanged: no write
    assert store.writes == [
        (
            audio_id,
            {
                "attempt": 3,
                "seconds_done": 1.0,
                "duration_s": 10.0,
                "segments_done": 1,
                "updated_at": "T",
            },
        ),
        (
            audio_id,
            {
                "attempt": 3,
                "seconds_done": 3.0,
                "duration_s": 10.0,
                "segments_done": 3,
                "updated_at": "T",
            },
        ),
    ]


async def test_progress_reported_from_another_thread_is_flushed() -> None:
    store = FakeProgressStore()
    reporter = ProgressReporter(store, uuid4(), 1, min_interval_s=0.0)
    worker = threading.Thread(target=reporter.report, args=(12.5, 10.0, 4))
    worker.start()
    worker.join()
    await reporter.flush()
    [(_, entry)] = store.writes
    assert entry["seconds_done"] == 10.0  # clamped to the duration
    assert entry["segments_done"] == 4


async def test_service_writes_progress_while_the_engine_runs() -> None:
    api, engine, store = FakeCommandApi(), FakeEngine(), FakeProgressStore()
    engine.progress = [(0.0, 1.5, 0), (1.5, 1.5, 1)]
    engine.pause_s = 0.05
    transcriber = TranscriptionService(
        FakeCatalog(AudioToTranscribe(KEY, 1.5, current_attempt=3, open=True)),
        engine,
        HttpCommandApi(
            httpx.AsyncClient(
                transport=httpx.MockTransport(api), base_url="http://command-api"
            ),
            lambda: "token",
        ),
        1800.0,
        progress=store,
    )
    event = started()
    await transcriber.process(event)
    assert api.bodies[0]["outcome"] == "completed"
    assert store.writes  # the first report is written at once
    audio_id, entry = store.writes[0]
    assert audio_id == event.audio_id
    assert entry["attempt"] == 3
    assert entry["duration_s"] == 1.5


async def test_a_redis_failure_never_fails_the_transcription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, engine = FakeCommandApi(), FakeEngine()
    engine.progress = [(0.5, 1.5, 1)]
    engine.pause_s = 0.05
    transcriber = TranscriptionService(
        FakeCatalog(AudioToTranscribe(KEY, 1.5, current_attempt=3, open=True)),
        engine,
        HttpCommandApi(
            httpx.AsyncClient(
                transport=httpx.MockTransport(api), base_url="http://command-api"
            ),
            lambda: "token",
        ),
        1800.0,
        progress=FakeProgressStore(fail=True),
    )
    with caplog.at_level(logging.WARNING):
        await transcriber.process(started())
    assert api.bodies[0]["outcome"] == "completed"
    assert "progress could not be written" in caplog.text


class CancellationLosingStore:
    """A write that returns normally although it was cancelled, as redis-py's
    does on Python 3.11 when the cancellation arrives as the write completes
    (its `asyncio.wait_for` drops the cancellation)."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.lost = 0

    async def write(self, audio_id: UUID, entry: Mapping[str, object]) -> None:
        self.writing.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.lost += 1


class EngineEndingDuringAProgressWrite(FakeEngine):
    def __init__(self, store: CancellationLosingStore) -> None:
        super().__init__()
        self.store = store

    async def transcribe(
        self,
        s3_key: str,
        language: str,
        enable_diarization: bool,
        on_progress: ProgressCallback | None = None,
        *,
        job_key: str | None = None,
    ) -> Transcript:
        assert on_progress is not None
        on_progress(1.5, 1.5, 1)
        await self.store.writing.wait()
        return TRANSCRIPT


async def test_a_stopped_reporter_ends_although_its_cancellation_was_lost() -> None:
    store = CancellationLosingStore()
    reporter = ProgressReporter(store, uuid4(), 1, min_interval_s=0.0)
    reporter.report(0.5, 1.5, 1)
    flusher = asyncio.create_task(reporter.run(poll_s=0.01))
    await store.writing.wait()
    reporter.stop()
    flusher.cancel()
    done, _ = await asyncio.wait({flusher}, timeout=5)
    assert store.lost == 1
    assert flusher in done, "the flusher went on after stop()"


async def test_a_lost_cancellation_of_a_progress_write_does_not_hold_the_result() -> (
    None
):
    store, api = CancellationLosingStore(), FakeCommandApi()
    transcriber = TranscriptionService(
        FakeCatalog(AudioToTranscribe(KEY, 1.5, current_attempt=3, open=True)),
        EngineEndingDuringAProgressWrite(store),
        HttpCommandApi(
            httpx.AsyncClient(
                transport=httpx.MockTransport(api), base_url="http://command-api"
            ),
            lambda: "token",
        ),
        1800.0,
        progress=store,
    )
    # Not asyncio.wait_for: on a timeout it would cancel the request, and the
    # request's own `await flusher` would swallow that cancellation too.
    request = asyncio.create_task(transcriber.process(started()))
    done, _ = await asyncio.wait({request}, timeout=5)
    assert store.lost == 1  # the flusher was cancelled inside its write
    assert request in done, "the result waited for a flusher that never ends"
    assert [b["outcome"] for b in api.bodies] == ["completed"]


class SegmentModel:
    """faster-whisper's model: a lazy generator of segments and the info."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        def segments() -> Any:
            for start, end, text in [(0.0, 0.4, "hello"), (0.4, 0.9, "world")]:
                self.threads.add(threading.get_ident())
                yield SimpleNamespace(start=start, end=end, text=text, avg_logprob=-0.1)

        return segments(), SimpleNamespace(language="en")


async def test_whisper_reports_progress_after_each_segment(tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    path.write_bytes(wav(b"\x00\x01" * 16_000))  # 1 s
    model = SegmentModel()
    heard: list[tuple[float, float, int, int]] = []

    def on_progress(seconds_done: float, duration_s: float, segments: int) -> None:
        heard.append((seconds_done, duration_s, segments, threading.get_ident()))

    engine = WhisperGateway(model, LocalFiles(path), max_duration_s=60)
    transcript = await engine.transcribe(KEY, "en-US", False, on_progress=on_progress)
    assert transcript.text == "hello world"
    assert [h[:3] for h in heard] == [(0.0, 1.0, 0), (0.4, 1.0, 1), (0.9, 1.0, 2)]
    assert {h[3] for h in heard} == model.threads  # from the worker thread
    assert threading.get_ident() not in model.threads


class CrashingModel:
    """faster-whisper's model dying inside its segment generator."""

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        def segments() -> Any:
            yield SimpleNamespace(start=0.0, end=0.4, text="hello", avg_logprob=-0.1)
            raise RuntimeError("CTranslate2: std::bad_alloc in beam search")

        return segments(), SimpleNamespace(language="en")


async def test_a_model_crash_mid_transcription_ends_in_a_failed_result(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audio.wav"
    path.write_bytes(wav(b"\x00\x01" * 16_000))
    api = FakeCommandApi()
    engine = WhisperGateway(CrashingModel(), LocalFiles(path), max_duration_s=60)

    await service(engine, api).process(started())

    [body] = api.bodies
    assert body["outcome"] == "failed"
    assert body["reason"] == (
        "the speech recogniser failed (RuntimeError: CTranslate2: std::bad_alloc "
        "in beam search)"
    )
    assert body["retryable"] is False


class StreamingBody:
    """aiobotocore's response body: an async context with chunked reads."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def __aenter__(self) -> StreamingBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(self.raw), size):
            yield self.raw[start : start + size]


class FlakyS3:
    """S3 answering 500 first, then the object."""

    def __init__(self, raw: bytes, failures: int = 1) -> None:
        self.raw = raw
        self.failures = failures
        self.gets = 0

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.gets += 1
        if self.gets <= self.failures:
            raise client_error("InternalError", 500, "GetObject")
        return {"Body": StreamingBody(self.raw)}


async def test_a_transient_s3_error_while_downloading_is_retried_not_failed() -> None:
    s3 = FlakyS3(wav(b"\x00\x01" * 16_000))
    source = S3AudioSource(s3, "nova-audio")  # type: ignore[arg-type]
    api = FakeCommandApi()
    engine = WhisperGateway(SegmentModel(), source, max_duration_s=60)
    transcriber, event = service(engine, api), started()

    with pytest.raises(ClientError) as raised:
        await transcriber.process(event)
    # Transient: the consume loop rewinds the batch instead of parking it,
    # and nothing was submitted, so the audio is not failed.
    assert is_transient(raised.value)
    assert api.requests == []

    await transcriber.process(event)  # the redelivery

    assert s3.gets == 2
    [body] = api.bodies
    assert body["outcome"] == "completed"
    assert body["text"] == "hello world"


async def test_whisper_ignores_a_failing_progress_callback(tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    path.write_bytes(wav(b"\x00\x01" * 16_000))

    def broken(seconds_done: float, duration_s: float, segments: int) -> None:
        raise RuntimeError("boom")

    engine = WhisperGateway(SegmentModel(), LocalFiles(path), max_duration_s=60)
    transcript = await engine.transcribe(KEY, "en-US", False, on_progress=broken)
    assert transcript.text == "hello world"


class FakeRedis:
    def __init__(self) -> None:
        self.sets: list[tuple[str, str, int]] = []

    async def set(self, key: str, value: str, px: int) -> None:
        self.sets.append((key, value, px))


async def test_redis_progress_store_writes_json_with_a_ttl() -> None:
    redis, audio_id = FakeRedis(), uuid4()
    settings = NovaSettings()
    store = RedisProgressStore(redis, settings, ttl_s=600)  # type: ignore[arg-type]
    await store.write(audio_id, {"attempt": 1, "seconds_done": 0.5})
    [(key, value, px)] = redis.sets
    assert key == progress_key(settings, str(audio_id))
    assert json.loads(value) == {"attempt": 1, "seconds_done": 0.5}
    assert px == 600_000
