"""Sealing, in place, the events stored before sealing existed.

Such a legacy event holds its personal fields in plaintext, and they open
unchanged for ever: erasing its owner cannot reach them. `Resealer` rewrites
each one's `data` in its own item, personal fields sealed with the owner's key
(`PersonalData.seal`), or, for an owner already erased, dropped under a key no
one keeps (`PersonalData.shred`), so that erasure then shreds them like any
other event. Ids, type, version, timestamps and the non-personal fields stay
as they were, and so does the additional authenticated data (it names the
event, not the bytes), so readers open a resealed event to the same payload.

A rewrite is conditional on the item holding exactly the data that was read,
so it never overwrites a change made meanwhile, and running it again skips
what is sealed already. It changes an existing item, which the table's stream
reports as MODIFY; the relay publishes INSERTs only, so no rewrite reaches
Kafka as a new event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from nova_events import AUDIO_FILE, USER, EventEnvelope, dumps
from nova_events.envelope import SEALED_KEY
from nova_events.personal import split_personal
from nova_events.versioning import UnknownEventError
from nova_platform.personal import PersonalData, UserErasedError

from .ports import MAX_EVENT_BYTES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event store item: the event, and its `data` exactly as stored."""

    envelope: EventEnvelope
    stored_data: str
    """The item's serialised `data`, which a rewrite requires unchanged."""


class StoredEvents(Protocol):
    """The event store's items, read and rewritten one by one."""

    def pages(self) -> AsyncIterator[Sequence[StoredEvent]]:
        """Every item of the store, a page at a time, in no particular order."""
        ...

    async def first_event(
        self, aggregate_type: str, aggregate_id: UUID
    ) -> EventEnvelope | None:
        """Version 1 of the stream, as stored; None when there is none."""
        ...

    async def replace_data(self, event: StoredEvent, sealed: EventEnvelope) -> bool:
        """Write `sealed.data` into the event's item if the item still holds
        `event.stored_data`; False (nothing written) when it does not."""
        ...


SEALED_ALREADY = "sealed already"
NOTHING_PERSONAL = "no personal field"


@dataclass
class ResealReport:
    """What a reseal did (or, dry, would do) with the store's items."""

    dry_run: bool
    scanned: int = 0
    sealed: int = 0
    """Legacy events sealed with their owner's key (dry: that would be)."""
    shredded: int = 0
    """Legacy events of an erased owner, whose personal fields were dropped."""
    changed_meanwhile: int = 0
    """Legacy events whose item changed between the read and the write."""
    left: Counter[str] = field(default_factory=Counter)
    """Items left as they are, by reason."""

    @property
    def plaintext_left(self) -> int:
        """Legacy events that still hold personal fields in plaintext (dry:
        that a reseal would leave so)."""
        benign = (SEALED_ALREADY, NOTHING_PERSONAL)
        kept = sum(n for reason, n in self.left.items() if reason not in benign)
        return kept + self.changed_meanwhile

    def lines(self) -> list[str]:
        verb = "would be" if self.dry_run else "were"
        found = [
            f"scanned {self.scanned} stored events",
            f"{self.sealed} legacy events {verb} sealed with their owner's key",
            f"{self.shredded} legacy events of erased users {verb} shredded",
        ]
        if self.changed_meanwhile:
            found.append(
                f"{self.changed_meanwhile} changed while being resealed and were "
                "left alone: run the reseal again"
            )
        found += [f"{n} left as they are: {r}" for r, n in sorted(self.left.items())]
        return found


class Resealer:
    """Seals the personal fields of every legacy event in the store, in place."""

    def __init__(
        self, events: StoredEvents, personal: PersonalData, *, dry_run: bool
    ) -> None:
        self._events = events
        self._personal = personal
        self._dry_run = dry_run
        self._owners: dict[tuple[str, UUID], UUID | None] = {}
        self._erased: dict[UUID, bool] = {}

    async def run(self) -> ResealReport:
        report = ResealReport(self._dry_run)
        async for page in self._events.pages():
            for event in page:
                report.scanned += 1
                await self._reseal(event, report)
        logger.info(
            "reseal done",
            extra={
                "dry_run": self._dry_run,
                "scanned": report.scanned,
                "sealed": report.sealed,
                "shredded": report.shredded,
                "changed_meanwhile": report.changed_meanwhile,
            },
        )
        return report

    async def _reseal(self, event: StoredEvent, report: ResealReport) -> None:
        envelope = event.envelope
        if SEALED_KEY in envelope.data:
            report.left[SEALED_ALREADY] += 1
            return
        try:
            _, personal = split_personal(
                envelope.event_type, envelope.schema_version, envelope.data
            )
        except UnknownEventError:
            self._leave(event, report, "unknown event type; upgrade nova-events")
            return
        if not personal:
            report.left[NOTHING_PERSONAL] += 1
            return
        owner = await self._owner(envelope)
        if owner is None:
            self._leave(event, report, "owner unknown (no AudioCreated user_id)")
            return
        if self._dry_run:
            if await self._was_erased(owner):
                report.shredded += 1
            else:
                report.sealed += 1
            return
        try:
            sealed = await self._personal.seal(envelope, owner)
            erased = False
        except UserErasedError:
            sealed = await self._personal.shred(envelope, owner)
            erased = True
        if len(dumps(sealed)) > MAX_EVENT_BYTES:
            self._leave(event, report, f"over {MAX_EVENT_BYTES} bytes once sealed")
            return
        if not await self._events.replace_data(event, sealed):
            report.changed_meanwhile += 1
            return
        if erased:
            report.shredded += 1
        else:
            report.sealed += 1

    async def _owner(self, envelope: EventEnvelope) -> UUID | None:
        """Whose key seals the event, as command-api chooses it: the user of
        a user stream; for an audio, the `user_id` of its `AudioCreated`
        (version 1); None for any other stream."""
        if envelope.aggregate_type == USER:
            return envelope.aggregate_id
        if envelope.aggregate_type != AUDIO_FILE:
            return None
        if envelope.version == 1:
            return _uuid(envelope.data.get("user_id"))
        stream = (envelope.aggregate_type, envelope.aggregate_id)
        if stream not in self._owners:
            first = await self._events.first_event(*stream)
            self._owners[stream] = (
                _uuid(first.data.get("user_id")) if first is not None else None
            )
        return self._owners[stream]

    async def _was_erased(self, owner: UUID) -> bool:
        if owner not in self._erased:
            self._erased[owner] = await self._personal.erased_at(owner) is not None
        return self._erased[owner]

    @staticmethod
    def _leave(event: StoredEvent, report: ResealReport, reason: str) -> None:
        report.left[reason] += 1
        logger.warning(
            "legacy event left in plaintext",
            extra={
                "event_id": str(event.envelope.event_id),
                "audio_id": str(event.envelope.aggregate_id),
                "reason": reason,
            },
        )


def _uuid(value: object) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        return None
