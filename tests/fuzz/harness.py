"""What the fuzz tests share: the apps in process, tokens, budget and hooks.

command-api and query-api run through their real `create_app` wiring with
in-memory adapters. query-api reads a projection of command-api's own event
store (the real projector functions, applied at each read), so a sequence of
commands followed by queries sees the states those commands made, and
`system_app` serves both under one merged OpenAPI document for stateful runs
that cross from `/commands` to `/queries`.

Budget: `NOVA_FUZZ_EXAMPLES` examples per operation (a small default, so the
suite stays a few minutes on two cores); runs without it are derandomized, runs
with it (`make fuzz`) take their seed from `--hypothesis-seed`.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import MutableMapping, Sequence
from contextlib import AsyncExitStack
from typing import Any
from uuid import UUID

import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, settings
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.core.failures import AcceptedNegativeData, Failure, ServerError
from schemathesis.openapi.checks import RejectedPositiveData

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.application.commands import (
    Actor,
    DeleteAudio,
    RecordTranscription,
    RecordTranscriptionFailure,
    TranscribeAudio,
    UploadAudio,
)
from nova_command_api.application.handlers import AudioCommandHandler
from nova_command_api.application.storage import StoredObject
from nova_command_api.entrypoints.http import create_app as create_command_app
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_FILE, EventEnvelope, EventMetadata, Segment
from nova_platform.auth.dev_token import issue
from nova_platform.webhooks import InMemoryWebhookStore
from nova_projector_readmodel.adapters.memory_read_model import InMemoryReadModel
from nova_projector_readmodel.application.projector import ReadModelProjector
from nova_projector_search.adapters.memory_index import InMemorySearchIndex
from nova_projector_search.application.projector import SearchProjector
from nova_query_api.application.queries import (
    AudioReadModel,
    IndexedHit,
    IndexedPage,
    ListPage,
)
from nova_query_api.entrypoints.http import create_app as create_query_app
from nova_query_api.settings import QueryApiSettings

from ..audio_samples import sine_wav

SECRET = "fuzz-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
SCOPES = "audio:read audio:write service:transcriber"
WAV = sine_wav(0.5)

EXAMPLES = int(os.environ.get("NOVA_FUZZ_EXAMPLES", "25"))
LONG_RUN = "NOVA_FUZZ_EXAMPLES" in os.environ
SEED = int(os.environ.get("NOVA_FUZZ_SEED", "0"))
"""schemathesis' own seed (its value pools); Hypothesis' is derandomized, or
`--hypothesis-seed` in a long run."""
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
STATEFUL_SETTINGS = settings(
    FUZZ_SETTINGS,
    max_examples=max(12, EXAMPLES // 2),
    stateful_step_count=10,
)


def token(scopes: str = SCOPES, user: UUID = USER) -> str:
    return issue(user, scopes, SECRET)


class BearerToken:
    """schemathesis auth: a valid token of `USER` with every scope but admin."""

    def get(self, case: schemathesis.Case[Any], ctx: schemathesis.AuthContext) -> str:
        return token()

    def set(
        self, case: schemathesis.Case[Any], data: str, ctx: schemathesis.AuthContext
    ) -> None:
        if case.headers is None:
            case.headers = CaseInsensitiveDict()
        case.headers["Authorization"] = f"Bearer {data}"


class FuzzAudioStorage(InMemoryAudioStorage):
    """S3 where every key under the fuzz user's prefix holds a short WAV, so a
    generated registration under that prefix finds its object."""

    async def head(self, key: str) -> StoredObject | None:
        found = await super().head(key)
        if found is None and key.startswith(f"audio/{USER}/"):
            return StoredObject(key=key, size=len(WAV), content_type="audio/wav")
        return found


class ProjectedReadSide:
    """query-api's read model and search index, projected at each read from
    command-api's event store by the projectors' own code."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store

    async def _streams(self) -> list[list[EventEnvelope]]:
        created = await self._store.get_events_by_type("AudioCreated", limit=100_000)
        return [
            await self._store.get_events(AUDIO_FILE, e.aggregate_id) for e in created
        ]

    async def _items(self) -> list[AudioReadModel]:
        model = InMemoryReadModel()
        projector = ReadModelProjector(model)
        for stream in await self._streams():
            await projector.project(stream)
        return [AudioReadModel.model_validate(i) for i in model.items.values()]

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        return next((a for a in await self._items() if a.audio_id == audio_id), None)

    async def list_by_user(
        self, user_id: UUID, limit: int, after: dict[str, str] | None
    ) -> ListPage:
        mine = sorted(
            (a for a in await self._items() if a.user_id == user_id),
            key=lambda a: (a.created_at, str(a.audio_id)),
            reverse=True,
        )
        if after is not None:
            mark = (after["created_at"], after["audio_id"])
            mine = [a for a in mine if (a.created_at, str(a.audio_id)) < mark]
        live = [a for a in mine if a.status != "deleted"]
        page = live[:limit]
        if len(live) <= limit or not page:
            return ListPage(page)
        last = page[-1]
        return ListPage(
            page, {"created_at": last.created_at, "audio_id": str(last.audio_id)}
        )

    async def _documents(self) -> dict[str, dict[str, Any]]:
        index = InMemorySearchIndex()
        projector = SearchProjector(index)
        for stream in await self._streams():
            await projector.project(stream)
        return index.docs

    async def search(
        self, text: str, user_id: UUID | None, limit: int, offset: int
    ) -> IndexedPage:
        found = sorted(
            (
                d
                for d in (await self._documents()).values()
                if d.get("status") != "deleted"
                and (user_id is None or d.get("user_id") == str(user_id))
                and text.lower() in str(d.get("transcription", "")).lower()
            ),
            key=lambda d: str(d["audio_id"]),
        )
        hits = [
            IndexedHit(
                {k: v for k, v in d.items() if k != "transcription"}, 1.0, [text]
            )
            for d in found[offset : offset + limit]
        ]
        return IndexedPage(hits, len(found))

    async def document(self, audio_id: UUID) -> dict[str, Any] | None:
        return (await self._documents()).get(str(audio_id))


class NoProgress:
    async def get(self, audio_id: UUID) -> dict[str, Any] | None:
        return None


class Backends:
    """One set of in-memory backends that both apps share."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.storage = FuzzAudioStorage()
        self.idempotency = InMemoryIdempotencyStore()
        self.webhooks = InMemoryWebhookStore()
        self.read_side = ProjectedReadSide(self.store)

    def command_app(self) -> FastAPI:
        return create_command_app(
            CommandApiSettings(jwt_secret=SECRET, max_upload_bytes=256 * 1024),
            event_store=self.store,
            storage=self.storage,
            idempotency=self.idempotency,
            webhooks=self.webhooks,
        )

    def query_app(self, *, grpc: bool = False) -> FastAPI:
        """query-api on these backends; with `grpc`, also serving gRPC on a
        free 127.0.0.1 port (`app.state.grpc_port`) while it runs."""
        return create_query_app(
            QueryApiSettings(
                jwt_secret=SECRET,
                consistency_wait_s=0.05,
                http_host="127.0.0.1",
                grpc_port=0,
            ),
            repository=self.read_side,
            search_index=self.read_side,
            history=self.store,
            progress=NoProgress(),
            grpc=grpc,
        )

    async def seed(self, count: int) -> list[UUID]:
        """`count` uploads of `USER` through the command side, in turn left
        pending, transcribed (with segments), failed and erased."""
        app = self.command_app()
        async with app.router.lifespan_context(app):
            return [await _seed_one(app.state.handler, n) for n in range(count)]


async def _seed_one(handler: AudioCommandHandler, n: int) -> UUID:
    def meta(step: str) -> EventMetadata:
        return EventMetadata(correlation_id=f"seed-{n}", command_id=f"{step}-{n}")

    user, transcriber = Actor(USER), Actor(USER, is_admin=True)
    upload = UploadAudio(user, io.BytesIO(WAV), len(WAV), file_name=f"seed-{n}.wav")
    audio_id = (await handler.upload_audio(upload, meta("upload"))).audio_id
    if n % 4 == 0:
        return audio_id
    await handler.transcribe_audio(TranscribeAudio(user, audio_id), meta("start"))
    if n % 4 == 2:
        failure = RecordTranscriptionFailure(
            transcriber, audio_id, 1, "the engine gave up", retryable=False
        )
        await handler.record_transcription_failure(failure, meta("fail"))
        return audio_id
    segments = (Segment(start=0.0, end=0.4, text="hello <b>world</b>"),)
    result = RecordTranscription(
        transcriber, audio_id, 1, "hello <b>world</b>", 0.9, "en-US", segments
    )
    await handler.record_transcription(result, meta("done"))
    if n % 4 == 3:
        await handler.delete_audio(DeleteAudio(user, audio_id), meta("erase"))
    return audio_id


Scope = MutableMapping[str, Any]


_READS = {
    "ReadAudio": (
        "#/paths/~1queries~1audio~1{audio_id}/get",
        {
            "audio_id": "$response.body#/audio_id",
            "min_version": "$response.body#/version",
        },
    ),
    "ReadHistory": (
        "#/paths/~1queries~1audio~1{audio_id}~1history/get",
        {"audio_id": "$response.body#/audio_id"},
    ),
}


def _link_reads(document: dict[str, Any]) -> None:
    """Links from every accepted command to the queries of its audio, at the
    version it answered: what a client does right after a command; and from
    an upload to its owner erasing themselves, so scenarios go on after it."""
    if "/commands/users/me" in document["paths"]:
        created = document["paths"]["/commands/audio"]["post"]["responses"]["201"]
        created["links"]["EraseOwner"] = {
            "operationRef": "#/paths/~1commands~1users~1me/delete"
        }
    for path in document["paths"].values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                schema = (
                    response.get("content", {})
                    .get("application/json", {})
                    .get("schema", {})
                )
                if schema.get("$ref") != "#/components/schemas/CommandAccepted":
                    continue
                links = response.setdefault("links", {})
                for name, (ref, parameters) in _READS.items():
                    links[name] = {"operationRef": ref, "parameters": parameters}


class InProcess:
    """The ASGI app the fuzzer calls: `services` ("commands", "queries") by
    path prefix, and their merged OpenAPI document at `/openapi.json`.

    Every lifespan startup (schemathesis starts one per test) builds the apps
    again on fresh backends, with `seed` uploads made through the command
    side, so tests do not share state while the steps of one test do.
    """

    def __init__(self, *services: str, seed: int = 0) -> None:
        self._services = services
        self._seed = seed
        self.audio_ids: list[UUID] = []
        """The seeded audios of the running apps (fixed: their ids follow
        from the seeding commands)."""
        self.apps = self._build()

    def _build(self) -> dict[str, FastAPI]:
        self.backends = Backends()
        makers = {
            "commands": self.backends.command_app,
            "queries": self.backends.query_app,
        }
        return {f"/{name}": makers[name]() for name in self._services}

    def document(self) -> dict[str, Any]:
        documents = [app.openapi() for app in self.apps.values()]
        merged = copy.deepcopy(documents[0])
        components = merged.setdefault("components", {})
        for other in documents[1:]:
            merged["info"]["title"] = "Nova command and query APIs"
            merged["paths"].update(copy.deepcopy(other["paths"]))
            for section, entries in other.get("components", {}).items():
                mine = components.setdefault(section, {})
                for name, entry in entries.items():
                    assert mine.get(name, entry) == entry, f"both define {name}"
                    mine[name] = entry
        if "/queries/audio/{audio_id}" in merged["paths"]:
            _link_reads(merged)
        return merged

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/openapi.json":
            await JSONResponse(self.document())(scope, receive, send)
            return
        prefix = "/" + path.split("/")[1] if path.count("/") else path
        app = self.apps.get(prefix) or next(iter(self.apps.values()))
        await app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup", message
        self.apps = self._build()
        async with AsyncExitStack() as stack:
            for app in self.apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            if self._seed:
                self.audio_ids = await self.backends.seed(self._seed)
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown", message
        await send({"type": "lifespan.shutdown.complete"})


def realistic(
    context: schemathesis.HookContext,
    case: schemathesis.Case[Any],
    known: Sequence[UUID] = (),
) -> Any:
    """`map_case` for positive cases: uploads carry real audio, registrations
    a key under the caller's prefix, and half of the `audio_id`s name one of
    the `known` audios (else every read would be a 404); negative cases stay
    as generated."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    path = case.path_parameters or {}
    if known and isinstance(path.get("audio_id"), str):
        try:
            drawn = UUID(path["audio_id"]).int
        except ValueError:
            drawn = 1
        if drawn % 2 == 0:
            path["audio_id"] = str(known[drawn // 2 % len(known)])
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != (
        "POST",
        "/commands/audio",
    ):
        return case
    body: Any = case.body
    if isinstance(body, dict) and "file" in body:
        body["file"] = WAV
    elif isinstance(body, dict) and isinstance(body.get("s3_key"), str):
        key = f"audio/{USER}/{body['s3_key']}"
        if len(key) <= 1024:
            body["s3_key"] = key
    return case


# Answers to schema-valid requests that the schema cannot foresee, by problem
# kind: they are the API's contract, not failures of `positive_data_acceptance`.
FORESEEN_REFUSALS = {
    "invalid-cursor": "a cursor is opaque and signed: one the fuzzer made up is "
    "refused",
    "idempotency-key-reused": "the fuzzer sent an Idempotency-Key again with "
    "another request",
    "event-too-large": "the schema bounds each field, not their sum",
    "version-mismatch": "If-Match named a version the audio is not at",
    "object-missing": "the schema cannot say which objects are in the bucket",
    "user-erased": "the fuzzer's user erased themselves earlier in the run",
}
# Rules between fields, or on what a field means, that JSON Schema cannot
# state: `invalid-request` errors at these locations.
FORESEEN_INVALID = {
    "body.url": "a webhook URL must name a public host, without credentials",
    "query.all_users": "`user_id` and `all_users` exclude each other",
    "query.min_version": "`after_audio` and `min_version` go together",
    "header.X-Min-Version": "`min_version` and `X-Min-Version` must agree",
}
FORESEEN_MESSAGES = {
    "must not be before its `start`": "a segment ends after it starts",
}
# Negative cases that HTTP itself says to accept: a server ignores the
# headers it does not know (RFC 9110, 5.1), so an extra one is not invalid.
IGNORED_VIOLATIONS = ("in header - object with unexpected properties",)
# Refusals of invalid requests with statuses the check does not expect: a body
# over the size limit is refused before anything in it is read (413), and
# nothing at all is accepted from a user erased earlier in the run (410).
REFUSED_ANYWAY = {413: {"request-too-large", "upload-too-large"}, 410: {"user-erased"}}
# Deliberate 503s: the problem says what is unavailable and when to retry.
RETRYABLE_UNAVAILABLE = {
    "not-yet-consistent",
    "event-store-unavailable",
    "storage-unavailable",
}


def _problem(response: schemathesis.Response) -> tuple[str, list[dict[str, str]]]:
    """The problem kind of `response` and its `errors`."""
    try:
        body = response.json()
    except ValueError:
        return "", []
    if not isinstance(body, dict):
        return "", []
    return str(body.get("type", "")).rsplit("/", 1)[-1], list(body.get("errors", ()))


def _foreseen_error(error: dict[str, str]) -> bool:
    message = str(error.get("message", ""))
    return error.get("location") in FORESEEN_INVALID or any(
        fragment in message for fragment in FORESEEN_MESSAGES
    )


def foreseen(
    context: schemathesis.HookContext,
    failure: Failure,
    case: schemathesis.Case[Any],
    response: schemathesis.Response,
) -> bool:
    """`filter_failure`: False for an answer listed above, True otherwise."""
    kind, errors = _problem(response)
    if isinstance(failure, RejectedPositiveData):
        if kind in FORESEEN_REFUSALS:
            return False
        if kind == "invalid-request" and errors and all(map(_foreseen_error, errors)):
            return False
    if isinstance(failure, AcceptedNegativeData) and (
        any(v in failure.message for v in IGNORED_VIOLATIONS)
        or kind in REFUSED_ANYWAY.get(response.status_code, ())
    ):
        return False
    if isinstance(failure, ServerError) and response.status_code == 503:
        return not (kind in RETRYABLE_UNAVAILABLE and "retry-after" in response.headers)
    return True


def load(app: InProcess, *, authenticated: bool = True) -> schemathesis.BaseSchema:
    """`app`'s OpenAPI document as a schemathesis schema: a valid token on
    every call unless `authenticated` is False, realistic positive uploads,
    and the foreseen answers filtered out (see `cli_hooks` for the CLI)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.seed = SEED
    if authenticated:
        schema.auth()(BearerToken)

    def map_case(
        context: schemathesis.HookContext, case: schemathesis.Case[Any]
    ) -> Any:
        return realistic(context, case, app.audio_ids)

    schema.hook("map_case")(map_case)
    schema.hook("filter_failure")(foreseen)
    return schema
