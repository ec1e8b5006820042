"""Applies a consumed batch: decode, keep parked audios parked, park poison.

The rule that keeps every audio in order: once one of an audio's events is
parked, each later event of that audio is parked behind it until a redrive
lifts the mark. Failures are sorted in two kinds. A transient one (a backend
unreachable, throttled or timing out) fails the whole batch, which is then
rewound and retried: nothing is parked for an outage. Any other failure is
narrowed down to the audios whose events cause it, and only those are parked.

An audio whose events fail transiently every time, while the backends serve
the others, would block its partition forever. So a retried batch is applied
audio by audio, and an audio is given up on (parked, reason "gave up after N
attempts") after N consecutive attempts in which it failed transiently while
there was evidence that the backends work: another audio of the same attempt
was applied, or, when the batch holds that audio alone, the service's
readiness checks passed. An attempt in which every audio fails is an outage
and counts for none of them, so an unreachable backend never parks anything.

Records are opened (`nova_platform.personal`) before the handler sees them:
personal fields decrypted, or erased once their owner's key is gone. One that
does not open (tampered with) is undecodable; the key store failing is
transient like any backend.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from nova_events import EventEnvelope, loads
from nova_events.topics import HEADER_CORRELATION_ID

from .logging import log_context
from .parking import Parking, Record
from .personal import PersonalData

logger = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[EventEnvelope]], Awaitable[None]]
BackendsUp = Callable[[], Awaitable[bool]]

DEFAULT_MAX_ATTEMPTS = 10
OUTAGE_PROBES = 2
"""Audios that fail in a row, none applied, before an attempt stops as an
outage: a retry then costs two calls to a dead backend, not one per audio."""

_THROTTLING = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "SlowDown",
    "TransactionConflictException",
}


def is_transient(exc: BaseException) -> bool:
    """True when waiting and retrying can make `exc` go away.

    Reads the error's own attributes (a `retriable` flag, an HTTP status, an
    AWS error code), never its message.
    """
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    if getattr(exc, "retriable", False):  # aiokafka's errors
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("Error", {}).get("Code", "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _THROTTLING or int(status) >= 500
    status_code = getattr(exc, "status_code", None)  # opensearch-py
    if isinstance(status_code, int):
        return status_code == 429 or status_code >= 500
    name = type(exc).__name__
    # botocore's connection errors and opensearch-py's ConnectionError/Timeout
    # do not derive from the builtin ones.
    return name in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ConnectionTimeout",
        "ConnectionError",
    }


def to_record(raw: Any) -> Record:
    return Record(
        key=raw.key,
        value=raw.value,
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        headers=list(raw.headers or []),
    )


class BatchProcessor:
    """Runs a consumer's handler over a batch, parking what cannot be applied.

    `max_attempts` bounds the transient failures of one audio (see the module
    doc); `backends_up` tells whether the service's backends answer, the
    evidence used when a batch holds a single audio (None: never given up on).
    """

    def __init__(
        self,
        handler: BatchHandler,
        parking: Parking,
        transient: Callable[[BaseException], bool] = is_transient,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backends_up: BackendsUp | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self._handler = handler
        self._parking = parking
        self._transient = transient
        self._max_attempts = max_attempts
        self._backends_up = backends_up
        self._personal = personal
        self._parked: set[str] | None = None
        self._parked_stale = False
        self._retrying = False
        self._strikes: dict[str, int] = {}
        self.applied = 0
        self.parked_events = 0

    @property
    def parked_aggregates(self) -> int:
        return len(self._parked or ())

    def partitions_assigned(self) -> None:
        """Reload the parked audios before the next batch.

        Another instance may have parked audios of the partitions this one
        just got; the mark is per group, the cached set per process.
        """
        self._parked_stale = True

    async def process(self, records: Sequence[Record]) -> None:
        """Apply or park every record; raises only transient errors (retry all)."""
        if self._parked is None or self._parked_stale:
            self._parked_stale = False
            self._parked = await self._parking.parked()
        read: list[tuple[Record, EventEnvelope | None]] = []
        for record in records:
            with record_context(record):
                read.append((record, _decode(record)))
        if self._personal is not None:
            read = await self._open(self._personal, read)
        groups: dict[str, list[tuple[Record, EventEnvelope | None]]] = {}
        for record, envelope in read:
            groups.setdefault(record.aggregate_id, []).append((record, envelope))
        applicable: dict[str, list[tuple[Record, EventEnvelope]]] = {}
        for aggregate_id, group in groups.items():
            if aggregate_id in self._parked:
                if await self._follow_mark(aggregate_id, [r for r, _ in group]):
                    continue
                self._parked.discard(aggregate_id)  # a redrive lifted the mark
            bad = next((i for i, (_, e) in enumerate(group) if e is None), None)
            if bad is not None:
                await self._park(
                    aggregate_id,
                    [r for r, _ in group[bad:]],
                    "undecodable record",
                )
                group = group[:bad]
            decoded = [(r, e) for r, e in group if e is not None]
            if decoded:
                applicable[aggregate_id] = decoded
        await self._apply(applicable)

    @staticmethod
    async def _open(
        personal: PersonalData, decoded: list[tuple[Record, EventEnvelope | None]]
    ) -> list[tuple[Record, EventEnvelope | None]]:
        envelopes = [e for _, e in decoded if e is not None]
        opened = iter(await personal.open_each(envelopes))
        result: list[tuple[Record, EventEnvelope | None]] = []
        for record, envelope in decoded:
            if envelope is None:
                result.append((record, None))
                continue
            outcome = next(opened)
            if isinstance(outcome, EventEnvelope):
                result.append((record, outcome))
                continue
            with record_context(record, envelope):
                logger.error(
                    "record does not open",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": str(outcome)[:500],
                    },
                )
            result.append((record, None))
        return result

    async def _follow_mark(self, aggregate_id: str, records: list[Record]) -> bool:
        """True when the records were parked behind the audio's existing mark."""
        if not await self._parking.is_parked(aggregate_id):
            return False
        with record_context(records[0]):
            followed = await self._parking.park_behind(aggregate_id, records)
        if followed:
            self.parked_events += len(records)
        return followed

    async def _apply(
        self, groups: dict[str, list[tuple[Record, EventEnvelope]]]
    ) -> None:
        everything = [pair for pairs in groups.values() for pair in pairs]
        if not everything:
            self._settled()
            return
        if not self._retrying:
            try:
                with pairs_context(everything):
                    await self._handler([e for _, e in everything])
                self.applied += len(everything)
                self._settled()
                return
            except Exception as exc:
                if self._transient(exc):
                    self._retrying = True
                    raise
                logger.warning(
                    "batch failed; narrowing down to the audios that cause it",
                    extra={"error": repr(exc)[:500]},
                )
        await self._one_audio_at_a_time(groups)

    async def _one_audio_at_a_time(
        self, groups: dict[str, list[tuple[Record, EventEnvelope]]]
    ) -> None:
        # Audios that failed before go last: the others show first whether the
        # backends work at all.
        order = sorted(groups, key=lambda a: self._strikes.get(a, 0))
        failed: dict[str, Exception] = {}
        applied_any = False
        for aggregate_id in order:
            pairs = groups[aggregate_id]
            try:
                with pairs_context(pairs):
                    await self._handler([e for _, e in pairs])
            except Exception as exc:  # noqa: BLE001 - parked, or raised below
                if not self._transient(exc):
                    await self._park(aggregate_id, [r for r, _ in pairs], repr(exc))
                    continue
                failed[aggregate_id] = exc
                if not applied_any and len(failed) >= OUTAGE_PROBES:
                    break
                continue
            applied_any = True
            self.applied += len(pairs)
            self._strikes.pop(aggregate_id, None)
        self._strikes = {a: n for a, n in self._strikes.items() if a in groups}
        if not failed:
            self._settled()
            return
        if applied_any or (len(groups) == 1 and await self._answering()):
            await self._count_strikes(groups, failed)
        if not failed:
            self._settled()
            return
        self._retrying = True
        raise next(iter(failed.values()))

    async def _count_strikes(
        self,
        groups: dict[str, list[tuple[Record, EventEnvelope]]],
        failed: dict[str, Exception],
    ) -> None:
        for aggregate_id, exc in list(failed.items()):
            strikes = self._strikes.get(aggregate_id, 0) + 1
            self._strikes[aggregate_id] = strikes
            pairs = groups[aggregate_id]
            with pairs_context(pairs):
                logger.warning(
                    "audio failed while the backends work",
                    extra={
                        "attempt": strikes,
                        "max_attempts": self._max_attempts,
                        "error": repr(exc)[:500],
                    },
                )
            if strikes < self._max_attempts:
                continue
            await self._park(
                aggregate_id,
                [r for r, _ in pairs],
                f"gave up after {strikes} attempts: {exc!r}",
            )
            del self._strikes[aggregate_id]
            del failed[aggregate_id]

    async def _answering(self) -> bool:
        if self._backends_up is None:
            return False
        try:
            return await self._backends_up()
        except Exception:
            logger.warning("readiness probe failed", exc_info=True)
            return False

    def _settled(self) -> None:
        self._retrying = False
        self._strikes.clear()

    async def _park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        with record_context(records[0]):
            await self._parking.park(aggregate_id, records, reason)
        assert self._parked is not None
        self._parked.add(aggregate_id)
        self.parked_events += len(records)


@contextmanager
def record_context(
    record: Record, envelope: EventEnvelope | None = None
) -> Iterator[None]:
    """Log lines within name the record's correlation id, event id and audio."""
    correlation = _header(record, HEADER_CORRELATION_ID)
    if correlation is None and envelope is not None:
        correlation = envelope.metadata.correlation_id
    with log_context(
        correlation=correlation,
        event=str(envelope.event_id) if envelope is not None else None,
        audio=record.aggregate_id if record.key else None,
    ):
        yield


@contextmanager
def event_context(envelope: EventEnvelope) -> Iterator[None]:
    """For a handler that goes event by event: log lines within name this one."""
    with log_context(
        correlation=envelope.metadata.correlation_id,
        event=str(envelope.event_id),
        audio=str(envelope.aggregate_id),
    ):
        yield


@contextmanager
def pairs_context(pairs: Sequence[tuple[Record, EventEnvelope]]) -> Iterator[None]:
    """The context of what a handler call applies: each id that all share."""
    if len(pairs) == 1:
        with record_context(*pairs[0]):
            yield
        return
    correlations = {_header(r, HEADER_CORRELATION_ID) for r, _ in pairs}
    audios = {r.aggregate_id for r, _ in pairs}
    with log_context(
        correlation=correlations.pop() if len(correlations) == 1 else None,
        audio=audios.pop() if len(audios) == 1 else None,
    ):
        yield


def _header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode(errors="replace")
    return None


def _decode(record: Record) -> EventEnvelope | None:
    if record.value is None:
        return None
    try:
        envelope = loads(record.value)
    except (ValidationError, ValueError) as exc:
        logger.error(
            "undecodable record",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": str(exc)[:500],
            },
        )
        return None
    return envelope
