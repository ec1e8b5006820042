"""In-memory idempotency records for unit tests."""

from __future__ import annotations

from ..application.idempotency import IdempotencyRecord, RecordedResponse


class InMemoryIdempotencyStore:
    def __init__(self) -> None:
        self._records: dict[str, IdempotencyRecord] = {}

    async def claim(self, key: str, fingerprint: str) -> IdempotencyRecord | None:
        existing = self._records.get(key)
        if existing is not None:
            return existing
        self._records[key] = IdempotencyRecord(fingerprint, None)
        return None

    async def get(self, key: str) -> IdempotencyRecord | None:
        return self._records.get(key)

    async def complete(self, key: str, response: RecordedResponse) -> None:
        record = self._records[key]
        self._records[key] = IdempotencyRecord(record.fingerprint, response)

    async def release(self, key: str) -> None:
        self._records.pop(key, None)
