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
    EventPayload,
    Segment,
    TranscriptionCompleted,
)
from .envelope import SEALED_KEY, EventEnvelope, EventMetadata
from .registry import (
    SealedPayloadError,
    UnknownEventError,
    decode_payload,
    encode_payload,
    model_for,
    upcaster,
)
from .serialization import dumps, loads
from .topics import AUDIO_EVENTS_TOPIC
from .user import USER, USER_EVENTS, UserErased
from .versioning import Payload, SchemaRegistry, SchemaRegistryError, Upcaster

__all__ = [
    "AUDIO_EVENTS",
    "AUDIO_EVENTS_TOPIC",
    "AUDIO_FILE",
    "SEALED_KEY",
    "USER",
    "USER_EVENTS",
    "AudioCreated",
    "AudioDeleted",
    "AudioProcessingCompleted",
    "AudioProcessingFailed",
    "AudioProcessingStarted",
    "DomainEvent",
    "EventEnvelope",
    "EventMetadata",
    "EventPayload",
    "Payload",
    "SchemaRegistry",
    "SchemaRegistryError",
    "SealedPayloadError",
    "Segment",
    "TranscriptionCompleted",
    "UnknownEventError",
    "Upcaster",
    "UserErased",
    "decode_payload",
    "dumps",
    "encode_payload",
    "loads",
    "model_for",
    "upcaster",
]
