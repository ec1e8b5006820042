"""Folds a batch of events into the latest document per audio, then writes once.

Documents carry the stream version as their external version, so OpenSearch
itself refuses anything older than what it holds. A gap (an event whose
predecessor the document does not have) is filled from the event store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol
from uuid import UUID

from nova_events import AUDIO_FILE, EventEnvelope, decode_payload

from .documents import Document, apply_event


class SearchGapError(Exception):
    """Raised when a document misses versions and no event store is wired."""


class SearchIndex(Protocol):
    async def fetch(self, audio_ids: Sequence[str]) -> dict[str, Document]: ...

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None: ...


class StreamReader(Protocol):
    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]: ...


class SearchProjector:
    def __init__(self, index: SearchIndex, reader: StreamReader | None = None) -> None:
        self._index = index
        self._reader = reader

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
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

    async def repair(self, audio_id: UUID) -> None:
        """Fold every stored event of `audio_id` the document does not have."""
        if self._reader is None:
            raise RuntimeError("repair needs the event store reader")
        await self.project(await self._reader.get_events(AUDIO_FILE, audio_id))

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
