"""The event store's item format: an envelope to a DynamoDB item and back.

Pure functions, shared by the event store adapter and the outbox relay
(`nova_command_api`) and by projection rebuilds, which read the store directly.
Items are in DynamoDB's typed JSON form (`{"S": ...}`, `{"N": ...}`).
"""

from __future__ import annotations

from typing import Any

import orjson
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from nova_events import EventEnvelope, EventMetadata

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def sort_key(version: int) -> str:
    """The sort key of the event at `version` in its stream: `v0000000001`."""
    return f"v{version:010d}"


def to_item(envelope: EventEnvelope) -> dict[str, Any]:
    """The DynamoDB item (seed layout, plus `schema_version`) of an envelope."""
    occurred_at = envelope.occurred_at.isoformat()
    item = {
        "pk": envelope.stream_key,
        "sk": sort_key(envelope.version),
        "event_id": str(envelope.event_id),
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": str(envelope.aggregate_id),
        "event_type": envelope.event_type,
        "schema_version": envelope.schema_version,
        "event_data": orjson.dumps(envelope.data).decode(),
        "metadata": envelope.metadata.model_dump_json(exclude_none=True),
        "version": envelope.version,
        "occurred_at": occurred_at,
        "gsi1pk": envelope.event_type,
        "gsi1sk": occurred_at,
    }
    return {k: _serializer.serialize(v) for k, v in item.items()}


def from_item(item: dict[str, Any]) -> EventEnvelope:
    """The envelope of a stored item, in DynamoDB's typed JSON form."""
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return EventEnvelope(
        event_id=plain["event_id"],
        aggregate_type=plain["aggregate_type"],
        aggregate_id=plain["aggregate_id"],
        event_type=plain["event_type"],
        schema_version=int(plain.get("schema_version", 1)),
        version=int(plain["version"]),
        occurred_at=plain["occurred_at"],
        metadata=EventMetadata.model_validate_json(plain["metadata"]),
        data=orjson.loads(plain["event_data"]),
    )
