"""Rebuilds a projection into a fresh target while the live one keeps serving.

Both projections' `rebuild` commands run the same steps, with their own target
(a new DynamoDB table, a new OpenSearch index) and their own projector:

1. note where the events topic ends now (the last stable offset of each
   partition, as a `read_committed` reader sees it);
2. replay every event of the event store into the new target: a consistent,
   paginated `Scan`, each stream in version order;
3. follow the topic from the offsets of step 1 up to where it ends, round
   after round (each aiming at the end offsets noted as it begins, so that it
   ends while the relay keeps publishing), until a round finds little to do;
4. switch readers, and the live projector, to the new target;
5. keep following for a grace period, then up to where the topic ends at that
   moment: whatever the live projector wrote to the old target before the
   switch reached it was published before then, so it is in the new target too.

Why step 3 starts at the offsets of step 1 and not at the beginning of the
topic: the relay publishes an event only once it is committed to the store, so
every record before those offsets was committed before the scan began, and a
consistent scan sees it. An event committed later lies at or after them. So the
rebuild never needs what Kafka no longer retains, and does not re-read what it does.

A rebuild writes nothing to Kafka and commits no consumer offsets (it reads
with no consumer group): the integration service, the transcriber and every
other consumer never see it, so it triggers no webhook, no EventBridge event,
no transcription.

An audio whose events fail for a reason a retry cannot fix (the same failures
the live consumer parks, see `nova_platform.batches`) is left where it stopped,
and its later events are skipped, as the live consumer's parking does; the
report lists such audios. A transient failure (a backend unreachable or
throttling) is retried with backoff, and ends the rebuild if it lasts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OffsetOutOfRangeError
from pydantic import ValidationError

from nova_events import EventEnvelope, loads

from .batches import is_transient
from .event_items import from_item
from .kafka import kafka_client_options
from .personal import PersonalData
from .settings import NovaSettings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

Apply = Callable[[Sequence[EventEnvelope]], Awaitable[None]]
Switch = Callable[[], Awaitable[None]]

BATCH_SIZE = 500
RETRY_ATTEMPTS = 8
MAX_RETRY_DELAY_S = 10.0
POLL_MS = 200
PROGRESS_EVERY_S = 10.0


class RebuildError(Exception):
    """The rebuild stopped; readers still use the target they used before."""


@dataclass
class RebuildReport:
    """What a rebuild did, for the command's output."""

    target: str
    previous: list[str] = field(default_factory=list)
    from_store: int = 0
    from_topic: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # audio id -> reason
    switched: bool = False


def rebuild_name(base: str, now: datetime | None = None) -> str:
    """`<base>-r<UTC timestamp>`: the name of a rebuild's table or index."""
    return f"{base}-r{(now or datetime.now(UTC)).strftime('%Y%m%d%H%M%S')}"


async def scan_streams(
    client: DynamoDBClient,
    table: str,
    *,
    batch_size: int = BATCH_SIZE,
    page_size: int | None = None,
) -> AsyncIterator[list[EventEnvelope]]:
    """Every event of the store, in batches of whole streams in version order.

    DynamoDB returns the items of one partition key together, so a stream is
    complete once the scan has moved past it. Only the stream the scan is in
    is held back between pages, so memory stays bounded by `batch_size` and
    the longest stream.
    """
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if page_size:
        request["Limit"] = page_size
    done: set[str] = set()
    ready: list[EventEnvelope] = []
    current: str | None = None
    stream: list[EventEnvelope] = []
    while True:
        page = await client.scan(**request)
        for item in page.get("Items", []):
            key = item["pk"]["S"]
            if key != current:
                if key in done:
                    raise RebuildError(
                        f"the scan of {table} returned stream {key} in two places, "
                        "so its events cannot be replayed in order; run the rebuild "
                        "again, and if it repeats, check that this is the event store"
                    )
                if current is not None:
                    done.add(current)
                    ready.extend(sorted(stream, key=lambda e: e.version))
                    if len(ready) >= batch_size:
                        yield ready
                        ready = []
                current, stream = key, []
            stream.append(from_item(item))
        last = page.get("LastEvaluatedKey")
        if not last:
            break
        request["ExclusiveStartKey"] = last
    ready.extend(sorted(stream, key=lambda e: e.version))
    if ready:
        yield ready


class SafeApply:
    """Applies batches through a projector: retries transient failures, and
    skips the rest of an audio whose events fail for another reason."""

    def __init__(
        self,
        apply: Apply,
        skipped: dict[str, str],
        *,
        transient: Callable[[BaseException], bool] = is_transient,
        attempts: int = RETRY_ATTEMPTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._apply = apply
        self.skipped = skipped
        self._transient = transient
        self._attempts = attempts
        self._sleep = sleep

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> int:
        """Apply `envelopes`; returns how many were not skipped."""
        streams: dict[str, list[EventEnvelope]] = defaultdict(list)
        for envelope in envelopes:
            audio_id = str(envelope.aggregate_id)
            if audio_id not in self.skipped:
                streams[audio_id].append(envelope)
        everything = [e for events in streams.values() for e in events]
        if not everything:
            return 0
        try:
            await self._retrying(everything)
            return len(everything)
        except Exception as exc:
            if isinstance(exc, RebuildError):
                raise
            logger.warning(
                "batch failed; applying one audio at a time",
                extra={"error": repr(exc)[:500]},
            )
        applied = 0
        for audio_id, events in streams.items():
            try:
                await self._retrying(events)
                applied += len(events)
            except Exception as exc:
                if isinstance(exc, RebuildError):
                    raise
                self.skip(audio_id, repr(exc))
        return applied

    def skip(self, audio_id: str, reason: str) -> None:
        """Leave `audio_id` where it is and skip its later events."""
        self.skipped.setdefault(audio_id, reason[:1000])
        logger.error(
            "audio skipped by the rebuild",
            extra={"audio_id": audio_id, "reason": reason[:500]},
        )

    async def _retrying(self, envelopes: Sequence[EventEnvelope]) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await self._apply(envelopes)
                return
            except Exception as exc:
                if not self._transient(exc):
                    raise
                if attempt == self._attempts:
                    raise RebuildError(
                        f"a backend kept failing ({exc!r}) after {attempt} attempts; "
                        "check that DynamoDB, OpenSearch and Kafka answer, then run "
                        "the rebuild again"
                    ) from exc
                delay = min(MAX_RETRY_DELAY_S, 0.2 * 2**attempt)
                logger.warning(
                    "transient failure; retrying",
                    extra={"error": repr(exc)[:500], "retry_in_s": delay},
                )
                await self._sleep(delay)


class TopicFollower:
    """Reads the events topic from the offsets noted at `start`, with no group.

    `read_committed`, like the live consumers: aborted relay transactions are
    never applied. Offsets are never committed.
    """

    def __init__(self, settings: NovaSettings, *, batch_size: int = BATCH_SIZE) -> None:
        self._settings = settings
        self._batch_size = batch_size
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # Records between the noted offsets and now may be needed; if the
            # topic's retention removed them, fail instead of skipping them.
            auto_offset_reset="none",
            client_id="nova-rebuild",
        )
        self._partitions: list[TopicPartition] = []
        self.start_offsets: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Note where each partition ends now; reading waits for `follow`."""
        topic = self._settings.events_topic
        partitions = await require_topic(self._settings)
        await self._consumer.start()
        self._partitions = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(self._partitions)
        self.start_offsets = await self._consumer.end_offsets(self._partitions)
        for tp, offset in self.start_offsets.items():
            self._consumer.seek(tp, offset)
        self._consumer.pause(*self._partitions)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def catch_up(self, apply: SafeApply, *, close_enough: int) -> int:
        """Apply records up to where the topic ends, again and again, until a
        round had at most `close_enough` records to apply. Returns the count.

        Each round aims at the end offsets noted when it begins, so it ends
        even while the relay keeps publishing.
        """
        total = 0
        while True:
            applied = await self._reach(await self._ends(), apply)
            total += applied
            if applied <= close_enough:
                return total

    async def follow_until(self, deadline: float, apply: SafeApply) -> int:
        """Apply records until the monotonic `deadline`, then up to where the
        topic ends at that moment. Returns the count."""
        total = 0
        while time.monotonic() < deadline:
            total += await self._poll(apply)
        return total + await self._reach(await self._ends(), apply)

    async def _reach(self, target: dict[TopicPartition, int], apply: SafeApply) -> int:
        total = 0
        report_at = time.monotonic() + PROGRESS_EVERY_S
        while True:
            behind = [
                tp
                for tp in self._partitions
                if await self._consumer.position(tp) < target[tp]
            ]
            if not behind:
                return total
            total += await self._poll(apply)
            if time.monotonic() >= report_at:
                report_at = time.monotonic() + PROGRESS_EVERY_S
                logger.info(
                    "following the topic",
                    extra={"applied": total, "partitions_behind": len(behind)},
                )

    async def _poll(self, apply: SafeApply) -> int:
        self._consumer.resume(*self._partitions)
        try:
            batches = await self._consumer.getmany(
                timeout_ms=POLL_MS, max_records=self._batch_size
            )
        except OffsetOutOfRangeError as exc:
            raise RebuildError(
                f"{self._settings.events_topic} no longer holds records the "
                f"rebuild still needs ({exc}): its retention removed them while "
                "the event store was replayed. Raise the topic's retention.ms "
                "above the rebuild's duration and run the rebuild again"
            ) from exc
        records = [r for batch in batches.values() for r in batch]
        if not records:
            return 0
        return await apply(self._decode(records, apply))

    async def _ends(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(
            self._partitions
        )
        return ends

    @staticmethod
    def _decode(records: Sequence[Any], apply: SafeApply) -> list[EventEnvelope]:
        envelopes: list[EventEnvelope] = []
        for record in records:
            try:
                envelopes.append(loads(record.value))
            except (ValidationError, ValueError, TypeError) as exc:
                key = record.key.decode(errors="replace") if record.key else "?"
                apply.skip(
                    key,
                    f"undecodable record {record.topic}/{record.partition}/"
                    f"{record.offset}: {exc}",
                )
        return envelopes


async def require_topic(settings: NovaSettings) -> list[int]:
    """The partitions of the events topic; raises `RebuildError` without it.

    Run before creating the new target, so a rebuild that cannot work leaves
    nothing behind.
    """
    topic = settings.events_topic
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for p in described.get("partitions", []))
    if described.get("error_code", 0) != 0 or not partitions:
        raise RebuildError(
            f"the topic {topic} does not exist at "
            f"{settings.kafka_bootstrap_servers}; run `nova-init` first"
        )
    return partitions


async def replay_and_switch(
    settings: NovaSettings,
    ddb: DynamoDBClient,
    report: RebuildReport,
    apply: Apply,
    switch: Switch,
    *,
    grace_s: float,
    batch_size: int = BATCH_SIZE,
    personal: PersonalData | None = None,
) -> RebuildReport:
    """Steps 1 to 5 of the module's docstring, into the target `apply` writes.

    With `personal`, every event is opened before `apply` sees it, whether it
    comes from the store or the topic: an erased user's fields come out
    erased, so a rebuild cannot bring them back.

    `switch` moves readers to the target; it is called once, after the target
    caught up with the topic. If anything fails before it, readers keep the
    old target and the new one is left for the operator to delete.
    """
    if personal is not None:
        apply = _opening(apply, personal)
    safe = SafeApply(apply, report.skipped)
    follower = TopicFollower(settings, batch_size=batch_size)
    try:
        await follower.start()
        logger.info("replaying the event store", extra={"target": report.target})
        async for batch in scan_streams(
            ddb, settings.event_store_table, batch_size=batch_size
        ):
            report.from_store += await safe(batch)
        logger.info(
            "event store replayed; following the topic",
            extra={"target": report.target, "events": report.from_store},
        )
        report.from_topic += await follower.catch_up(safe, close_enough=batch_size)
        await switch()
        report.switched = True
        logger.info(
            "switched; following the topic for the grace period",
            extra={"target": report.target, "grace_s": grace_s},
        )
        report.from_topic += await follower.follow_until(
            time.monotonic() + grace_s, safe
        )
    finally:
        await follower.stop()
    logger.info(
        "rebuild finished",
        extra={
            "target": report.target,
            "from_store": report.from_store,
            "from_topic": report.from_topic,
            "skipped": len(report.skipped),
        },
    )
    return report


def _opening(apply: Apply, personal: PersonalData) -> Apply:
    async def opened(envelopes: Sequence[EventEnvelope]) -> None:
        # A sealed part that does not open fails its audio alone (SafeApply
        # narrows a failing batch down and skips that audio).
        await apply(await personal.open_all(envelopes))

    return opened


def add_rebuild_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `rebuild [--grace-s S]` to a projector's subcommands (the value of
    `ArgumentParser.add_subparsers(dest="command")`), beside its others."""
    rebuild: argparse.ArgumentParser = commands.add_parser(
        "rebuild",
        help="replay the event store into a fresh target, then switch readers",
        description=(
            "Replay the whole event store into a new table or index, catch up "
            "with the topic, switch readers to it, and print its name. The old "
            "one is left in place. Writes nothing to Kafka."
        ),
    )
    rebuild.add_argument(
        "--grace-s",
        type=float,
        default=None,
        help="how long to keep following the topic after the switch",
    )
    return rebuild


def describe(
    report: RebuildReport, kind: str, delete_hint: Callable[[str], str]
) -> str:
    """The command's human output: the new target, and what to do next."""
    lines = [
        report.target,
        f"rebuilt {kind} {report.target}: {report.from_store} events from the "
        f"event store, {report.from_topic} from the topic; readers now use it.",
    ]
    for old in report.previous:
        lines.append(
            f"the previous {kind} {old} is no longer used; once you no "
            f"longer need it: {delete_hint(old)}"
        )
    if report.skipped:
        lines.append(
            f"{len(report.skipped)} audio(s) could not be projected and stop where "
            "their first failing event is (as the live consumer parks them):"
        )
        lines.extend(f"  {audio}: {reason}" for audio, reason in report.skipped.items())
    return "\n".join(lines) + "\n"
