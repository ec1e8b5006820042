"""Is everything caught up? The relay's outbox and every consumer group's lag.

The outbox is drained when the relay's latest reads found nothing unpublished
and the topic holds as many distinct events as the store. A group's lag is
zero when its committed offset of each partition is past the partition's last
event: the relay writes in transactions, so the end offset also counts commit
markers, which no consumer has to reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from nova_events import loads
from nova_platform.kafka import kafka_client_options
from nova_platform.settings import NovaSettings

logger = logging.getLogger(__name__)

CONSUMER_SERVICES = ("projector-readmodel", "projector-search", "integration")


class TopicTail:
    """Follows the events topic from its start, `read_committed`, no group."""

    def __init__(self, settings: NovaSettings) -> None:
        self._settings = settings
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.event_ids: set[str] = set()
        self.last_offsets: dict[int, int] = {}
        """The offset of the last event seen in each partition."""
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self._settings.events_topic,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            **kafka_client_options(self._settings),
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow(self._consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except Exception:
                logger.warning("topic tail: fetch failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for tp, batch in batches.items():
                for record in batch:
                    self.records.append(record)
                    self.event_ids.add(str(loads(record.value).event_id))
                    self.last_offsets[tp.partition] = record.offset

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


@dataclass
class Backlog:
    """What is still to do, as one look found it."""

    store_events: int
    distinct_in_kafka: int
    relay_pending: float | None
    relay_active: float | None
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    """Per consumer group, events of each partition not yet committed."""

    @property
    def zero(self) -> bool:
        return (
            self.store_events == self.distinct_in_kafka
            and self.relay_pending == 0
            and self.relay_active == 1
            and not any(any(p.values()) for p in self.lag.values())
        )

    def describe(self) -> str:
        lag = {g: sum(p.values()) for g, p in self.lag.items()}
        return (
            f"{self.store_events} events stored, {self.distinct_in_kafka} in Kafka, "
            f"relay pending={self.relay_pending} active={self.relay_active}, "
            f"consumer lag {lag}"
        )


async def relay_gauges(relay_url: str) -> dict[str, float]:
    """The relay's `nova_relay_*` gauges from its `/metrics`; {} if it is down."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{relay_url}/metrics")).text
    except httpx.HTTPError:
        return {}
    gauges: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nova_relay_") and " " in line:
            name, value = line.rsplit(" ", 1)
            with contextlib.suppress(ValueError):
                gauges[name] = float(value)
    return gauges


async def consumer_lag(
    settings: NovaSettings, last_offsets: dict[int, int]
) -> dict[str, dict[int, int]]:
    """Per group, how many offsets up to each partition's last event are not
    committed yet."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        lag: dict[str, dict[int, int]] = {}
        for service in CONSUMER_SERVICES:
            group = settings.consumer_group(service)
            committed = await admin.list_consumer_group_offsets(group)
            offsets = {
                tp.partition: meta.offset
                for tp, meta in committed.items()
                if tp.topic == settings.events_topic
            }
            lag[group] = {
                partition: max(0, last + 1 - offsets.get(partition, 0))
                for partition, last in last_offsets.items()
            }
        return lag
    finally:
        await admin.close()


async def count_stored_events(ddb: Any, table: str) -> int:
    request: dict[str, Any] = {
        "TableName": table,
        "Select": "COUNT",
        "ConsistentRead": True,
    }
    count = 0
    while True:
        page = await ddb.scan(**request)
        count += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return count
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def look(
    settings: NovaSettings, ddb: Any, tail: TopicTail, relay_url: str
) -> Backlog:
    gauges = await relay_gauges(relay_url)
    stored = await count_stored_events(ddb, settings.event_store_table)
    try:
        lag = await consumer_lag(settings, dict(tail.last_offsets))
    except Exception as exc:  # noqa: BLE001 - not caught up while Kafka fails
        lag = {"(unknown)": {-1: 1}}
        logger.warning("consumer lag unknown: %r", exc)
    return Backlog(
        store_events=stored,
        distinct_in_kafka=len(tail.event_ids),
        relay_pending=gauges.get("nova_relay_pending_events"),
        relay_active=gauges.get("nova_relay_active"),
        lag=lag,
    )
