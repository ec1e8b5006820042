"""Publishes envelopes to the events topic in one acknowledged batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from nova_events import EventEnvelope
from nova_platform.kafka import message_headers, message_key, message_value


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(self, events: Sequence[EventEnvelope]) -> None:
        # send() only enqueues; awaiting the futures together lets the producer
        # batch the whole pass, and order per key is kept by idempotence.
        pending = [
            await self._producer.send(
                self._topic,
                value=message_value(e),
                key=message_key(e),
                headers=message_headers(e),
            )
            for e in events
        ]
        await asyncio.gather(*pending)
