"""Load generators: closed loop (peak throughput) and open loop (latency).

A closed loop keeps `concurrency` calls in flight and measures how many finish
per second. An open loop sends at a fixed arrival rate whatever the answers
do, and measures each latency from when the call was *due*, so a stall delays
every call behind it and shows in the percentiles (no coordinated omission).
Payloads are built before either loop starts: the loops only call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .stats import arrival_times, percentile

P = TypeVar("P")
Call = Callable[[P], Awaitable[object]]


@dataclass
class Run:
    """What one timed run did: its calls' latencies and failures."""

    seconds: float
    latencies_s: list[float]
    errors: int = 0
    first_error: str | None = None
    sent_at: list[float] = field(default_factory=list)
    """Open loop: when each call was due (seconds from the run's start)."""

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)


@dataclass
class _Tally(Generic[P]):
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    async def timed(self, call: Call[P], payload: P, due: float) -> None:
        try:
            await call(payload)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.errors += 1
            self.first_error = self.first_error or repr(exc)[:300]
            return
        self.latencies.append(time.perf_counter() - due)


async def closed_loop(call: Call[P], payloads: Sequence[P], concurrency: int) -> Run:
    """Call once per payload with `concurrency` calls in flight; a call that
    raised counts as an error, not as a latency."""
    tally: _Tally[P] = _Tally()
    queue = iter(payloads)

    async def worker() -> None:
        for payload in queue:
            await tally.timed(call, payload, time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    return Run(seconds, tally.latencies, tally.errors, tally.first_error)


async def open_loop(call: Call[P], payloads: Sequence[P], rate_per_s: float) -> Run:
    """Send one call per payload at `rate_per_s`, never waiting for answers."""
    tally: _Tally[P] = _Tally()
    start = time.perf_counter()
    due_times = arrival_times(rate_per_s, len(payloads), start)
    tasks: list[asyncio.Task[None]] = []
    for payload, due in zip(payloads, due_times, strict=True):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(tally.timed(call, payload, due)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    return Run(
        seconds,
        tally.latencies,
        tally.errors,
        tally.first_error,
        sent_at=[d - start for d in due_times],
    )
