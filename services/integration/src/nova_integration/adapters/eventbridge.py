"""Forwards public payloads to an Amazon EventBridge bus with `PutEvents`.

Each payload (`nova_integration.domain.payload.public_payload`) becomes one
entry: ``Source`` is the forwarder's source (``nova.audio``), ``DetailType``
the payload's public ``type``, ``Detail`` the payload as `encode_body` writes
it, ``Time`` its ``created_at``. Rules on the bus then match on these, for
example ``{"source": ["nova.audio"], "detail-type": ["audio.deleted"]}``.

Entries are sent in order, in calls of at most 10 entries and 256 KiB (the
AWS limits; an entry's size is counted as the AWS guide "Calculating PutEvents
event entry size" does, plus the bus name). An entry over 256 KiB on its own
(a long transcript) is sent without ``data.segments`` and with
``data.truncated`` set to true; if that is still too large, ``data.text`` is
dropped as well. Receivers that need the whole transcript read it from the
query API (``GET /queries/audio/{audio_id}``). An entry still too large after
that is rejected without being sent.

`PutEvents` answers per entry. Entries failing with a code that waiting can
fix (throttling, an internal failure) are sent again, alone, with exponential
backoff and full jitter, `max_attempts` times at most; if some still fail,
`EventBridgeUnavailableError` (transient) asks the consumer to retry the
whole batch later. Entries failing with any other code (a malformed detail,
access denied) raise `EventBridgeRejectedError` once every other entry is
delivered; the consumer then parks their audio. When a batch has both, the
transient error wins: the rejection is raised when the batch comes back. An
error of the call itself (a `botocore` `ClientError`, a connection error)
propagates unchanged.

Delivery is at least once: a batch retried after an error re-sends entries
EventBridge already took. Receivers deduplicate on the payload's ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from ..domain.payload import encode_body

logger = logging.getLogger(__name__)

MAX_ENTRIES_PER_CALL: Final = 10
"""`PutEvents` takes at most this many entries per call."""

MAX_CALL_BYTES: Final = 256 * 1024
"""`PutEvents` takes at most this many bytes of entries per call."""

TIME_BYTES: Final = 14
"""What a ``Time`` adds to an entry's size, per the AWS guide."""

RETRYABLE_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "InternalFailure",
        "InternalException",
        "ServiceUnavailable",
    }
)
"""Per-entry error codes that a later attempt can succeed after."""

TOO_LARGE_CODE: Final = "EntryTooLarge"
"""The code of an entry rejected here, before sending, for its size."""


class EventsClient(Protocol):
    """The part of an aioboto3 ``events`` client the forwarder uses."""

    async def put_events(
        self,
        *,
        Entries: list[dict[str, Any]],  # noqa: N803 - the AWS parameter name
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class FailedEntry:
    """One event EventBridge did not take, with its error."""

    event_id: str
    error_code: str
    error_message: str


class EventBridgeUnavailableError(Exception):
    """Some events still failed for a reason that passes (throttling, an
    internal failure) after every attempt; the batch is retried later."""

    retriable = True  # read by nova_platform.batches.is_transient

    def __init__(
        self, bus_name: str, attempts: int, failures: Sequence[FailedEntry]
    ) -> None:
        self.failures = tuple(failures)
        codes = sorted({f.error_code for f in self.failures})
        super().__init__(
            f"EventBridge bus {bus_name!r} still failed {len(self.failures)} "
            f"event(s) after {attempts} attempt(s) ({', '.join(codes)}); the batch "
            "is retried later. If this persists, check the account's PutEvents "
            "quota and the AWS service health."
        )


class EventBridgeRejectedError(Exception):
    """EventBridge refused some events for a reason retrying does not fix."""

    def __init__(self, bus_name: str, failures: Sequence[FailedEntry]) -> None:
        self.failures = tuple(failures)
        shown = "; ".join(
            f"{f.event_id} ({f.error_code}: {f.error_message})"
            for f in self.failures[:20]
        )
        more = len(self.failures) - 20
        super().__init__(
            f"EventBridge bus {bus_name!r} rejected {len(self.failures)} event(s): "
            f"{shown}{f'; and {more} more' if more > 0 else ''}. Check that the bus "
            "exists in this account and region, that this service may "
            "events:PutEvents on it, and that each Detail is a JSON object of at "
            "most 256 KiB."
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    event_id: str
    request: dict[str, Any]
    size: int


class EventBridgeForwarder:
    """Puts public payloads on one EventBridge bus, retrying what can succeed."""

    def __init__(
        self,
        client: EventsClient,
        bus_name: str,
        *,
        source: str = "nova.audio",
        max_attempts: int = 5,
        base_delay_s: float = 0.2,
        max_delay_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self._client = client
        self._bus_name = bus_name
        self._source = source
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    async def forward(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Put every payload on the bus, in order.

        Raises `EventBridgeUnavailableError` when retryable failures outlast
        `max_attempts`, `EventBridgeRejectedError` when EventBridge refused some
        entries (every other entry is delivered first); errors of the call
        itself propagate.
        """
        pending: list[_Entry] = []
        rejected: list[FailedEntry] = []
        for payload in payloads:
            entry = self._entry(payload)
            if entry.size > MAX_CALL_BYTES:
                rejected.append(
                    FailedEntry(
                        entry.event_id,
                        TOO_LARGE_CODE,
                        f"{entry.size} bytes with any transcript dropped; "
                        f"PutEvents takes at most {MAX_CALL_BYTES}",
                    )
                )
            else:
                pending.append(entry)
        attempt = 0
        while pending:
            attempt += 1
            retry: list[_Entry] = []
            failures: list[FailedEntry] = []
            for batch in _batches(pending):
                for entry, failure in await self._put(batch, attempt):
                    if _retryable(failure.error_code):
                        retry.append(entry)
                        failures.append(failure)
                    else:
                        rejected.append(failure)
            if not retry:
                break
            if attempt >= self._max_attempts:
                logger.error(
                    "EventBridge entries still failing; giving up on this batch",
                    extra={
                        "bus": self._bus_name,
                        "attempt": attempt,
                        "failed": len(failures),
                        "event_ids": [f.event_id for f in failures],
                        "error_codes": sorted({f.error_code for f in failures}),
                    },
                )
                raise EventBridgeUnavailableError(self._bus_name, attempt, failures)
            delay = self._rng.uniform(
                0, min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1))
            )
            logger.warning(
                "EventBridge entries failed; retrying them",
                extra={
                    "bus": self._bus_name,
                    "attempt": attempt,
                    "failed": len(failures),
                    "event_ids": [f.event_id for f in failures],
                    "error_codes": sorted({f.error_code for f in failures}),
                    "delay_s": round(delay, 3),
                },
            )
            await self._sleep(delay)
            pending = retry
        if rejected:
            logger.error(
                "EventBridge rejected entries",
                extra={
                    "bus": self._bus_name,
                    "rejected": len(rejected),
                    "event_ids": [f.event_id for f in rejected],
                    "error_codes": sorted({f.error_code for f in rejected}),
                },
            )
            raise EventBridgeRejectedError(self._bus_name, rejected)

    async def _put(
        self, batch: Sequence[_Entry], attempt: int
    ) -> list[tuple[_Entry, FailedEntry]]:
        """Send one call's entries; the ones that failed, with their errors."""
        response = await self._client.put_events(Entries=[e.request for e in batch])
        results = response.get("Entries") or []
        failed: list[tuple[_Entry, FailedEntry]] = []
        for index, entry in enumerate(batch):
            result = results[index] if index < len(results) else _NO_RESULT
            code = result.get("ErrorCode")
            if code:
                failure = FailedEntry(
                    entry.event_id, str(code), str(result.get("ErrorMessage") or "")
                )
                failed.append((entry, failure))
        logger.debug(
            "EventBridge PutEvents",
            extra={
                "bus": self._bus_name,
                "attempt": attempt,
                "entries": len(batch),
                "bytes": sum(e.size for e in batch),
                "failed": len(failed),
            },
        )
        return failed

    def _entry(self, payload: dict[str, Any]) -> _Entry:
        """The `PutEvents` entry of `payload`, its transcript dropped if too big."""
        entry = smaller = self._build(payload)
        data = payload.get("data")
        if not isinstance(data, dict):
            return entry
        dropped: list[str] = []
        for field in ("segments", "text"):
            if smaller.size <= MAX_CALL_BYTES or field not in data:
                continue
            data = {k: v for k, v in data.items() if k != field} | {"truncated": True}
            dropped.append(field)
            smaller = self._build({**payload, "data": data})
        if dropped:
            logger.warning(
                "EventBridge entry too large; sending it without part of its data",
                extra={
                    "bus": self._bus_name,
                    "event_id": entry.event_id,
                    "size_bytes": entry.size,
                    "sent_bytes": smaller.size,
                    "dropped": dropped,
                },
            )
        return smaller

    def _build(self, payload: dict[str, Any]) -> _Entry:
        request: dict[str, Any] = {
            "Source": self._source,
            "DetailType": payload["type"],
            "Detail": encode_body(payload).decode(),
            "EventBusName": self._bus_name,
            "Resources": [],
        }
        size = sum(
            len(request[key].encode())
            for key in ("Source", "DetailType", "Detail", "EventBusName")
        )
        time = _parse_time(payload.get("created_at"))
        if time is not None:
            request["Time"] = time
            size += TIME_BYTES
        return _Entry(str(payload["id"]), request, size)


_NO_RESULT: Final[dict[str, Any]] = {
    "ErrorCode": "InternalFailure",
    "ErrorMessage": "the PutEvents response has no result for this entry",
}


def _retryable(code: str) -> bool:
    return code in RETRYABLE_CODES or "Throttl" in code


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _batches(entries: Sequence[_Entry]) -> Iterator[list[_Entry]]:
    """`entries` in order, cut into calls within the count and size limits."""
    batch: list[_Entry] = []
    size = 0
    for entry in entries:
        if batch and (
            len(batch) == MAX_ENTRIES_PER_CALL or size + entry.size > MAX_CALL_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch
