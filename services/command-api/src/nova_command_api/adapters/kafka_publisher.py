"""Publishes a batch of events and its checkpoint in one Kafka transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from nova_events import EventEnvelope
from nova_platform.kafka import message_headers, message_key, message_value

from ..application.relay import Checkpoint

logger = logging.getLogger(__name__)


class TransactionalKafkaPublisher:
    """Events go to the events topic, the checkpoint to a compacted topic keyed
    by shard, both in one transaction: `read_committed` readers see a batch
    exactly once, and a restarted relay resumes exactly after it."""

    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        client_options: Mapping[str, Any],
        events_topic: str,
        checkpoint_topic: str,
    ) -> None:
        self._make_producer = make_producer
        self._client_options = dict(client_options)
        self._events_topic = events_topic
        self._checkpoint_topic = checkpoint_topic
        self._producer: AIOKafkaProducer | None = None

    async def publish(
        self, events: Sequence[EventEnvelope], checkpoint: Checkpoint
    ) -> None:
        producer = await self._started()
        try:
            await producer.begin_transaction()
            for event in events:
                # send() only enqueues: the transaction's commit waits for all.
                await producer.send(
                    self._events_topic,
                    value=message_value(event),
                    key=message_key(event),
                    headers=message_headers(event),
                )
            await producer.send(
                self._checkpoint_topic,
                key=checkpoint.shard_id.encode(),
                value=orjson.dumps(
                    {"position": checkpoint.position, "closed": checkpoint.closed}
                ),
            )
            await producer.commit_transaction()
        except BaseException:
            # A fenced or broken producer cannot be reused; a new one with the
            # same transactional id aborts whatever this one left open.
            await self.close()
            raise

    async def fence(self) -> None:
        """Register as the transactional id's current producer.

        Kafka then aborts whatever an older producer with the same id left
        open and refuses its later commits, so after this returns the
        committed checkpoints can no longer move behind our back.
        """
        await self.close()
        producer = await self._started()
        try:
            # begin_transaction waits until the broker assigned our producer
            # id and epoch, which is the fencing; nothing is sent.
            await producer.begin_transaction()
            await producer.abort_transaction()
        except BaseException:
            await self.close()
            raise

    async def load_checkpoints(self) -> dict[str, Checkpoint]:
        consumer = AIOKafkaConsumer(
            **self._client_options,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self._checkpoint_topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self._checkpoint_topic)
            if not partitions:
                raise RuntimeError(
                    f"topic {self._checkpoint_topic} is missing; run `nova-init`"
                )
            tps = [TopicPartition(self._checkpoint_topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            found: dict[str, Checkpoint] = {}
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(*tps, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        if record.key is None or record.value is None:
                            continue
                        shard_id = record.key.decode()
                        value = orjson.loads(record.value)
                        found[shard_id] = Checkpoint(
                            shard_id, value["position"], bool(value["closed"])
                        )
            return found
        finally:
            await consumer.stop()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            await producer.start()
            self._producer = producer
        return self._producer
