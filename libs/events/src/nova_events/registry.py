"""The registry of Nova's events: every model, every upcaster, checked at import.

To change an event's shape incompatibly (as `nova_events.schemas.
compatibility_breaks` defines it): bump `schema_version` on its model, declare
the upcaster from the old version below, run `make schemas` and commit the new
JSON Schema next to the old one, and add a golden sample of the new version
under `nova_events/samples/`::

    @upcaster("AudioCreated", from_version=1)
    def _audio_created_v1_to_v2(data: Payload) -> Payload:
        data["display_name"] = data.pop("title")
        return data

A compatible change (a new optional field) needs no new version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from .audio import AUDIO_EVENTS, DomainEvent, EventPayload
from .envelope import EventEnvelope
from .user import USER_EVENTS
from .versioning import (
    Payload,
    SchemaRegistry,
    SchemaRegistryError,
    SealedPayloadError,
    UnknownEventError,
    UpcasterT,
)

PayloadT = TypeVar("PayloadT", bound=EventPayload)

__all__ = [
    "REGISTRY",
    "Payload",
    "SchemaRegistry",
    "SchemaRegistryError",
    "SealedPayloadError",
    "UnknownEventError",
    "decode_payload",
    "encode_payload",
    "model_for",
    "upcaster",
]

REGISTRY = SchemaRegistry()
"""The events of this package at their current versions, and their upcasters."""

for _model in (*AUDIO_EVENTS, *USER_EVENTS):
    REGISTRY.register(_model)


def upcaster(event_type: str, *, from_version: int) -> Callable[[UpcasterT], UpcasterT]:
    """Declare, in this module, the upcaster of a real event from `from_version`
    to `from_version + 1` (the chain is checked when this module is imported)."""
    return REGISTRY.upcaster(event_type, from_version=from_version)


# Upcasters of the real events go here. Every event is at schema version 1 today.


REGISTRY.validate()


def model_for(event_type: str, schema_version: int) -> type[EventPayload]:
    """The payload model of `event_type` at `schema_version`.

    Raises `UnknownEventError` for an unknown type or version, and for an older
    version whose model is no longer kept (`decode_payload` upcasts those).
    """
    return REGISTRY.model_for(event_type, schema_version)


@overload
def decode_payload(envelope: EventEnvelope) -> DomainEvent: ...


@overload
def decode_payload(envelope: EventEnvelope, kind: type[PayloadT]) -> PayloadT: ...


def decode_payload(
    envelope: EventEnvelope, kind: type[EventPayload] = DomainEvent
) -> EventPayload:
    """The typed payload of `envelope` at its event type's current version.

    Older versions are upcast first, so callers never see an old shape. `kind`
    is what the caller expects: an `AudioFile` event (`DomainEvent`) unless
    told otherwise, e.g. `UserErased` or `EventPayload` for any event.

    Raises `UnknownEventError` for an unknown event type, a version newer than
    this package knows, or an event that is not a `kind`;
    `SealedPayloadError` for an envelope that was not opened; and
    `pydantic.ValidationError` for an invalid payload.
    """
    event = REGISTRY.decode(envelope)
    if not isinstance(event, kind):
        raise UnknownEventError(
            f"{envelope.event_type} of a {envelope.aggregate_type} is not a "
            f"{kind.__name__}; check the aggregate type before decoding"
        )
    return event


def encode_payload(event: EventPayload) -> dict[str, object]:
    """The JSON-ready payload of `event`, as stored in an envelope's `data`."""
    return event.model_dump(mode="json")
