"""Idempotency keys: a retried command returns the first answer, and runs once.

A request with `Idempotency-Key` first claims the key (a conditional write, so
of concurrent retries exactly one claims it). The claimant runs the command and
records the response; the others replay it, or wait for it while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a key holds: the request's fingerprint and, once done, the response."""

    fingerprint: str
    response: RecordedResponse | None


class IdempotencyStore(Protocol):
    async def claim(self, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """Claim `key` for this request; None if claimed, else the existing record."""
        ...

    async def get(self, key: str) -> IdempotencyRecord | None: ...

    async def complete(self, key: str, response: RecordedResponse) -> None:
        """Record the claimant's response for replays."""
        ...

    async def release(self, key: str) -> None:
        """Forget a claim whose command failed, so a retry runs it again."""
        ...
