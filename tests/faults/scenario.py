"""One fault run: services, load, kills, then the invariants.

1. Start command-api, the relay, both projectors and the integration service
   on the run's own resources, a webhook receiver on loopback, and one
   webhook subscription per user.
2. Send load (`load.py`) while the fault script SIGKILLs one target per cycle
   (a service, or the broker), leaves it down a moment, starts it again and
   waits until every service is healthy. Cycles run through the targets in a
   shuffled order, round after round, within a time bound.
3. Stop the load once the faults stop; the commands under way finish.
4. Measure how long until the outbox and every consumer group's lag are zero,
   counted from the last command's answer (at most `drain_s`).
5. Check every invariant of `invariants.py`, rebuilding both projections
   from the store to compare them with the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from opensearchpy import AsyncOpenSearch

from nova_events import EventEnvelope
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.event_items import from_item
from nova_platform.projections import read_pointer
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.entrypoints.rebuild import rebuild_read_model
from nova_projector_search.entrypoints.rebuild import (
    aliased_indices,
    rebuild_search_index,
)

from ..kafka_reader import read_topic
from ..waiting import eventually
from ..webhook_receiver import WebhookReceiver
from . import invariants
from .broker import Broker
from .drain import Backlog, TopicTail, look
from .fleet import Fleet
from .load import LoadGenerator

SERVICES = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "integration",
)
BROKER = "kafka"
POINTER_TTL_S = 1.0
MAX_DOCUMENTS = 10_000


@dataclass(frozen=True)
class FaultPlan:
    """What to kill, how often, and how much load to send meanwhile."""

    cycles: int = 30
    targets: tuple[str, ...] = (*SERVICES, BROKER)
    down_s: tuple[float, float] = (0.2, 1.5)
    """How long a killed target stays down, drawn per cycle."""
    between_s: tuple[float, float] = (1.0, 3.0)
    """How long the load runs between one restart and the next kill."""
    shuffle: bool = True
    """Each round kills the targets in a shuffled order, else in `targets`'."""
    time_bound_s: float = 1500.0
    """The faults stop after this long even if cycles remain."""
    rate: float = 1.0
    """Audio histories the load starts per second."""
    users: int = 3
    drain_s: float = 60.0
    seed: int = 1


@dataclass
class FaultReport:
    """What the run did and which invariants it broke."""

    plan: FaultPlan
    cycles: list[str] = field(default_factory=list)
    """Target killed per cycle, in order."""
    violations: dict[str, list[str]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())

    def describe(self) -> str:
        lines = [f"{len(self.cycles)} kill cycles: {', '.join(self.cycles)}"]
        lines += [f"  {name}: {value}" for name, value in self.facts.items()]
        for name, problems in self.violations.items():
            lines.append(f"{'FAIL' if problems else 'ok  '} {name}")
            lines += [f"       {p}" for p in problems]
        return "\n".join(lines)


def service_env(
    backends_env: dict[str, str], settings: NovaSettings, jwt_secret: str
) -> dict[str, str]:
    """What the services read: this run's resources and quick retries.

    Polling intervals stay at their defaults: on the emulator every poll of
    the change stream or of due deliveries costs a share of one busy core.
    """
    return {
        **backends_env,
        "NOVA_RESOURCE_SUFFIX": settings.resource_suffix,
        "NOVA_JWT_SECRET": jwt_secret,
        "NOVA_RELAY_LEASE_TTL_S": "2",
        "NOVA_PROJECTION_POINTER_TTL_S": str(POINTER_TTL_S),
        "NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is on loopback
        "NOVA_WEBHOOK_BASE_DELAY_S": "0.2",
        "NOVA_WEBHOOK_MAX_DELAY_S": "1",
        "NOVA_WEBHOOK_TIMEOUT_S": "2",
        "NOVA_SHUTDOWN_GRACE_S": "2",
    }


def run_settings(base: NovaSettings) -> NovaSettings:
    return base.model_copy(update={"projection_pointer_ttl_s": POINTER_TTL_S})


async def run_faults(
    settings: NovaSettings,
    backends_env: dict[str, str],
    jwt_secret: str,
    plan: FaultPlan,
    logs: Path,
    broker: Broker | None,
    say: Callable[[str], None] = lambda _: None,
) -> FaultReport:
    """Run `plan` against fresh services on `settings`' resources.

    `broker` is None when the broker cannot be killed; then `kafka` must not
    be among the targets. The broker runs again when this returns or raises.
    """
    if broker is None and BROKER in plan.targets:
        raise ValueError("the plan kills the broker but no broker control was given")
    settings = run_settings(settings)
    await ensure_all(settings)
    report = FaultReport(plan)
    fleet = Fleet(SERVICES, service_env(backends_env, settings, jwt_secret), logs)
    async with AsyncExitStack() as stack:
        if broker is not None:
            stack.callback(broker.ensure_running)
        receiver = WebhookReceiver()
        await receiver.start()
        stack.push_async_callback(receiver.stop)
        stack.callback(fleet.stop)
        await asyncio.to_thread(fleet.start)
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        users = [uuid4() for _ in range(plan.users)]
        endpoints = await subscribe(
            fleet.url("command-api"), users, receiver, jwt_secret
        )
        tail = TopicTail(settings)
        await tail.start()
        stack.push_async_callback(tail.stop)
        load = LoadGenerator(
            fleet.url("command-api"), users, jwt_secret, rate=plan.rate, seed=plan.seed
        )
        stop_load = asyncio.Event()
        loading = asyncio.create_task(load.run(stop_load))
        try:
            faults_started = time.monotonic()
            await fault_script(plan, fleet, broker, report, say)
            faults_ended = time.monotonic()
        finally:
            stop_load.set()
            await loading
        load_ended = time.monotonic()
        say(f"faults ended after {faults_ended - faults_started:.0f}s; load ended")

        first = await look(settings, ddb, tail, fleet.url("relay"))
        report.facts["backlog when the load ended"] = first.describe()
        backlog = await drained(settings, ddb, tail, fleet.url("relay"), plan.drain_s)
        drained_at = time.monotonic()
        last_answer = max(load_ended, faults_ended)
        report.facts["drained"] = (
            f"{drained_at - last_answer:.1f}s after the last command ended, "
            f"{drained_at - faults_ended:.1f}s after the faults stopped "
            f"({backlog.describe()})"
        )
        drain_problems = []
        if not backlog.zero:
            drain_problems.append(
                f"not caught up {plan.drain_s:.0f}s after the last command: "
                + backlog.describe()
            )
        report.violations["outbox and consumer lag return to zero"] = drain_problems

        events = await stored_events(ddb, settings.event_store_table)
        await webhooks_arrived(receiver, endpoints, events)
        await check(report, settings, ddb, load, events, receiver, endpoints)
        report.facts.update(
            {
                "services that exited by themselves": fleet.exited_by_themselves,
                "services restarted for failing /healthz": fleet.restarted_unhealthy,
            }
        )
    return report


async def subscribe(
    command_api: str, users: list[UUID], receiver: WebhookReceiver, jwt_secret: str
) -> dict[UUID, str]:
    """One `*` subscription per user at its own endpoint of the receiver."""
    endpoints: dict[UUID, str] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for number, user in enumerate(users):
            name = f"user{number}"
            url = receiver.endpoint(name, "")
            answer = await http.post(
                f"{command_api}/commands/webhooks",
                json={"url": url, "event_types": ["*"]},
                headers={
                    "Authorization": f"Bearer {issue(user, 'audio:write', jwt_secret)}"
                },
            )
            if answer.status_code != 201:
                raise RuntimeError(f"subscribing failed: {answer.text}")
            receiver.endpoints[name].secret = answer.json()["secret"]
            endpoints[user] = name
    return endpoints


async def fault_script(
    plan: FaultPlan,
    fleet: Fleet,
    broker: Broker | None,
    report: FaultReport,
    say: Callable[[str], None],
) -> None:
    """Kill and restart `plan.cycles` targets, one at a time, within its bound."""
    chance = random.Random(plan.seed)
    order: list[str] = []
    deadline = time.monotonic() + plan.time_bound_s
    while len(report.cycles) < plan.cycles and time.monotonic() < deadline:
        if not order:
            order = list(plan.targets)
            if plan.shuffle:
                chance.shuffle(order)
        target = order.pop(0)
        await asyncio.sleep(chance.uniform(*plan.between_s))
        started = time.monotonic()
        if target == BROKER:
            assert broker is not None
            await asyncio.to_thread(broker.kill)
            await asyncio.sleep(chance.uniform(*plan.down_s))
            await asyncio.to_thread(broker.start)
        else:
            await asyncio.to_thread(fleet.kill, target)
            await asyncio.sleep(chance.uniform(*plan.down_s))
            await asyncio.to_thread(fleet.restart, target)
        await asyncio.to_thread(fleet.settle)
        report.cycles.append(target)
        say(
            f"cycle {len(report.cycles)}/{plan.cycles}: killed {target}, back "
            f"and all healthy after {time.monotonic() - started:.1f}s"
        )


async def drained(
    settings: NovaSettings, ddb: Any, tail: TopicTail, relay_url: str, within_s: float
) -> Backlog:
    """The first backlog found zero, or the last one looked at by `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        backlog = await look(settings, ddb, tail, relay_url)
        if backlog.zero or time.monotonic() > deadline:
            return backlog
        await asyncio.sleep(0.5)


async def stored_events(ddb: Any, table: str) -> list[EventEnvelope]:
    events = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await ddb.scan(**request)
        events += [from_item(item) for item in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return events
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def webhooks_arrived(
    receiver: WebhookReceiver, endpoints: dict[UUID, str], events: list[EventEnvelope]
) -> None:
    """Wait (a while) until the receiver accepted as many events as are stored;
    what is still missing then is for the check to name."""
    wanted = len(events)

    async def arrived() -> bool | None:
        got = sum(len(receiver.endpoints[n].accepted) for n in endpoints.values())
        return True if got >= wanted else None

    with contextlib.suppress(AssertionError):
        await eventually(arrived, timeout=90, interval=0.5, what="every webhook")


async def check(
    report: FaultReport,
    settings: NovaSettings,
    ddb: Any,
    load: LoadGenerator,
    events: list[EventEnvelope],
    receiver: WebhookReceiver,
    endpoints: dict[UUID, str],
) -> None:
    commands = load.commands
    acknowledged = [c for c in commands if c.acknowledged]
    report.facts.update(
        {
            "commands": f"{len(commands)} sent, {len(acknowledged)} acknowledged, "
            f"{sum(c.rejected is not None for c in commands)} refused",
            "events stored": len(events),
            "attempts": sum(c.attempts for c in commands),
            "load": load.stats,
        }
    )
    report.facts["never answered"] = [
        f"{c.kind} {c.key} after {c.attempts} attempts: {c.last_failure}"
        for c in commands
        if not c.acknowledged and c.rejected is None
    ][: invariants.SHOWN]
    v = report.violations
    v["acknowledged commands stored exactly once, nothing half written"] = (
        invariants.stored_exactly_once(commands, events)
    )
    v["commands were not refused"] = [
        f"{c.kind} {c.key}: {c.rejected.status} {c.rejected.body}"
        for c in commands
        if c.rejected is not None
    ][: invariants.SHOWN]
    objects = await bucket_keys(settings)
    v["retries with one key had one effect"] = invariants.one_effect_per_key(
        commands, events, objects
    )
    records = await read_topic(settings, until=len(events), timeout=60)
    problems, duplicates = invariants.published_in_order(events, records)
    report.facts["duplicates in Kafka"] = duplicates
    v["every stored event reached Kafka, in order per audio"] = problems
    v["webhooks arrived, in order per audio"] = invariants.webhooks_in_order(
        receiver, endpoints, events
    )
    v["nothing parked"] = await parked(ddb, settings)
    v["both projections equal a clean rebuild"] = await projections_vs_rebuild(
        settings, ddb
    )
    report.facts["webhook duplicates absorbed by the receiver"] = sum(
        sum(receiver.endpoints[n].duplicates.values()) for n in endpoints.values()
    )


async def bucket_keys(settings: NovaSettings) -> set[str]:
    keys: set[str] = set()
    async with session().client("s3", **client_kwargs(settings)) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=settings.audio_bucket):
            keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def parked(ddb: Any, settings: NovaSettings) -> list[str]:
    page = await ddb.scan(TableName=settings.parking_table, ConsistentRead=True)
    return [
        f"{item['pk']['S']} parked {item['sk']['S']}" for item in page.get("Items", [])
    ][: invariants.SHOWN]


@asynccontextmanager
async def opensearch(settings: NovaSettings) -> AsyncIterator[AsyncOpenSearch]:
    client = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:
        yield client
    finally:
        await client.close()


async def projections_vs_rebuild(settings: NovaSettings, ddb: Any) -> list[str]:
    """Rebuild both projections from the store; the live ones must equal them."""
    async with opensearch(settings) as search:
        live_table = await read_pointer(ddb, settings) or settings.read_model_table
        [live_index] = await aliased_indices(search, settings.search_alias)
        table_report, index_report = await asyncio.gather(
            rebuild_read_model(settings), rebuild_search_index(settings)
        )
        problems = [
            f"the rebuild skipped {what}: {skipped}"
            for what, skipped in (
                ("items", table_report.skipped),
                ("documents", index_report.skipped),
            )
            if skipped
        ]
        problems += invariants.equal_projections(
            "read model item",
            await scan_table(ddb, live_table),
            await scan_table(ddb, table_report.target),
        )
        problems += invariants.equal_projections(
            "search document",
            await all_documents(search, live_index),
            await all_documents(search, index_report.target),
        )
    return problems[: invariants.SHOWN + 1]


async def scan_table(ddb: Any, table: str) -> dict[str, Any]:
    items: dict[str, Any] = {}
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await ddb.scan(**request)
        items.update({item["pk"]["S"]: item for item in page.get("Items", [])})
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def all_documents(search: AsyncOpenSearch, index: str) -> dict[str, Any]:
    await search.indices.refresh(index=index)
    found = await search.search(
        index=index,
        body={"query": {"match_all": {}}, "size": MAX_DOCUMENTS, "version": True},
    )
    hits = found["hits"]["hits"]
    if len(hits) >= MAX_DOCUMENTS:
        raise RuntimeError(f"{index} holds {MAX_DOCUMENTS}+ documents; send less load")
    return {h["_id"]: (h["_source"], h["_version"]) for h in hits}
