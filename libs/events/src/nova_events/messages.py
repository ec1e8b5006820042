"""The record values on the events topic, typed per event, for documentation.

A record's value is an `EventEnvelope` whose `data` has the shape its
`event_type` names. `AudioEventMessage` says exactly that as one discriminated
union, so the AsyncAPI documents that FastStream generates (and any other JSON
Schema reader) show every event's payload. Readers still decode through the
registry, which also upcasts older schema versions.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, create_model

from .audio import AUDIO_EVENTS
from .envelope import EventEnvelope
from .user import USER_EVENTS


def _message_model(event: type[BaseModel]) -> type[EventEnvelope]:
    name = event.__name__
    return create_model(
        f"{name}Message",
        __base__=EventEnvelope,
        __doc__=f"A record whose value carries one `{name}` event.",
        event_type=(Literal[name], ...),  # type: ignore[arg-type]
        data=(event, ...),
    )


AUDIO_EVENT_MESSAGES: tuple[type[EventEnvelope], ...] = tuple(
    _message_model(event) for event in (*AUDIO_EVENTS, *USER_EVENTS)
)

AudioEventMessage = Annotated[
    Union[AUDIO_EVENT_MESSAGES],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="event_type"),
]
