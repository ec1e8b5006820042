"""Folds a batch of events into the latest document per audio, then writes once.

Documents carry the stream version as their external version, so OpenSearch
itself refuses anything older than what it holds. A gap (an event whose
predecessor the document does not have) is filled from the event store.

A `UserErased` strips every document of that user of its personal fields,
once no process can open the user's data any more (`wait_for_erasure`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import AUDIO_FILE, USER, EventEnvelope, UserErased, decode_payload

from .documents import Document, apply_event

logger = logging.getLogger(__name__)

WaitForErasure = Callable[[datetime], Awaitable[None]]


class SearchGapError(Exception):
    """Raised when a document misses versions and no event store is wired."""


class SearchIndex(Protocol):
    async def fetch(self, audio_ids: Sequence[str]) -> dict[str, Document]: ...

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None: ...

    async def erase_user(self, user_id: UUID) -> int:
        """Replace every document of `user_id` holding personal fields by its
        tombstone (`erased_document`), at its version; returns how many."""
        ...


class StreamReader(Protocol):
    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]: ...


class SearchProjector:
    def __init__(
        self,
        index: SearchIndex,
        reader: StreamReader | None = None,
        wait_for_erasure: WaitForErasure | None = None,
    ) -> None:
        self._index = index
        self._reader = reader
        self._wait_for_erasure = wait_for_erasure

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        await self._project_audios(
            [e for e in envelopes if e.aggregate_type == AUDIO_FILE]
        )
        for envelope in envelopes:
            if envelope.aggregate_type == USER:
                await self._apply_user_event(envelope)

    async def _apply_user_event(self, envelope: EventEnvelope) -> None:
        if envelope.event_type != UserErased.event_type():
            return
        erasure = decode_payload(envelope, UserErased)
        if self._wait_for_erasure is not None:
            await self._wait_for_erasure(erasure.erased_at)
        count = await self._index.erase_user(erasure.user_id)
        logger.info(
            "user erased from the search index",
            extra={"user_id": str(erasure.user_id), "documents": count},
        )

    async def _project_audios(self, envelopes: Sequence[EventEnvelope]) -> None:
        if not envelopes:
            return
        ordered = sorted(envelopes, key=lambda e: (str(e.aggregate_id), e.version))
        audio_ids = sorted({str(e.aggregate_id) for e in ordered})
        current: dict[str, Document] = dict(await self._index.fetch(audio_ids))
        versions: dict[str, int] = {}
        for envelope in ordered:
            audio_id = str(envelope.aggregate_id)
            have = int(current[audio_id]["version"]) if audio_id in current else 0
            if envelope.version <= have:
                continue
            for event in await self._missing(envelope, have):
                current[audio_id] = apply_event(
                    current.get(audio_id), event, decode_payload(event)
                )
            current[audio_id] = apply_event(
                current.get(audio_id), envelope, decode_payload(envelope)
            )
            versions[audio_id] = envelope.version
        await self._index.write({a: current[a] for a in versions}, versions)

    async def repair(self, aggregate_type: str, aggregate_id: UUID) -> None:
        """Fold every stored event of the stream the index does not have: an
        audio's, or a user's (`UserErased` tombstones their documents again)."""
        if self._reader is None:
            raise RuntimeError("repair needs the event store reader")
        await self.project(await self._reader.get_events(aggregate_type, aggregate_id))

    async def _missing(self, envelope: EventEnvelope, have: int) -> list[EventEnvelope]:
        if envelope.version == have + 1:
            return []
        if self._reader is None:
            raise SearchGapError(
                f"audio {envelope.aggregate_id}: event version {envelope.version} "
                f"arrived but the index holds version {have}"
            )
        stored = await self._reader.get_events(
            AUDIO_FILE, envelope.aggregate_id, have + 1
        )
        return [e for e in stored if e.version < envelope.version]
