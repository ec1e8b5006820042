"""Kafka topic names and message headers of the event contract."""

AUDIO_EVENTS_TOPIC = "nova.audio.events.v1"

HEADER_EVENT_TYPE = "event_type"
HEADER_SCHEMA_VERSION = "schema_version"
HEADER_CORRELATION_ID = "correlation_id"
HEADER_CAUSATION_ID = "causation_id"
HEADER_TRACEPARENT = "traceparent"
