"""Applies a batch of events to the read model, one audio at a time in order."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from nova_events import EventEnvelope, decode_payload

from .projection import ItemChange, change_for

logger = logging.getLogger(__name__)


class ReadModel(Protocol):
    async def apply(self, change: ItemChange) -> bool: ...


class ReadModelProjector:
    def __init__(self, read_model: ReadModel) -> None:
        self._read_model = read_model

    async def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        # Audios are independent: apply them concurrently, each in version order.
        streams: dict[str, list[EventEnvelope]] = defaultdict(list)
        for envelope in envelopes:
            streams[envelope.stream_key].append(envelope)
        await asyncio.gather(*(self._project_stream(s) for s in streams.values()))

    async def _project_stream(self, envelopes: list[EventEnvelope]) -> None:
        for envelope in sorted(envelopes, key=lambda e: e.version):
            change = change_for(envelope, decode_payload(envelope))
            await self._read_model.apply(change)
