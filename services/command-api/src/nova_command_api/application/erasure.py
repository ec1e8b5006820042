"""Erasing a user: destroy their data key, delete their files, record it.

The steps, each safe to run again, so that a retry completes an erasure that
stopped midway (a crash, a storage outage):

1. destroy the user's data key, leaving a tombstone (`erased_at`); from then
   on every personal field of theirs, in the store, on Kafka and in any
   rebuild, opens to an erased value, and nothing new is sealed for them;
2. delete every object under their prefix of the audio bucket;
3. append `UserErased` to their `User` stream (once), which projections and
   webhooks honour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from nova_events import USER, EventEnvelope, EventMetadata, UserErased, decode_payload

from .commands import EraseUser
from .handlers import user_prefix
from .ports import ConcurrencyError, EventStore
from .storage import AudioStorage

logger = logging.getLogger(__name__)


class ErasureForbiddenError(PermissionError):
    """Raised when a user asks to erase someone else; only an admin may."""

    def __init__(self, user_id: UUID) -> None:
        self.user_id = user_id
        super().__init__(
            f"you may erase only your own account; erasing user {user_id} "
            "needs the `admin` scope"
        )


class DataKeys(Protocol):
    """The side of `nova_platform.personal.PersonalData` erasure needs."""

    async def erase(self, user_id: UUID) -> datetime:
        """Destroy the key (a tombstone stays); when it was first destroyed."""
        ...


@dataclass(frozen=True, slots=True)
class ErasureResult:
    user_id: UUID
    erased_at: datetime
    version: int
    """The version of the user's stream: its `UserErased`."""
    objects_deleted: int


class UserErasure:
    """Runs `EraseUser`."""

    def __init__(
        self, event_store: EventStore, storage: AudioStorage, keys: DataKeys
    ) -> None:
        self._store = event_store
        self._storage = storage
        self._keys = keys

    async def erase_user(
        self, command: EraseUser, metadata: EventMetadata
    ) -> ErasureResult:
        user_id = command.user_id
        if user_id != command.actor.user_id and not command.actor.is_admin:
            raise ErasureForbiddenError(user_id)
        erased_at = await self._keys.erase(user_id)
        deleted = await self._storage.delete_prefix(user_prefix(user_id))
        for _ in range(2):
            events = await self._store.get_events(USER, user_id)
            if (done := _erasure_in(events)) is not None:
                return ErasureResult(user_id, done[0], done[1], deleted)
            try:
                [stored] = await self._store.append_events(
                    USER,
                    user_id,
                    [UserErased(user_id=user_id, erased_at=erased_at)],
                    expected_version=len(events),
                    metadata=metadata,
                    owner=user_id,
                )
            except ConcurrencyError:
                continue  # another run of the erasure appended it first
            logger.info(
                "user erased",
                extra={"user_id": str(user_id), "objects_deleted": deleted},
            )
            return ErasureResult(user_id, erased_at, stored.version, deleted)
        raise ConcurrencyError(f"{USER}#{user_id}", len(events), len(events) + 1)


def _erasure_in(events: list[EventEnvelope]) -> tuple[datetime, int] | None:
    for envelope in events:
        if envelope.event_type == UserErased.event_type():
            erased = decode_payload(envelope, UserErased)
            return erased.erased_at, envelope.version
    return None
