"""Command handlers: load the aggregate, decide, append."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from nova_events import AUDIO_FILE, EventMetadata

from ..domain.audio_file import AudioFile
from .commands import RegisterAudio
from .ports import EventStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandResult:
    audio_id: UUID
    version: int


class AudioCommandHandler:
    """Runs commands against `AudioFile` streams in the event store."""

    def __init__(self, event_store: EventStore) -> None:
        self._store = event_store

    async def register_audio(
        self, command: RegisterAudio, metadata: EventMetadata
    ) -> CommandResult:
        audio = AudioFile.create(command.user_id, command.s3_key, command.metadata)
        return await self._commit(audio, metadata)

    async def _commit(self, audio: AudioFile, metadata: EventMetadata) -> CommandResult:
        stored = await self._store.append_events(
            AUDIO_FILE,
            audio.audio_id,
            audio.get_uncommitted_events(),
            expected_version=audio.version,
            metadata=metadata,
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
        return CommandResult(audio_id=audio.audio_id, version=audio.version)
