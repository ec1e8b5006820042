"""Command handlers: load the aggregate, decide, append.

Each handler rebuilds `AudioFile` from its stream, lets the aggregate decide,
and appends the new events conditionally on the version it read. When another
writer got there first and the client did not pin a version with `If-Match`,
the decision is simply made again on the fresh state.

Every event carries its command's `command_id`. A command whose events are in
the stream already (a retry that took over from a run that died after its
commit) answers with what that commit did instead of deciding again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO
from uuid import UUID, uuid4, uuid5

from nova_events import AUDIO_FILE, EventEnvelope, EventMetadata, decode_payload
from nova_platform.personal import UserErasedError

from ..domain.audio_file import AudioFile, ProcessingStatus
from .commands import (
    Actor,
    DeleteAudio,
    RecordTranscription,
    RecordTranscriptionFailure,
    RegisterAudio,
    TranscribeAudio,
    UploadAudio,
)
from .errors import (
    AudioAlreadyRegisteredError,
    AudioNotFoundError,
    StaleAttemptError,
    VersionMismatchError,
)
from .ports import ConcurrencyError, EventStore
from .storage import AudioInfo, AudioObjectMissingError, AudioStorage

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "ja-JP"
MAX_DECISION_ATTEMPTS = 3

_EXTENSIONS = {"wav": "wav", "mp3": "mp3", "ogg": "ogg", "flac": "flac", "m4a": "m4a"}
# An upload's audio id follows from its command id, so every run of one request
# writes the same stream and the same object.
_UPLOADED_IDS = UUID("67e5447a-2600-4d85-a267-079ac896a75e")
# A registered object's audio id follows from its key: registering a key twice
# claims the same stream's first version, which the event store refuses.
_REGISTERED_IDS = UUID("d52231ea-d7c8-4b24-a555-1f5510201a48")
# Where `upload_audio` stores a file: `audio/<user id>/<audio id>.<extension>`.
_UPLOADED_KEY = re.compile(r"^audio/[^/]+/(?P<audio_id>[0-9a-f-]{36})\.[a-z0-9]+$")


@dataclass(frozen=True, slots=True)
class CommandResult:
    audio_id: UUID
    version: int
    status: str


def user_prefix(user_id: UUID) -> str:
    """Every user's objects live under their own prefix of the audio bucket."""
    return f"audio/{user_id}/"


class AudioCommandHandler:
    """Runs commands against `AudioFile` streams."""

    def __init__(
        self,
        event_store: EventStore,
        storage: AudioStorage,
        probe: Callable[[BinaryIO], AudioInfo],
    ) -> None:
        self._store = event_store
        self._storage = storage
        self._probe = probe

    async def upload_audio(
        self, command: UploadAudio, metadata: EventMetadata, *, resumed: bool = False
    ) -> CommandResult:
        """Store the file and append `AudioCreated`.

        `resumed`: an earlier run of this command may have committed; look
        first, so a file erased since is not stored again.
        """
        # Parsing headers of a large file blocks: keep it off the event loop.
        info = await asyncio.to_thread(self._probe, command.file)
        audio_id = uuid5(_UPLOADED_IDS, metadata.command_id or str(uuid4()))
        if resumed and (done := await self._committed(audio_id, metadata)):
            return done
        extension = _EXTENSIONS.get(info.format, "bin")
        key = f"{user_prefix(command.actor.user_id)}{audio_id}.{extension}"
        await self._storage.put(key, command.file, command.size, info.content_type)
        audio = AudioFile.create(
            command.actor.user_id,
            key,
            audio_id=audio_id,
            title=command.title,
            file_name=command.file_name,
            content_type=info.content_type,
            size_bytes=command.size,
            duration_s=round(info.duration_s, 3),
            language=command.language,
        )
        try:
            return await self._commit(audio, metadata)
        except ConcurrencyError:
            # A run of this same command that was thought dead got there first:
            # the object is its object now.
            if done := await self._committed(audio_id, metadata):
                return done
            await self._storage.delete(key)
            raise
        except BaseException:
            await self._storage.delete(key)
            raise

    async def register_audio(
        self, command: RegisterAudio, metadata: EventMetadata
    ) -> CommandResult:
        """Append `AudioCreated` for an object in the store, once per key."""
        await self._refuse_uploaded_key(command.s3_key)
        stored = await self._storage.head(command.s3_key)
        if stored is None:
            raise AudioObjectMissingError(
                f"there is no object at {command.s3_key!r}; upload the file first "
                "(or send it as multipart `file` to this route)"
            )
        audio_id = uuid5(_REGISTERED_IDS, command.s3_key)
        audio = AudioFile.create(
            command.actor.user_id,
            command.s3_key,
            dict(command.metadata),
            audio_id=audio_id,
            title=command.title,
            content_type=stored.content_type,
            size_bytes=stored.size,
            language=command.language,
        )
        try:
            return await self._commit(audio, metadata)
        except ConcurrencyError as exc:
            events = await self._store.get_events(AUDIO_FILE, audio_id)
            if done := _result_of(events, metadata.command_id):
                return done
            raise AudioAlreadyRegisteredError(
                command.s3_key, audio_id, deleted=_status(events) == "deleted"
            ) from exc

    async def _refuse_uploaded_key(self, s3_key: str) -> None:
        """Refuse the key of an uploaded file: that audio exists already."""
        match = _UPLOADED_KEY.match(s3_key)
        try:
            audio_id = UUID(match["audio_id"]) if match else None
        except ValueError:
            audio_id = None
        if audio_id is None:
            return
        events = await self._store.get_events(AUDIO_FILE, audio_id)
        if events and events[0].data.get("s3_key") == s3_key:
            raise AudioAlreadyRegisteredError(
                s3_key, audio_id, deleted=_status(events) == "deleted"
            )

    async def transcribe_audio(
        self, command: TranscribeAudio, metadata: EventMetadata
    ) -> CommandResult:
        def decide(audio: AudioFile) -> None:
            language = command.language or audio.language or DEFAULT_LANGUAGE
            audio.start_processing(language, command.enable_diarization)

        return await self._decide(
            command.actor, command.audio_id, command.expected_version, decide, metadata
        )

    async def record_transcription(
        self, command: RecordTranscription, metadata: EventMetadata
    ) -> CommandResult:
        def decide(audio: AudioFile) -> None:
            self._require_attempt(audio, command.attempt)
            audio.complete_transcription(
                command.text, command.confidence, command.language, command.segments
            )
            audio.complete_processing()

        return await self._decide(
            command.actor, command.audio_id, None, decide, metadata
        )

    async def record_transcription_failure(
        self, command: RecordTranscriptionFailure, metadata: EventMetadata
    ) -> CommandResult:
        def decide(audio: AudioFile) -> None:
            self._require_attempt(audio, command.attempt)
            audio.fail_processing(command.reason, command.retryable)

        return await self._decide(
            command.actor, command.audio_id, None, decide, metadata
        )

    async def delete_audio(
        self, command: DeleteAudio, metadata: EventMetadata
    ) -> CommandResult:
        """Append `AudioDeleted`, then delete the object; a retry finishes the job."""
        audio = await self._load(command.actor, command.audio_id)
        if audio.status is ProcessingStatus.DELETED:
            await self._storage.delete(audio.s3_key)
            return CommandResult(audio.audio_id, audio.version, audio.status.value)
        result = await self._decide(
            command.actor,
            command.audio_id,
            command.expected_version,
            lambda a: a.delete(),
            metadata,
        )
        await self._storage.delete(audio.s3_key)
        return result

    async def _decide(
        self,
        actor: Actor,
        audio_id: UUID,
        expected_version: int | None,
        decide: Callable[[AudioFile], None],
        metadata: EventMetadata,
    ) -> CommandResult:
        for attempt in range(1, MAX_DECISION_ATTEMPTS + 1):
            audio, events = await self._load_events(actor, audio_id)
            if done := _result_of(events, metadata.command_id):
                return done
            if expected_version is not None and expected_version != audio.version:
                raise VersionMismatchError(expected_version, audio.version)
            decide(audio)
            try:
                return await self._commit(audio, metadata)
            except ConcurrencyError:
                if expected_version is not None or attempt == MAX_DECISION_ATTEMPTS:
                    raise
                logger.info(
                    "concurrent write; deciding again",
                    extra={"audio_id": str(audio_id), "attempt": attempt},
                )
        raise AssertionError("unreachable")

    async def _load(self, actor: Actor, audio_id: UUID) -> AudioFile:
        audio, _ = await self._load_events(actor, audio_id)
        return audio

    async def _load_events(
        self, actor: Actor, audio_id: UUID
    ) -> tuple[AudioFile, list[EventEnvelope]]:
        events = await self._store.get_events(AUDIO_FILE, audio_id)
        if not events:
            raise AudioNotFoundError(audio_id)
        audio = _rebuild(events)
        if audio.user_id != actor.user_id and not actor.is_admin:
            raise AudioNotFoundError(audio_id)
        if events[0].erased:
            # Its owner was erased: nothing is decided on an audio that is gone.
            raise UserErasedError(UUID(str(events[0].data["user_id"])), None)
        return audio, events

    async def _committed(
        self, audio_id: UUID, metadata: EventMetadata
    ) -> CommandResult | None:
        """What this command committed to `audio_id` before, if it did."""
        events = await self._store.get_events(AUDIO_FILE, audio_id)
        return _result_of(events, metadata.command_id)

    @staticmethod
    def _require_attempt(audio: AudioFile, attempt: int) -> None:
        if attempt != audio.attempts:
            raise StaleAttemptError(attempt, audio.attempts)

    async def _commit(self, audio: AudioFile, metadata: EventMetadata) -> CommandResult:
        stored = await self._store.append_events(
            AUDIO_FILE,
            audio.audio_id,
            audio.get_uncommitted_events(),
            expected_version=audio.version,
            metadata=metadata,
            owner=audio.user_id,
        )
        audio.mark_events_as_committed()
        logger.info(
            "events appended",
            extra={
                "audio_id": str(audio.audio_id),
                "version": audio.version,
                "event_types": [e.event_type for e in stored],
            },
        )
        return CommandResult(audio.audio_id, audio.version, audio.status.value)


def _rebuild(events: list[EventEnvelope]) -> AudioFile:
    return AudioFile.reconstitute([(e.version, decode_payload(e)) for e in events])


def _status(events: list[EventEnvelope]) -> str:
    return _rebuild(events).status.value if events else ""


def _result_of(
    events: list[EventEnvelope], command_id: str | None
) -> CommandResult | None:
    """The result of the commit `command_id` made to this stream, if any."""
    if command_id is None:
        return None
    mine = [e.version for e in events if e.metadata.command_id == command_id]
    if not mine:
        return None
    audio = _rebuild([e for e in events if e.version <= max(mine)])
    logger.info(
        "command committed before; answering with its result",
        extra={"audio_id": str(audio.audio_id), "version": audio.version},
    )
    return CommandResult(audio.audio_id, audio.version, audio.status.value)
