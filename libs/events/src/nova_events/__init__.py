"""The versioned event contract shared by every Nova service."""

from .audio import (
    AUDIO_EVENTS,
    AUDIO_FILE,
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    Segment,
    TranscriptionCompleted,
)
from .envelope import EventEnvelope, EventMetadata
from .registry import (
    UnknownEventError,
    decode_payload,
    encode_payload,
    model_for,
    upcaster,
)
from .serialization import dumps, loads
from .topics import AUDIO_EVENTS_TOPIC
from .versioning import Payload, SchemaRegistry, SchemaRegistryError, Upcaster

__all__ = [
    "AUDIO_EVENTS",
    "AUDIO_EVENTS_TOPIC",
    "AUDIO_FILE",
    "AudioCreated",
    "AudioDeleted",
    "AudioProcessingCompleted",
    "AudioProcessingFailed",
    "AudioProcessingStarted",
    "DomainEvent",
    "EventEnvelope",
    "EventMetadata",
    "Payload",
    "SchemaRegistry",
    "SchemaRegistryError",
    "Segment",
    "TranscriptionCompleted",
    "UnknownEventError",
    "Upcaster",
    "decode_payload",
    "dumps",
    "encode_payload",
    "loads",
    "model_for",
    "upcaster",
]
