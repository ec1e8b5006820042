"""Reads a whole topic from the beginning, for assertions about what Kafka holds."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from nova_platform.settings import NovaSettings


async def read_topic(
    settings: NovaSettings, *, until: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the events topic, once at least `until` have arrived."""
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < until and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
