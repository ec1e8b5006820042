"""The relay's Prometheus metrics."""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge


class PrometheusRelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._published = Counter(
            "nova_relay_published_events",
            "Events published to Kafka (committed transactions only)",
            registry=registry,
        )
        self._pending = Gauge(
            "nova_relay_pending_events",
            "Events read from the change stream and not yet committed to Kafka",
            registry=registry,
        )
        self._oldest = Gauge(
            "nova_relay_oldest_unpublished_age_seconds",
            "Age of the oldest event read but not yet published (0 when caught up)",
            registry=registry,
        )
        self._active = Gauge(
            "nova_relay_active",
            "1 while this relay holds the lease and publishes, 0 as a standby",
            registry=registry,
        )

    def published(self, count: int) -> None:
        self._published.inc(count)

    def backlog(self, pending: int, oldest_at: datetime | None) -> None:
        self._pending.set(pending)
        age = time.time() - oldest_at.timestamp() if oldest_at else 0.0
        self._oldest.set(max(age, 0.0))

    def active(self, is_active: bool) -> None:
        self._active.set(1 if is_active else 0)
