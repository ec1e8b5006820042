"""Schema versions of event payloads, and the upcasters between them.

Every event type has a current schema version: the `schema_version` of the newest
model registered for it. Payloads stored or published under an older version are
brought to the current one by a chain of upcasters, one per step (v1 -> v2,
v2 -> v3, ...), so a consumer only ever sees the current shape.

A `SchemaRegistry` holds the models and the upcasters. The events of this package
live in `nova_events.registry.REGISTRY`; tests build registries of their own::

    registry = SchemaRegistry()
    registry.register(RenamedV2)  # schema_version = 2

    @registry.upcaster("Renamed", from_version=1)
    def _title_to_name(data: Payload) -> Payload:
        data["name"] = data.pop("title")
        return data

    registry.validate()  # raises SchemaRegistryError if a step is missing

The real events, and the upcasters between their versions, are declared in
`nova_events.registry` with the module-level `upcaster` decorator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .audio import EventPayload
from .envelope import SEALED_KEY, EventEnvelope

Payload = dict[str, Any]
"""An event's `data`: the JSON object of one schema version."""

Upcaster = Callable[[Payload], Payload]
"""Turns a payload of version N into one of version N + 1.

It receives a private deep copy, so it may change and return its argument."""

EventT = TypeVar("EventT", bound=EventPayload)
UpcasterT = TypeVar("UpcasterT", bound=Upcaster)


class UnknownEventError(ValueError):
    """Raised when an envelope names an event type or schema version this
    package does not know; upgrade `nova-events` on the reading service."""


class SealedPayloadError(ValueError):
    """Raised when a payload is decoded whose personal fields are still sealed
    (the stored and published form): open the envelope first, with
    `nova_platform.personal.PersonalData.open`."""

    def __init__(self, event_type: str) -> None:
        super().__init__(
            f"this {event_type} payload holds its personal fields sealed under "
            f"{SEALED_KEY!r}; open the envelope (nova_platform.personal) before "
            "decoding it"
        )


class SchemaRegistryError(RuntimeError):
    """A registry is inconsistent: a duplicate model or upcaster, or a version
    with no upcaster to the next one. A programming error, found at import."""


class SchemaRegistry:
    """Maps `(event_type, schema_version)` to payload models and upcasters.

    The current version of an event type is the highest `schema_version` among
    its registered models; older versions need an upcaster per step but no model
    (their JSON Schemas stay committed under `nova_events/schemas/`).
    """

    def __init__(self) -> None:
        self._models: dict[str, dict[int, type[EventPayload]]] = {}
        self._upcasters: dict[str, dict[int, Upcaster]] = {}
        self._validated = True

    # -- declaring -----------------------------------------------------------

    def register(
        self, model: type[EventT], *, event_type: str | None = None
    ) -> type[EventT]:
        """Register `model` at its `schema_version`; usable as a class decorator.

        `event_type` defaults to `model.event_type()` (the class name); give it
        when keeping an old version's model under another class name.
        """
        if not (isinstance(model, type) and issubclass(model, EventPayload)):
            raise SchemaRegistryError(f"{model!r} is not an EventPayload subclass")
        name = event_type or model.event_type()
        version = model.schema_version
        if not isinstance(version, int) or version < 1:
            raise SchemaRegistryError(
                f"{model.__name__}.schema_version must be an int >= 1, got {version!r}"
            )
        versions = self._models.setdefault(name, {})
        if version in versions:
            raise SchemaRegistryError(
                f"{name} v{version} is registered twice: "
                f"{versions[version].__qualname__} and {model.__qualname__}"
            )
        versions[version] = model
        self._validated = False
        return model

    def add_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Register `fn` to turn `event_type` payloads of `from_version` into
        payloads of `from_version + 1`."""
        if from_version < 1:
            raise SchemaRegistryError(
                f"upcaster {_name(fn)} for {event_type}: from_version must be "
                f">= 1, got {from_version}"
            )
        steps = self._upcasters.setdefault(event_type, {})
        if from_version in steps:
            raise SchemaRegistryError(
                f"{event_type} v{from_version} -> v{from_version + 1} has two "
                f"upcasters: {_name(steps[from_version])} and {_name(fn)}"
            )
        steps[from_version] = fn
        self._validated = False

    def upcaster(
        self, event_type: str, *, from_version: int
    ) -> Callable[[UpcasterT], UpcasterT]:
        """Decorator form of `add_upcaster`, returning the function unchanged:
        `@registry.upcaster("AudioCreated", from_version=1)` on a `Payload ->
        Payload` function."""

        def declare(fn: UpcasterT) -> UpcasterT:
            self.add_upcaster(event_type, from_version, fn)
            return fn

        return declare

    def validate(self) -> None:
        """Check that every event type has a path from v1 to its current version.

        Raises `SchemaRegistryError` naming every missing step, and every
        upcaster for an unknown type or one that starts at or above the current
        version (it would never run).
        """
        problems: list[str] = []
        for event_type, steps in sorted(self._upcasters.items()):
            if event_type not in self._models:
                problems.append(
                    f"upcasters are declared for {event_type}, which has no "
                    f"registered model"
                )
                continue
            current = self.current_version(event_type)
            problems.extend(
                f"{event_type}: upcaster {_name(fn)} from v{start} is at or above "
                f"the current version v{current}"
                for start, fn in sorted(steps.items())
                if start >= current
            )
        for event_type in sorted(self._models):
            steps = self._upcasters.get(event_type, {})
            current = self.current_version(event_type)
            problems.extend(
                f"{event_type}: no upcaster from v{start} to v{start + 1} (the "
                f"current version is v{current}); declare one with "
                f'@upcaster("{event_type}", from_version={start})'
                for start in range(1, current)
                if start not in steps
            )
        if problems:
            raise SchemaRegistryError(
                "the event schema registry is inconsistent:\n  - "
                + "\n  - ".join(problems)
            )
        self._validated = True

    # -- reading -------------------------------------------------------------

    def event_types(self) -> tuple[str, ...]:
        """Every registered event type, sorted."""
        return tuple(sorted(self._models))

    def current_version(self, event_type: str) -> int:
        """The schema version producers write for `event_type`."""
        return max(self._versions_of(event_type))

    def current_model(self, event_type: str) -> type[EventPayload]:
        """The model of `event_type` at its current version."""
        versions = self._versions_of(event_type)
        return versions[max(versions)]

    def models(self) -> Iterator[tuple[str, int, type[EventPayload]]]:
        """Every registered `(event_type, schema_version, model)`, sorted."""
        for event_type in self.event_types():
            for version, model in sorted(self._models[event_type].items()):
                yield event_type, version, model

    def model_for(self, event_type: str, schema_version: int) -> type[EventPayload]:
        """The model registered for `event_type` at exactly `schema_version`.

        Raises `UnknownEventError` for an unknown type, a version newer than the
        current one, or an older version whose model was not kept (such payloads
        are read with `decode`, which upcasts them).
        """
        versions = self._versions_of(event_type)
        self._check_known(event_type, schema_version)
        model = versions.get(schema_version)
        if model is None:
            raise UnknownEventError(
                f"{event_type} schema version {schema_version} has no model; its "
                f"payloads are upcast to v{max(versions)}, read them with "
                f"decode_payload"
            )
        return model

    def upcast(self, event_type: str, schema_version: int, data: Payload) -> Payload:
        """`data` of `event_type` at `schema_version`, brought to the current
        version by the upcaster chain. `data` itself is never changed; it is
        returned as it is when already at the current version."""
        self._ensure_valid()
        current = self.current_version(event_type)
        self._check_known(event_type, schema_version)
        if schema_version == current:
            return data
        payload = copy.deepcopy(data)
        steps = self._upcasters.get(event_type, {})
        for start in range(schema_version, current):
            fn = steps[start]
            try:
                payload = fn(payload)
            except Exception as exc:
                exc.add_note(
                    f"while upcasting {event_type} from v{start} to v{start + 1} "
                    f"with {_name(fn)}"
                )
                raise
            if not isinstance(payload, dict):
                raise TypeError(
                    f"upcaster {_name(fn)} ({event_type} v{start} -> v{start + 1})"
                    f" returned {type(payload).__name__}, not a dict"
                )
        return payload

    def decode_data(
        self, event_type: str, schema_version: int, data: Payload
    ) -> EventPayload:
        """The current model of `event_type`, validated from `data` after
        upcasting it from `schema_version`. Raises `SealedPayloadError` for a
        payload that was not opened."""
        if SEALED_KEY in data:
            raise SealedPayloadError(event_type)
        payload = self.upcast(event_type, schema_version, data)
        return self.current_model(event_type).model_validate(payload)

    def decode(self, envelope: EventEnvelope) -> EventPayload:
        """The typed payload of `envelope`, at the current version."""
        return self.decode_data(
            envelope.event_type, envelope.schema_version, envelope.data
        )

    # -- internals -----------------------------------------------------------

    def _versions_of(self, event_type: str) -> dict[int, type[EventPayload]]:
        versions = self._models.get(event_type)
        if not versions:
            raise UnknownEventError(
                f"unknown event type {event_type!r}; known: "
                f"{list(self.event_types())}. If another service writes it, "
                f"upgrade nova-events on this one"
            )
        return versions

    def _check_known(self, event_type: str, schema_version: int) -> None:
        current = self.current_version(event_type)
        if not 1 <= schema_version <= current:
            raise UnknownEventError(
                f"{event_type} schema version {schema_version} is not supported; "
                f"this reader knows versions 1 to {current}. If the writer is "
                f"newer, upgrade nova-events on this service"
            )

    def _ensure_valid(self) -> None:
        if not self._validated:
            self.validate()


def _name(fn: Upcaster) -> str:
    return getattr(fn, "__qualname__", repr(fn))
