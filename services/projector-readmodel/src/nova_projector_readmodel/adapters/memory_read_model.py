"""An in-memory read model with the DynamoDB adapter's conditions, for tests."""

from __future__ import annotations

from typing import Any

from ..application.projection import ItemChange
from ..application.projector import ProjectionGapError


class InMemoryReadModel:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    async def apply(self, change: ItemChange) -> bool:
        item = self.items.get(change.audio_id)
        stored = item["version"] if item else None
        if change.create:
            if item is not None:
                return False
        elif stored is None or stored != change.version - 1:
            if stored is not None and stored >= change.version:
                return False
            raise ProjectionGapError(change.audio_id, change.version, stored)
        updated = dict(item or {})
        updated.update({k: v for k, v in change.set.items() if v is not None})
        for name in change.remove:
            updated.pop(name, None)
        updated["version"] = change.version
        self.items[change.audio_id] = updated
        return True
