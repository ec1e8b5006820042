"""When a failed webhook attempt is tried again, and when it is given up.

Retried: no response (a timeout, a refused or reset connection), 408, 429 and
every 5xx. Not retried: any other answer outside 2xx (a 4xx says the receiver
will not take this request however often it comes; a 3xx is not followed,
since a redirect could lead anywhere), and a URL the outbound rules refuse.
A retry waits an exponentially growing time with jitter, and at least what a
`Retry-After` asked for; after `max_attempts` attempts the delivery is parked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

RETRY_STATUSES: Final = frozenset({408, 429})


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one HTTP attempt came back with."""

    response_code: int | None
    latency_ms: float
    error: str = ""
    retry_after_s: float | None = None
    refused: bool = False
    """The outbound rules refused the target: no request was sent."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 600.0

    def decide(
        self, result: SendResult, attempts_used: int, rng: random.Random
    ) -> Decision:
        """The verdict on an attempt; `attempts_used` counts this one."""
        code = result.response_code
        if code is not None and 200 <= code < 300:
            return Decision(Verdict.DELIVERED)
        reason = describe(result)
        if result.refused or not _retryable(code):
            return Decision(Verdict.PARKED, reason=f"not retried: {reason}")
        if attempts_used >= self.max_attempts:
            return Decision(
                Verdict.PARKED,
                reason=f"gave up after {attempts_used} attempts; last: {reason}",
            )
        return Decision(
            Verdict.RETRY, self.delay_s(attempts_used, result.retry_after_s, rng)
        )

    def delay_s(
        self, attempts_used: int, retry_after_s: float | None, rng: random.Random
    ) -> float:
        """Half of the exponential step fixed, half random ("equal jitter"),
        so retries of many deliveries spread out but never come back at once."""
        step = min(self.max_delay_s, self.base_delay_s * 2 ** (attempts_used - 1))
        delay: float = step / 2 + rng.uniform(0, step / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


def _retryable(code: int | None) -> bool:
    return code is None or code in RETRY_STATUSES or code >= 500


def describe(result: SendResult) -> str:
    if result.response_code is None:
        return result.error or "no response"
    if result.error:
        return f"HTTP {result.response_code}: {result.error}"
    return f"HTTP {result.response_code}"
