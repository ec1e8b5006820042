"""REST entrypoint: `/commands/*` on port 8001."""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name closures local to `create_app`.

import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.datastructures import UploadFile

from nova_events import EventMetadata, Segment
from nova_platform.auth import Principal, Scope, TokenVerifier
from nova_platform.aws import client_kwargs, session
from nova_platform.http.limits import BodySizeLimit
from nova_platform.http.metrics import install_metrics
from nova_platform.http.openapi import install_openapi
from nova_platform.http.problems import (
    AUTH_PROBLEMS,
    Forbidden,
    NotReady,
    Problem,
    install_problem_handlers,
    problem_responses,
)
from nova_platform.http.security import CorrelationIdMiddleware, bearer_principal
from nova_platform.logging import correlation_id
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.serve import serve
from nova_platform.tracing import current_traceparent
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_platform.webhooks import WebhookStore
from nova_platform.webhooks.dynamodb import DynamoDBWebhookStore

from ..adapters.audio_probe import probe_audio
from ..adapters.dynamodb_event_store import DynamoDBEventStore
from ..adapters.dynamodb_idempotency import DynamoDBIdempotencyStore
from ..adapters.metered_event_store import MeteredEventStore
from ..adapters.s3_audio_storage import S3AudioStorage
from ..application.commands import (
    Actor,
    DeleteAudio,
    RecordTranscription,
    RecordTranscriptionFailure,
    RegisterAudio,
    TranscribeAudio,
    UploadAudio,
)
from ..application.erasure import UserErasure
from ..application.handlers import AudioCommandHandler, CommandResult, user_prefix
from ..application.idempotency import IdempotencyStore
from ..application.ports import EventStore
from ..application.storage import AudioStorage
from ..application.webhooks import WebhookSubscriptions
from ..settings import CommandApiSettings
from .asyncapi import relay_asyncapi
from .idempotency import KEY_PATTERN, CommandRun, IdempotentRunner, fingerprint
from .problems import install_command_problems
from .users import user_router
from .webhooks import webhook_router

# Segments of letters, digits, '.', '_' and '-', none empty, "." or "..".
_SEGMENT = (
    r"([A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)"
)
S3_KEY = f"^{_SEGMENT}(/{_SEGMENT})*$"
_S3_KEY = re.compile(S3_KEY)
# ASCII digits only (`str.isdigit` also takes "²", which `int` refuses), and
# few enough of them for any version. Matched whole (`fullmatch`), as OpenAPI
# patterns are, so a trailing newline does not pass as the end.
IF_MATCH = r'^[ \t]*(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})[ \t]*$'
_IF_MATCH = re.compile(IF_MATCH)
_DIGITS = re.compile(r"[0-9]+")
_LANGUAGE = r"^(auto|[a-z]{2,3}-[A-Z]{2})$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
"""Text without control characters: what `_plain_text` lets through."""

Language = Annotated[
    str, Field(pattern=_LANGUAGE, description="`ja-JP`, `en-US`, ... or `auto`")
]


# The problems each command may answer with (`type` ends in the kind named).
_UNAVAILABLE = {
    503: "`event-store-unavailable` or `storage-unavailable`: nothing was "
    "written; retry after `Retry-After` seconds",
}
_BODY_TOO_LARGE = {413: "`request-too-large`: the body is over the upload limit"}
_ERASED = {410: "`user-erased`: the audio's owner was erased"}
_ON_AUDIO = {
    **AUTH_PROBLEMS,
    404: "`not-found`: no such audio visible to you",
    409: "`invalid-state`, `concurrent-write`, or `idempotency-key-in-use` / "
    "`-released` (retry with the same key)",
    **_ERASED,
    422: "`invalid-request` or `idempotency-key-reused`",
    **_UNAVAILABLE,
}
_PINNED = {
    400: "`invalid-if-match` or `invalid-idempotency-key`",
    412: "`version-mismatch`: If-Match names another version",
}
_CREATE_PROBLEMS = problem_responses(
    {
        400: "`invalid-idempotency-key`",
        **AUTH_PROBLEMS,
        403: "`forbidden`: no `audio:write` scope, or `s3_key` outside your prefix",
        409: "`already-registered`, `concurrent-write`, or "
        "`idempotency-key-in-use` / `-released` (retry with the same key)",
        413: "`upload-too-large`, `request-too-large` or `event-too-large`",
        410: "`user-erased`: you were erased",
        415: "`unsupported-media-type` or `not-audio`",
        422: "`invalid-request`, `empty-upload`, `object-missing` or "
        "`idempotency-key-reused`",
        **_UNAVAILABLE,
    }
)
_TRANSCRIBE_PROBLEMS = problem_responses({**_ON_AUDIO, **_PINNED, **_BODY_TOO_LARGE})
_RESULT_PROBLEMS = problem_responses(
    {
        **_ON_AUDIO,
        400: "`invalid-idempotency-key`",
        403: "`forbidden`: only the transcriber (`service:transcriber`) sends results",
        409: "`invalid-state`, `stale-attempt`, `concurrent-write`, or "
        "`idempotency-key-in-use` / `-released` (retry with the same key)",
        **_BODY_TOO_LARGE,
    }
)
_DELETE_PROBLEMS = problem_responses({**_ON_AUDIO, **_PINNED})

_SAME_AUDIO = {"audio_id": "$response.body#/audio_id"}
_AT_THIS_VERSION = {**_SAME_AUDIO, "header.If-Match": "$response.header.ETag"}
_NEXT_COMMANDS = {
    "TranscribeAudio": (
        "~1commands~1audio~1{audio_id}~1transcribe/post",
        _AT_THIS_VERSION,
    ),
    "RecordTranscriptionResult": (
        "~1commands~1audio~1{audio_id}~1transcription-result/post",
        _SAME_AUDIO,
    ),
    "DeleteAudio": ("~1commands~1audio~1{audio_id}/delete", _AT_THIS_VERSION),
}


def _then(status: int, *commands: str) -> dict[int | str, Any]:
    """OpenAPI links from an accepted command to the commands that may follow
    it on the same audio, pinned to the version it answered with (If-Match)
    where the next command takes one."""
    links = {}
    for name in commands:
        path, parameters = _NEXT_COMMANDS[name]
        links[name] = {"operationRef": f"#/paths/{path}", "parameters": parameters}
    return {status: {"links": links}}


def _plain_text(value: str | None, what: str) -> str | None:
    if value is not None and _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class RegisterAudioRequest(BaseModel):
    """Register an object already uploaded under `audio/<your user id>/`."""

    model_config = ConfigDict(extra="forbid")

    s3_key: str = Field(
        min_length=1, max_length=1024, json_schema_extra={"pattern": S3_KEY}
    )
    metadata: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )
    title: str | None = Field(
        default=None, max_length=200, json_schema_extra={"pattern": PLAIN_TEXT}
    )
    language: Language | None = None

    @field_validator("s3_key")
    @classmethod
    def _plain_key(cls, key: str) -> str:
        if not _S3_KEY.fullmatch(key):
            raise ValueError(
                "use letters, digits, '.', '_', '-' and single '/' separators; "
                "no empty, '.' or '..' path segments"
            )
        return key

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return _plain_text(value, "title")


class UploadForm(BaseModel):
    """The text fields that may come with a multipart upload."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=200)
    language: Language | None = None
    file_name: str | None = Field(default=None, max_length=255)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return _plain_text(value, "title")

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and (
            "/" in value or "\\" in value or value in (".", "..")
        ):
            raise ValueError(
                "the file name must not contain a path; send the bare name"
            )
        return _plain_text(value, "the file name")


class TranscribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: Language | None = Field(
        default=None,
        description="defaults to the upload's language, else `ja-JP` as in the seed",
    )
    enable_diarization: bool = False


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str = Field(max_length=10_000)
    confidence: float | None = Field(default=None, ge=0, le=1)
    language: str | None = Field(default=None, pattern=_LANGUAGE)

    @model_validator(mode="after")
    def _ordered(self) -> "SegmentIn":
        if self.end < self.start:
            raise ValueError("a segment's `end` must not be before its `start`")
        return self


class TranscriptResult(BaseModel):
    """A finished transcription of attempt `attempt`."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["completed"]
    attempt: int = Field(ge=1)
    text: str = Field(max_length=2_000_000)
    confidence: float = Field(ge=0, le=1)
    language: str = Field(pattern=_LANGUAGE)
    segments: list[SegmentIn] = Field(default_factory=list, max_length=50_000)


class FailureResult(BaseModel):
    """An attempt that ended without a transcript."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["failed"]
    attempt: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000)
    retryable: bool


TranscriptionResult = Annotated[
    TranscriptResult | FailureResult, Field(discriminator="outcome")
]


class CommandAccepted(BaseModel):
    audio_id: UUID
    version: int
    status: str


def parse_if_match(value: str | None) -> int | None:
    """The version an `If-Match: "<version>"` header pins; None when absent or `*`."""
    if value is None:
        return None
    if not _IF_MATCH.fullmatch(value):
        raise Problem(
            f'If-Match must be a version in quotes, like "3" (got {value!r}); '
            "use the ETag of your last response",
            status=400,
            kind="invalid-if-match",
            title="Invalid If-Match",
        )
    digits = _DIGITS.search(value)
    return None if digits is None else int(digits[0])


def accepted(
    result: CommandResult, status: int, location: bool = False
) -> JSONResponse:
    body = CommandAccepted(
        audio_id=result.audio_id, version=result.version, status=result.status
    )
    headers = {"ETag": f'"{result.version}"'}
    if location:
        headers["Location"] = f"/queries/audio/{result.audio_id}"
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, headers=headers
    )


def invalid(exc: ValidationError) -> Problem:
    errors = [
        {"location": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
        for e in exc.errors()
    ]
    fields = ", ".join(e["location"] or "body" for e in errors)
    return Problem(
        f"fix these fields and send again: {fields}",
        status=422,
        kind="invalid-request",
        title="The request does not match the API's schema",
        errors=errors,
    )


def file_digest(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(1 << 20):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def create_app(
    settings: CommandApiSettings,
    event_store: EventStore | None = None,
    storage: AudioStorage | None = None,
    idempotency: IdempotencyStore | None = None,
    webhooks: WebhookStore | None = None,
    personal: PersonalData | None = None,
) -> FastAPI:
    """The command API; the optional adapters replace AWS in unit tests.

    `personal` seals and opens personal data; by default it is built from the
    settings (`NOVA_KMS_KEY_ID` or `NOVA_MASTER_KEY`, refusing to start without
    one), or, when an event store is given, keeps throwaway keys in memory.
    """
    verifier = TokenVerifier(settings)
    registry = CollectorRegistry()
    caller = bearer_principal(verifier)
    max_upload = settings.max_upload_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            store, files, keys = event_store, storage, idempotency
            hooks, personal_data = webhooks, personal
            if store is None or files is None or keys is None or hooks is None:
                aws = session()
                ddb = await stack.enter_async_context(
                    aws.client("dynamodb", **client_kwargs(settings))
                )
                if hooks is None:
                    hooks = DynamoDBWebhookStore(ddb, settings.webhooks_table)
            if store is None or files is None or keys is None:
                s3 = await stack.enter_async_context(
                    aws.client("s3", **client_kwargs(settings))
                )
                if store is None and personal_data is None:
                    personal_data = await open_personal_data(settings, stack, ddb)
                store = store or DynamoDBEventStore(
                    ddb, settings.event_store_table, personal=personal_data
                )
                files = files or S3AudioStorage(s3, settings.audio_bucket)
                keys = keys or DynamoDBIdempotencyStore(ddb, settings.idempotency_table)
                app.state.ready_check = partial(
                    ddb.describe_table, TableName=settings.event_store_table
                )
            if personal_data is None:
                # Adapters given by a test: keys that live as long as the app.
                personal_data = PersonalData(
                    InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32))
                )
            metered = MeteredEventStore(store, registry)
            app.state.erasure = UserErasure(metered, files, personal_data)
            app.state.handler = AudioCommandHandler(metered, files, probe_audio)
            app.state.idempotency = IdempotentRunner(keys, settings.idempotency_wait_s)
            app.state.webhooks = WebhookSubscriptions(
                hooks,
                personal_data,
                allow_private_targets=settings.webhook_allow_private_targets,
            )
            yield

    app = FastAPI(
        title="Nova command API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/commands/docs",
        openapi_url="/commands/openapi.json",
    )
    install_problem_handlers(app)
    install_openapi(app)
    install_command_problems(app)
    install_metrics(app, registry)
    app.add_middleware(CorrelationIdMiddleware)
    # Multipart framing adds a little to the file itself.
    app.add_middleware(BodySizeLimit, max_bytes=max_upload + 64 * 1024)

    async def writer(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.has(Scope.AUDIO_WRITE):
            raise Forbidden("this command needs a token with the `audio:write` scope")
        return principal

    async def transcriber(
        principal: Annotated[Principal, Depends(caller)],
    ) -> Principal:
        if not principal.has(Scope.TRANSCRIBER):
            raise Forbidden(
                "only the transcriber service (scope `service:transcriber`) may "
                "submit transcription results"
            )
        return principal

    Writer = Annotated[Principal, Depends(writer)]  # noqa: N806 - a type alias
    IdempotencyKey = Annotated[  # noqa: N806 - a type alias
        str | None,
        Header(
            alias="Idempotency-Key",
            description="send the same key again to get the first answer back",
            json_schema_extra={"pattern": KEY_PATTERN},
        ),
    ]
    IfMatch = Annotated[  # noqa: N806 - a type alias
        str | None,
        Header(
            alias="If-Match",
            description='the version you read, e.g. "3" (the ETag), or `*`',
            json_schema_extra={"pattern": IF_MATCH},
        ),
    ]

    def actor(principal: Principal, *, service: bool = False) -> Actor:
        return Actor(principal.user_id, is_admin=principal.is_admin or service)

    def event_metadata(principal: Principal, run: CommandRun) -> EventMetadata:
        command_id = run.command_id
        return EventMetadata(
            correlation_id=correlation_id.get() or command_id,
            causation_id=command_id,
            user_id=str(principal.user_id),
            command_id=command_id,
            traceparent=current_traceparent(),
        )

    async def once(
        request: Request,
        principal: Principal,
        key: str | None,
        request_fingerprint: str,
        command: Callable[[CommandRun], Awaitable[Response]],
    ) -> Response:
        runner: IdempotentRunner = request.app.state.idempotency
        return await runner.run_command(
            principal.user_id, key, request_fingerprint, command
        )

    def handler(request: Request) -> AudioCommandHandler:
        result: AudioCommandHandler = request.app.state.handler
        return result

    @app.post(
        "/commands/audio",
        status_code=201,
        response_model=CommandAccepted,
        summary="Upload an audio file (multipart) or register one already in S3 (JSON)",
        responses={
            **_CREATE_PROBLEMS,
            **_then(201, "TranscribeAudio", "DeleteAudio"),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "additionalProperties": False,
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "title": {
                                    "type": "string",
                                    "maxLength": 200,
                                    "pattern": PLAIN_TEXT,
                                },
                                "language": {"type": "string", "pattern": _LANGUAGE},
                            },
                        }
                    },
                    "application/json": {
                        "schema": RegisterAudioRequest.model_json_schema()
                    },
                },
            }
        },
    )
    async def create_audio(
        request: Request, principal: Writer, key: IdempotencyKey = None
    ) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return await upload(request, principal, key)
        if content_type.split(";")[0].strip() in ("application/json", ""):
            return await register(request, principal, key)
        raise Problem(
            f"send the audio as multipart/form-data (field `file`) or register an "
            f"S3 object with application/json; got {content_type!r}",
            status=415,
            kind="unsupported-media-type",
            title="Unsupported media type",
        )

    async def upload(
        request: Request, principal: Principal, key: str | None
    ) -> Response:
        form = await request.form(max_files=1, max_fields=8)
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            raise Problem(
                "send the audio in the multipart field `file`",
                status=422,
                kind="invalid-request",
                title="No file",
            )
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        try:
            details = UploadForm.model_validate(
                {**fields, "file_name": upload_file.filename or None}
            )
        except ValidationError as exc:
            raise invalid(exc) from exc
        size = upload_file.size or 0
        if size == 0:
            raise Problem(
                "the file is empty; send the audio itself",
                status=422,
                kind="empty-upload",
                title="Empty upload",
            )
        if size > max_upload:
            raise Problem(
                f"the file is {size / 1e6:.1f} MB; the limit is "
                f"{max_upload / 1e6:.1f} MB (NOVA_MAX_UPLOAD_BYTES)",
                status=413,
                kind="upload-too-large",
                title="Upload too large",
            )
        command = UploadAudio(
            actor(principal),
            upload_file.file,
            size,
            file_name=details.file_name,
            title=details.title,
            language=details.language,
        )
        print_ = fingerprint(
            "upload", details.model_dump_json(), file_digest(upload_file)
        )

        async def run(run: CommandRun) -> Response:
            result = await handler(request).upload_audio(
                command, event_metadata(principal, run), resumed=run.resumed
            )
            return accepted(result, 201, location=True)

        return await once(request, principal, key, print_, run)

    async def register(
        request: Request, principal: Principal, key: str | None
    ) -> Response:
        raw = await request.body()
        try:
            body = RegisterAudioRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise invalid(exc) from exc
        prefix = user_prefix(principal.user_id)
        if not body.s3_key.startswith(prefix):
            raise Forbidden(
                f"s3_key must be under your own prefix {prefix!r}", s3_key=body.s3_key
            )
        command = RegisterAudio(
            actor(principal),
            body.s3_key,
            body.metadata,
            title=body.title,
            language=body.language,
        )

        async def run(run: CommandRun) -> Response:
            result = await handler(request).register_audio(
                command, event_metadata(principal, run)
            )
            return accepted(result, 201, location=True)

        return await once(request, principal, key, fingerprint("register", raw), run)

    @app.post(
        "/commands/audio/{audio_id}/transcribe",
        status_code=202,
        response_model=CommandAccepted,
        summary="Ask for a transcription; answers at once, the transcriber works later",
        responses={
            **_TRANSCRIBE_PROBLEMS,
            **_then(202, "RecordTranscriptionResult", "DeleteAudio"),
        },
    )
    async def transcribe(
        audio_id: UUID,
        request: Request,
        principal: Writer,
        body: TranscribeRequest | None = None,
        key: IdempotencyKey = None,
        if_match: IfMatch = None,
    ) -> Response:
        options = body or TranscribeRequest()
        command = TranscribeAudio(
            actor(principal),
            audio_id,
            options.language,
            options.enable_diarization,
            parse_if_match(if_match),
        )

        async def run(run: CommandRun) -> Response:
            result = await handler(request).transcribe_audio(
                command, event_metadata(principal, run)
            )
            return accepted(result, 202)

        print_ = fingerprint("transcribe", str(audio_id), options.model_dump_json())
        return await once(request, principal, key, print_, run)

    @app.post(
        "/commands/audio/{audio_id}/transcription-result",
        status_code=200,
        response_model=CommandAccepted,
        summary="The transcriber's result: a transcript or a failure (service scope)",
        responses={
            **_RESULT_PROBLEMS,
            **_then(200, "TranscribeAudio", "DeleteAudio"),
        },
    )
    async def transcription_result(
        audio_id: UUID,
        request: Request,
        result: TranscriptionResult,
        principal: Annotated[Principal, Depends(transcriber)],
        key: IdempotencyKey = None,
    ) -> Response:
        command: RecordTranscription | RecordTranscriptionFailure
        if isinstance(result, TranscriptResult):
            command = RecordTranscription(
                actor(principal, service=True),
                audio_id,
                result.attempt,
                result.text,
                result.confidence,
                result.language,
                tuple(Segment(**s.model_dump()) for s in result.segments),
            )
        else:
            command = RecordTranscriptionFailure(
                actor(principal, service=True),
                audio_id,
                result.attempt,
                result.reason,
                result.retryable,
            )

        async def run(run: CommandRun) -> Response:
            commands = handler(request)
            metadata = event_metadata(principal, run)
            if isinstance(command, RecordTranscription):
                done = await commands.record_transcription(command, metadata)
            else:
                done = await commands.record_transcription_failure(command, metadata)
            return accepted(done, 200)

        print_ = fingerprint("result", str(audio_id), result.model_dump_json())
        return await once(request, principal, key, print_, run)

    @app.delete(
        "/commands/audio/{audio_id}",
        status_code=200,
        response_model=CommandAccepted,
        summary="Erase an audio file: its S3 object and its data in the projections",
        responses=_DELETE_PROBLEMS,
    )
    async def delete_audio(
        audio_id: UUID,
        request: Request,
        principal: Writer,
        key: IdempotencyKey = None,
        if_match: IfMatch = None,
    ) -> Response:
        command = DeleteAudio(actor(principal), audio_id, parse_if_match(if_match))

        async def run(run: CommandRun) -> Response:
            result = await handler(request).delete_audio(
                command, event_metadata(principal, run)
            )
            return accepted(result, 200)

        return await once(
            request, principal, key, fingerprint("delete", str(audio_id)), run
        )

    app.include_router(webhook_router(writer))
    app.include_router(user_router(writer, caller, event_metadata))

    events_document = relay_asyncapi(settings)

    @app.get("/commands/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> dict[str, Any]:
        """What the relay publishes to Kafka (AsyncAPI 3.0)."""
        return events_document

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> dict[str, str]:
        check: Callable[[], Awaitable[Any]] | None = getattr(
            request.app.state, "ready_check", None
        )
        try:
            if check is not None:
                await check()
        except Exception as exc:
            raise NotReady(f"the event store is not reachable: {exc}") from exc
        return {"status": "ready"}

    return app


def main() -> None:
    settings = CommandApiSettings()
    serve("command-api", settings, settings.http_port, create_app)
