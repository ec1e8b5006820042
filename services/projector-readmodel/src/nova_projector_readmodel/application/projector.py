"""Applies a batch of events to the read model, one audio at a time in order.

Each change is conditional on the stored version, so a duplicate or a stale
redelivery changes nothing. When an event arrives whose predecessor was never
applied (a gap), the missing events are read from the event store and applied
first, instead of skipping ahead.

A `UserErased` strips every item of that user of its personal attributes, once
no process can open the user's data any more (`wait_for_erasure`), so that
what another instance wrote with a still-cached key is stripped too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import AUDIO_FILE, USER, EventEnvelope, UserErased, decode_payload

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

    async def erase_user(self, user_id: UUID, erased_at: datetime) -> list[str]:
        """Remove the personal attributes of every item of `user_id` and mark
        them erased; returns the audio ids of those items."""
        ...


class StreamReader(Protocol):
    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]: ...


class CacheInvalidator(Protocol):
    async def invalidate(self, audio_ids: Sequence[str]) -> None: ...


WaitForErasure = Callable[[datetime], Awaitable[None]]
"""`PersonalData.wait_for_erasure`: returns once no process opens the data of
a user erased at the given time."""


class ReadModelProjector:
    def __init__(
        self,
        read_model: ReadModel,
        reader: StreamReader | None = None,
        cache: CacheInvalidator | None = None,
        wait_for_erasure: WaitForErasure | None = None,
    ) -> None:
        self._read_model = read_model
        self._reader = reader
        self._cache = cache
        self._wait_for_erasure = wait_for_erasure

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        # Audios are independent: apply them concurrently, each in version order.
        streams: dict[str, list[EventEnvelope]] = defaultdict(list)
        for envelope in envelopes:
            if envelope.aggregate_type == AUDIO_FILE:
                streams[str(envelope.aggregate_id)].append(envelope)
        changed = await asyncio.gather(
            *(self._project_stream(s) for s in streams.values())
        )
        touched = [a for a, did in zip(streams, changed, strict=True) if did]
        for envelope in envelopes:
            if envelope.aggregate_type == USER:
                touched.extend(await self._apply_user_event(envelope))
        if touched and self._cache is not None:
            await self._cache.invalidate(touched)

    async def _apply_user_event(self, envelope: EventEnvelope) -> list[str]:
        if envelope.event_type != UserErased.event_type():
            return []
        erasure = decode_payload(envelope, UserErased)
        if self._wait_for_erasure is not None:
            await self._wait_for_erasure(erasure.erased_at)
        audio_ids = await self._read_model.erase_user(
            erasure.user_id, erasure.erased_at
        )
        logger.info(
            "user erased from the read model",
            extra={"user_id": str(erasure.user_id), "audios": len(audio_ids)},
        )
        return audio_ids

    async def repair(self, aggregate_type: str, aggregate_id: UUID) -> None:
        """Apply every stored event of the stream the read model does not have:
        an audio's, or a user's (`UserErased` strips that user's items again)."""
        if self._reader is None:
            raise RuntimeError("repair needs the event store reader")
        await self.project(await self._reader.get_events(aggregate_type, aggregate_id))

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
