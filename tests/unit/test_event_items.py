"""The event store's item format, typed by hand, is what boto3 would write."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from nova_events import AUDIO_FILE, EventEnvelope, EventMetadata
from nova_platform.event_items import from_item, to_item


def _envelope() -> EventEnvelope:
    audio_id = uuid4()
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type="AudioCreated",
        schema_version=2,
        version=7,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        metadata=EventMetadata(correlation_id="c-1", user_id="u-1"),
        data={"audio_id": str(audio_id), "title": "Réunion", "size_bytes": 12},
    )


def test_items_are_what_boto3_serialises() -> None:
    envelope = _envelope()
    item = to_item(envelope)
    plain = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}

    assert {k: TypeSerializer().serialize(v) for k, v in plain.items()} == item
    assert item["sk"] == {"S": "v0000000007"}
    assert item["version"] == {"N": "7"}
    assert item["schema_version"] == {"N": "2"}
    assert item["gsi1sk"] == {"S": "2026-01-02T03:04:05.678000+00:00"}


def test_an_item_reads_back_as_its_envelope() -> None:
    envelope = _envelope()

    assert from_item(to_item(envelope)) == envelope


def test_an_item_without_schema_version_is_version_1() -> None:
    item = to_item(_envelope())
    del item["schema_version"]

    assert from_item(item).schema_version == 1
