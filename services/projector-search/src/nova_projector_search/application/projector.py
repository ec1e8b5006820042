"""Folds a batch of events into the latest document per audio, then writes once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from nova_events import EventEnvelope, decode_payload

from .documents import Document, apply_event


class SearchIndex(Protocol):
    async def fetch(self, audio_ids: Sequence[str]) -> dict[str, Document]: ...

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None: ...


class SearchProjector:
    def __init__(self, index: SearchIndex) -> None:
        self._index = index

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        ordered = sorted(envelopes, key=lambda e: (str(e.aggregate_id), e.version))
        audio_ids = sorted({str(e.aggregate_id) for e in ordered})
        current: dict[str, Document | None] = dict(await self._index.fetch(audio_ids))
        versions: dict[str, int] = {}
        for envelope in ordered:
            audio_id = str(envelope.aggregate_id)
            doc = current.get(audio_id)
            if doc is not None and int(doc.get("version", 0)) >= envelope.version:
                continue
            current[audio_id] = apply_event(doc, envelope, decode_payload(envelope))
            versions[audio_id] = envelope.version
        await self._index.write({a: current[a] for a in versions}, versions)
