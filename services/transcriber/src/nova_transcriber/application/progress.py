"""Progress of one transcription, reported from the engine's worker thread.

The engine calls `ProgressReporter.report` after each segment (from whatever
thread it runs in); the call only records the latest values under a lock. An
asyncio task (`run`) flushes them to the `ProgressStore` at most once per
`min_interval_s`. A store failure is logged and ignored: progress is a nicety
and never fails a transcription.

`stop` ends `run` even when its cancellation is lost: redis-py bounds a write
with `asyncio.wait_for`, which on Python 3.11 returns normally when the task
is cancelled just as the write completes, and a flusher that only waited for
its cancellation would then go on forever, holding up the result.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from .ports import ProgressStore

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0
POLL_S = 0.2


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ProgressReporter:
    """The latest progress of one attempt, and its throttled writer."""

    def __init__(
        self,
        store: ProgressStore,
        audio_id: UUID,
        attempt: int,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = _now,
    ) -> None:
        self._store = store
        self._audio_id = audio_id
        self._attempt = attempt
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._latest: tuple[float, float, int] | None = None
        self._changed = False
        self._last_write: float | None = None
        self._stopped = False

    def report(
        self, seconds_done: float, duration_s: float, segments_done: int
    ) -> None:
        """Record how far the engine is; safe from any thread, never blocks long."""
        with self._lock:
            self._latest = (seconds_done, duration_s, segments_done)
            self._changed = True

    async def flush(self) -> bool:
        """Write the latest progress if it changed and the interval passed.

        Returns True when a write was attempted.
        """
        now = self._clock()
        if (
            self._last_write is not None
            and now - self._last_write < self._min_interval_s
        ):
            return False
        with self._lock:
            if not self._changed or self._latest is None:
                return False
            seconds_done, duration_s, segments_done = self._latest
            self._changed = False
        self._last_write = now
        entry = {
            "attempt": self._attempt,
            "seconds_done": round(max(0.0, min(seconds_done, duration_s)), 3),
            "duration_s": round(duration_s, 3),
            "segments_done": segments_done,
            "updated_at": self._now(),
        }
        try:
            await self._store.write(self._audio_id, entry)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            logger.warning(
                "progress could not be written; transcription goes on",
                extra={"audio_id": str(self._audio_id), "error": repr(exc)},
            )
        return True

    def stop(self) -> None:
        """Make `run` return at its next turn, cancelled or not."""
        self._stopped = True

    async def run(self, poll_s: float = POLL_S) -> None:
        """Flush until cancelled or stopped."""
        while not self._stopped:
            await self.flush()
            await asyncio.sleep(poll_s)
