"""Applies a consumed batch: decode, keep parked audios parked, park poison.

The rule that keeps every audio in order: once one of an audio's events is
parked, each later event of that audio is parked behind it until a redrive
lifts the mark. Failures are sorted in two kinds. A transient one (a backend
unreachable, throttled or timing out) fails the whole batch, which is then
rewound and retried: nothing is parked for an outage. Any other failure is
narrowed down to the audios whose events cause it, and only those are parked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import ValidationError

from nova_events import EventEnvelope, loads

from .parking import Parking, Record

logger = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[EventEnvelope]], Awaitable[None]]

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
    """Runs a consumer's handler over a batch, parking what cannot be applied."""

    def __init__(
        self,
        handler: BatchHandler,
        parking: Parking,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self._handler = handler
        self._parking = parking
        self._transient = transient
        self._parked: set[str] | None = None
        self.applied = 0
        self.parked_events = 0

    @property
    def parked_aggregates(self) -> int:
        return len(self._parked or ())

    async def process(self, records: Sequence[Record]) -> None:
        """Apply or park every record; raises only transient errors (retry all)."""
        if self._parked is None:
            self._parked = await self._parking.parked()
        groups: dict[str, list[tuple[Record, EventEnvelope | None]]] = {}
        for record in records:
            groups.setdefault(record.aggregate_id, []).append((record, _decode(record)))
        applicable: dict[str, list[tuple[Record, EventEnvelope]]] = {}
        for aggregate_id, group in groups.items():
            if aggregate_id in self._parked:
                if await self._parking.is_parked(aggregate_id):
                    await self._park(
                        aggregate_id, [r for r, _ in group], "audio is parked"
                    )
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

    async def _apply(
        self, groups: dict[str, list[tuple[Record, EventEnvelope]]]
    ) -> None:
        everything = [e for pairs in groups.values() for _, e in pairs]
        if not everything:
            return
        try:
            await self._handler(everything)
            self.applied += len(everything)
            return
        except Exception as exc:
            if self._transient(exc):
                raise
            logger.warning(
                "batch failed; narrowing down to the audios that cause it",
                extra={"error": repr(exc)[:500]},
            )
        # One audio at a time, to park only the ones that fail.
        for aggregate_id, pairs in groups.items():
            try:
                await self._handler([e for _, e in pairs])
                self.applied += len(pairs)
            except Exception as exc:
                if self._transient(exc):
                    raise
                await self._park(aggregate_id, [r for r, _ in pairs], repr(exc))

    async def _park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        await self._parking.park(aggregate_id, records, reason)
        assert self._parked is not None
        self._parked.add(aggregate_id)
        self.parked_events += len(records)


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
