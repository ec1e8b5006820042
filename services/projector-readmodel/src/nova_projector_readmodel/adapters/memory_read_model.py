"""An in-memory read model with the DynamoDB adapter's conditions, for tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ..application.projection import ERASED, PERSONAL_ATTRIBUTES, ItemChange
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

    async def erase_user(self, user_id: UUID, erased_at: datetime) -> list[str]:
        mine = [a for a, i in self.items.items() if i.get("user_id") == str(user_id)]
        for audio_id in mine:
            item = self.items[audio_id]
            for name in PERSONAL_ATTRIBUTES:
                item.pop(name, None)
            item.update(personal_data=ERASED, erased_at=erased_at.isoformat())
        return mine
