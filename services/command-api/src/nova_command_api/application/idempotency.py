"""Idempotency keys: a retried command returns the first answer, and runs once.

A request with `Idempotency-Key` first claims the key (a conditional write, so
of concurrent retries exactly one claims it). The claimant runs the command and
records the response; the others replay it, or wait for it while it runs.

A claim is a lease: if its holder dies before recording a response, a retry
with the same request takes the claim over once the lease has run out. Every
run of one request shares the claim's `command_id`, which the events it
appends carry in their metadata, so the run that took over can see what the
dead one committed and answer with that instead of appending it twice.
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
    """What a key holds: the request's fingerprint and, once done, the response.

    Until the response is recorded, `lease_expires_at` (seconds since the epoch)
    is when another run of the same request may take the claim over.
    """

    fingerprint: str
    response: RecordedResponse | None
    command_id: str
    lease_expires_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """A request's claim on a key: it may run the command until `expires_at`.

    `token` fences the claim: only the lease that holds the key can complete or
    release it. `taken_over` is True when an earlier run's lease ran out before
    it recorded an answer; that run may have committed events under
    `command_id`, which every run of the request shares.
    """

    token: str
    command_id: str
    expires_at: float
    taken_over: bool


class IdempotencyStore(Protocol):
    async def claim(
        self, key: str, fingerprint: str, lease_s: float
    ) -> Lease | IdempotencyRecord:
        """Claim `key` for `lease_s` seconds, or return the record that holds it.

        A lease is granted when the key is free (or its record has expired) and
        also when an unfinished claim of the same fingerprint has outlived its
        lease; that takeover keeps the claim's `command_id`.
        """
        ...

    async def get(self, key: str) -> IdempotencyRecord | None: ...

    async def complete(
        self, key: str, lease: Lease, response: RecordedResponse
    ) -> bool:
        """Record the response for replays; False if `lease` no longer holds `key`.

        A lease that was taken over records nothing: the run that took it over
        records its own answer.
        """
        ...

    async def release(self, key: str, lease: Lease) -> None:
        """Forget a claim whose command failed, so a retry runs it again.

        Does nothing if `lease` no longer holds `key`.
        """
        ...
