"""Queries and the read-model view they return (the seed's section 3.3)."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from nova_platform.auth import Principal


class SegmentView(BaseModel):
    start: float
    end: float
    text: str
    confidence: float | None = None


class AudioReadModel(BaseModel):
    """One audio file as readers see it."""

    model_config = ConfigDict(extra="ignore")

    audio_id: UUID
    user_id: UUID
    s3_key: str | None = None
    title: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    metadata: dict[str, str] = {}
    status: str
    language: str | None = None
    transcription: str | None = None
    confidence: float | None = None
    segments: list[SegmentView] = []
    failure_reason: str | None = None
    attempts: int = 0
    created_at: str
    updated_at: str | None = None
    completed_at: str | None = None
    version: int


class AudioNotFoundError(Exception):
    """Raised when the audio does not exist, was erased, or is not the caller's."""

    def __init__(self, audio_id: UUID) -> None:
        self.audio_id = audio_id
        super().__init__(f"no audio {audio_id} visible to you")


class ReadModelRepository(Protocol):
    async def get(self, audio_id: UUID) -> AudioReadModel | None: ...


class AudioQueryHandler:
    def __init__(self, repository: ReadModelRepository) -> None:
        self._repository = repository

    async def get_by_id(self, audio_id: UUID, caller: Principal) -> AudioReadModel:
        audio = await self._repository.get(audio_id)
        # Another user's audio answers exactly like a missing one: no enumeration.
        if audio is None or audio.status == "deleted":
            raise AudioNotFoundError(audio_id)
        if audio.user_id != caller.user_id and not caller.is_admin:
            raise AudioNotFoundError(audio_id)
        return audio
