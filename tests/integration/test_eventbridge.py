"""The EventBridge forwarder against moto (the local stack).

A rule on the run's own bus sends every ``nova.audio`` event to an SQS queue;
moto delivers to SQS targets synchronously inside `PutEvents`, so what the
queue holds is what EventBridge took.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast
from uuid import uuid4

import pytest

from nova_events import (
    AudioCreated,
    AudioDeleted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    Segment,
    TranscriptionCompleted,
    encode_payload,
)
from nova_integration.adapters.eventbridge import EventBridgeForwarder, EventsClient
from nova_integration.domain.payload import encode_body, public_payload
from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings

from ..waiting import eventually

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 3, 20, 28, 42, tzinfo=UTC)
RULE = "nova-audio"


def payload_of(event: DomainEvent, version: int) -> dict[str, Any]:
    return public_payload(
        EventEnvelope(
            aggregate_type="AudioFile",
            aggregate_id=event.audio_id,
            event_type=event.event_type(),
            schema_version=event.schema_version,
            version=version,
            occurred_at=AT,
            metadata=EventMetadata(correlation_id="c"),
            data=encode_payload(event),
        )
    )


def twelve_payloads() -> list[dict[str, Any]]:
    """Four audios' created, transcribed (UTF-8 text, segments) and deleted."""
    payloads = []
    for _ in range(4):
        audio_id = uuid4()
        payloads += [
            payload_of(AudioCreated(audio_id=audio_id, user_id=uuid4(), s3_key="k"), 1),
            payload_of(
                TranscriptionCompleted(
                    audio_id=audio_id,
                    text="こんにちは、世界",
                    confidence=0.9,
                    language="ja-JP",
                    segments=(Segment(start=0, end=1.5, text="こんにちは"),),
                ),
                2,
            ),
            payload_of(AudioDeleted(audio_id=audio_id), 3),
        ]
    return payloads


@pytest.fixture
async def bus_and_queue(
    settings: NovaSettings,
) -> AsyncIterator[tuple[Any, str, Any, str]]:
    """This run's bus, with a rule sending ``nova.audio`` events to a queue."""
    name = f"nova-eventbridge-{settings.resource_suffix}"
    aws = session()
    kwargs = client_kwargs(settings)
    async with (
        aws.client("events", **kwargs) as events,
        aws.client("sqs", **kwargs) as sqs,
    ):
        queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )
        await events.create_event_bus(Name=name)
        await events.put_rule(
            Name=RULE,
            EventBusName=name,
            EventPattern=json.dumps({"source": ["nova.audio"]}),
        )
        await events.put_targets(
            Rule=RULE,
            EventBusName=name,
            Targets=[{"Id": "queue", "Arn": attributes["Attributes"]["QueueArn"]}],
        )
        try:
            yield events, name, sqs, queue_url
        finally:
            await events.remove_targets(Rule=RULE, EventBusName=name, Ids=["queue"])
            await events.delete_rule(Name=RULE, EventBusName=name)
            await events.delete_event_bus(Name=name)
            await sqs.delete_queue(QueueUrl=queue_url)


async def test_every_payload_arrives_with_its_exact_detail(
    bus_and_queue: tuple[Any, str, Any, str],
) -> None:
    events, bus, sqs, queue_url = bus_and_queue
    payloads = twelve_payloads()

    # The events client is untyped here (no types-aiobotocore-events in the lock);
    # typed, its TypedDicts would not match the Protocol's plain dicts.
    forwarder = EventBridgeForwarder(cast(EventsClient, events), bus)
    await forwarder.forward(payloads)

    received: list[dict[str, Any]] = []

    async def all_twelve() -> list[dict[str, Any]] | None:
        answer = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in answer.get("Messages", []):
            received.append(json.loads(message["Body"]))
            await sqs.delete_message(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        return received if len(received) >= len(payloads) else None

    await eventually(all_twelve, timeout=20, what="12 events in the queue")

    by_id = {event["detail"]["id"]: event for event in received}
    assert len(received) == len(by_id) == 12
    for payload in payloads:
        event = by_id[payload["id"]]
        assert encode_body(event["detail"]) == encode_body(payload)
        assert event["source"] == "nova.audio"
        assert event["detail-type"] == payload["type"]
        assert event["time"] == "2026-12-03T20:28:42Z"
