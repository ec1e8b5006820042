"""In-memory idempotency records for unit tests; same contract as DynamoDB's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from uuid import uuid4

from ..application.idempotency import IdempotencyRecord, Lease, RecordedResponse

RETENTION_S = 24 * 3600


class InMemoryIdempotencyStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, tuple[IdempotencyRecord, str, float]] = {}
        self._clock = clock

    async def claim(
        self, key: str, fingerprint: str, lease_s: float
    ) -> Lease | IdempotencyRecord:
        now = self._clock()
        held = self._records.get(key)
        if held is not None and held[2] <= now:
            held = None  # past its retention: as if it were not there
        command_id = str(uuid4())
        if held is not None:
            record = held[0]
            running_late = record.response is None and record.lease_expires_at <= now
            if not running_late or record.fingerprint != fingerprint:
                return record
            command_id = record.command_id
        lease = Lease(
            token=str(uuid4()),
            command_id=command_id,
            expires_at=now + lease_s,
            taken_over=held is not None,
        )
        record = IdempotencyRecord(fingerprint, None, command_id, lease.expires_at)
        self._records[key] = (record, lease.token, now + RETENTION_S)
        return lease

    async def get(self, key: str) -> IdempotencyRecord | None:
        held = self._records.get(key)
        if held is None or held[2] <= self._clock():
            return None
        return held[0]

    async def complete(
        self, key: str, lease: Lease, response: RecordedResponse
    ) -> bool:
        held = self._records.get(key)
        if held is None or held[1] != lease.token:
            return False
        record, token, expires_at = held
        self._records[key] = (replace(record, response=response), token, expires_at)
        return True

    async def release(self, key: str, lease: Lease) -> None:
        held = self._records.get(key)
        if held is not None and held[1] == lease.token:
            del self._records[key]
