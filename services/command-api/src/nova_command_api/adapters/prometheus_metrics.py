"""The relay's Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge


class PrometheusRelayMetrics:
    """`nova_relay_*` on the relay's `/metrics`.

    The backlog gauges show what the latest read of each shard found
    unpublished, summed over shards, until the shard is read again. The age is
    measured at scrape time from when the oldest of those events was written
    (the stream record's `ApproximateCreationDateTime`), so it keeps rising
    while a relay is stuck before publishing them.
    """

    def __init__(
        self, registry: CollectorRegistry, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._oldest_at: float | None = None
        self._published = Counter(
            "nova_relay_published_events",
            "Events published to Kafka (committed transactions only)",
            registry=registry,
        )
        self._duplicates = Counter(
            "nova_relay_duplicate_events",
            "Events met again in the change stream after this relay had "
            "published them (e.g. a checkpoint went backwards); skipped, not resent",
            registry=registry,
        )
        self._pending = Gauge(
            "nova_relay_pending_events",
            "Events the latest read of each shard found unpublished, summed over "
            "shards; kept until the next read, 0 when it found none",
            registry=registry,
        )
        self._oldest = Gauge(
            "nova_relay_oldest_unpublished_age_seconds",
            "Age now of the oldest event the latest reads found unpublished "
            "(from its stream record's creation time); 0 when they found none",
            registry=registry,
        )
        self._oldest.set_function(self._oldest_age)
        self._active = Gauge(
            "nova_relay_active",
            "1 while this relay holds the lease and publishes, 0 as a standby",
            registry=registry,
        )

    def published(self, count: int) -> None:
        self._published.inc(count)

    def duplicates(self, count: int) -> None:
        self._duplicates.inc(count)

    def backlog(self, pending: int, oldest_at: datetime | None) -> None:
        self._pending.set(pending)
        self._oldest_at = oldest_at.timestamp() if oldest_at else None

    def active(self, is_active: bool) -> None:
        self._active.set(1 if is_active else 0)

    def _oldest_age(self) -> float:
        if self._oldest_at is None:
            return 0.0
        return max(self._clock() - self._oldest_at, 0.0)
