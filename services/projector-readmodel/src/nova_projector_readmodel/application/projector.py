"""Applies a batch of events to the read model, one audio at a time in order.

Each change is conditional on the stored version, so a duplicate or a stale
redelivery changes nothing. When an event arrives whose predecessor was never
applied (a gap), the missing events are read from the event store and applied
first, instead of skipping ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from nova_events import AUDIO_FILE, EventEnvelope, decode_payload

from .projection import ItemChange, change_for

logger = logging.getLogger(__name__)


class ProjectionGapError(Exception):
    """Raised by a read model when `change` does not follow the stored version."""

    def __init__(self, audio_id: str, version: int, stored_version: int | None) -> None:
        self.audio_id = audio_id
        self.version = version
        self.stored_version = stored_version
        super().__init__(
            f"audio {audio_id}: event version {version} arrived but the read model "
            f"is at {stored_version}; the events in between must be applied first"
        )


class ReadModel(Protocol):
    async def apply(self, change: ItemChange) -> bool:
        """Apply once: True if applied, False for a duplicate or stale change;
        raises `ProjectionGapError` when versions are missing before it."""
        ...


class StreamReader(Protocol):
    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]: ...


class CacheInvalidator(Protocol):
    async def invalidate(self, audio_ids: Sequence[str]) -> None: ...


class ReadModelProjector:
    def __init__(
        self,
        read_model: ReadModel,
        reader: StreamReader | None = None,
        cache: CacheInvalidator | None = None,
    ) -> None:
        self._read_model = read_model
        self._reader = reader
        self._cache = cache

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        # Audios are independent: apply them concurrently, each in version order.
        streams: dict[str, list[EventEnvelope]] = defaultdict(list)
        for envelope in envelopes:
            streams[str(envelope.aggregate_id)].append(envelope)
        changed = await asyncio.gather(
            *(self._project_stream(s) for s in streams.values())
        )
        touched = [a for a, did in zip(streams, changed, strict=True) if did]
        if touched and self._cache is not None:
            await self._cache.invalidate(touched)

    async def repair(self, audio_id: UUID) -> None:
        """Apply every stored event of `audio_id` the read model does not have."""
        if self._reader is None:
            raise RuntimeError("repair needs the event store reader")
        stored = await self._reader.get_events(AUDIO_FILE, audio_id)
        if await self._project_stream(stored) and self._cache is not None:
            await self._cache.invalidate([str(audio_id)])

    async def _project_stream(self, envelopes: list[EventEnvelope]) -> bool:
        changed = False
        for envelope in sorted(envelopes, key=lambda e: e.version):
            try:
                changed |= await self._apply(envelope)
            except ProjectionGapError as gap:
                if self._reader is None:
                    raise
                logger.warning(
                    "gap in the stream; repairing from the event store",
                    extra={"audio_id": gap.audio_id, "version": gap.version},
                )
                missing = await self._reader.get_events(
                    AUDIO_FILE, envelope.aggregate_id, (gap.stored_version or 0) + 1
                )
                for event in missing:
                    if event.version <= envelope.version:
                        changed |= await self._apply(event)
        return changed

    async def _apply(self, envelope: EventEnvelope) -> bool:
        return await self._read_model.apply(
            change_for(envelope, decode_payload(envelope))
        )
