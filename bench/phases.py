"""The phases of a run; each measures baseline and system alternately.

Every round of a phase runs the raw baseline (A) and then Nova (B) on the
same kind of data, so slow and fast moments of a noisy machine hit both; a
figure is the median of the rounds' B/A ratios with their minimum and maximum.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aiohttp
import grpc
import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opensearchpy import AsyncOpenSearch

from nova_events import EventEnvelope
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.personal import open_personal_data
from nova_platform.resources import (
    ensure_table,
    event_store_table,
    read_model_table,
    search_index_body,
)
from nova_platform.settings import NovaSettings
from nova_query_api.adapters.opensearch_search import search_body
from nova_query_api.application.queries import DEFAULT_PAGE_SIZE
from nova_query_api.grpc_gen import query_pb2, query_pb2_grpc

from . import data, domain, raw
from .empty import GRPC_METHOD
from .environment import index_settings
from .harness import Harness, free_port, metric, scrape
from .load import Run, closed_loop, open_loop
from .results import Figure, Results, Scale
from .stats import Spread, meets, percentile, rate_from_progress, ratios

if TYPE_CHECKING:
    from processes import RunningService
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client

logger = logging.getLogger(__name__)

SEED = 20260101
USER = UUID("5e1f0b6a-3c1d-4f7e-9a2b-000000000b01")
PIPELINE = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "query-api",
)
LAG_POLL_S = 0.02
SEARCH_POLL_S = 0.05
LIGHT_RATE = 20.0
"""Commands/s of the second lag run: the pipeline's own delays, on an emulator
that is not busy. At half of the command peak the pipeline as a whole asks
moto for more than it serves (creates, projector writes, relay reads)."""
POLL_IDLE_RATIO = 4.0
"""A lag poller rests at least this many times as long as its last poll took:
polling up to a hundred pending audios a time, every 20 ms, took most of what
the one-request-at-a-time emulator serves and made the lag it measured grow."""
DRAIN_TIMEOUT_S = 120.0
CATCHUP_POLL_S = 0.02


def ratio_figure(
    name: str,
    goal: float,
    systems: list[float],
    baselines: list[float],
    note: str = "",
    *,
    at_least: bool = True,
) -> Figure:
    spread = Spread.of(ratios(systems, baselines))
    sign = ">=" if at_least else "<="
    return Figure(
        name,
        f"{sign} {goal:g} x",
        spread,
        "x",
        meets(spread.median, goal, at_least=at_least),
        note,
    )


def median(runs: dict[str, list[float]], prefix: str) -> float:
    """The median throughput of the run whose name starts with `prefix`."""
    for name, values in runs.items():
        if name.startswith(prefix):
            return statistics.median(values)
    return math.nan


def flat(lists: list[list[str]]) -> list[str]:
    return [x for part in lists for x in part]


def _check(run: Run, what: str, results: Results) -> None:
    if run.errors:
        results.notes.append(
            f"{what}: {run.errors} of {run.errors + run.count} calls failed, "
            f"first: {run.first_error}"
        )


class Bench:
    """One run: the harness, the scale, what has been measured so far."""

    def __init__(self, harness: Harness, scale: Scale, results: Results) -> None:
        self.h = harness
        self.scale = scale
        self.results = results
        self.token = issue(USER, "audio:read audio:write", harness.jwt_secret, 4 * 3600)
        self.auth = {"Authorization": f"Bearer {self.token}"}
        # aiohttp, not httpx: with 16 calls in flight httpx's pool spent ~8
        # times aiohttp's CPU per request (333/s against 2600/s on an empty
        # route), so the load generator, not Nova, set the REST figures.
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            # Idle connections closed before uvicorn's 5 s keep-alive does:
            # a request sent on one the server is closing fails (seen once,
            # after the idle wait between the two lag runs).
            connector=aiohttp.TCPConnector(
                limit=4 * scale.concurrency, keepalive_timeout=2.0
            ),
        )
        self._seed = SEED
        self.command_peak = math.nan
        self.sealed_cost: list[float] = []
        self.catchup_sealed_cost: list[float] = []

    def seed(self) -> int:
        """A fresh fixed seed: the same sequence of seeds in every run."""
        self._seed += 1
        return self._seed

    async def close(self) -> None:
        await self.http.close()

    # === In process ===

    async def domain(self) -> None:
        res = self.results
        lives = domain.lives(self.scale.domain_lives, self.seed())
        # Untimed: imports, caches and the first keys.
        await domain.time_nova(lives[:50])
        await domain.time_nova(lives[:50], sealed=True)
        domain.time_library(lives[:50])
        domain.time_library(lives[:50], encrypted=True)
        runs: dict[str, list[float]] = {}
        for _ in range(self.scale.pairs):
            # A B A B: the library, then Nova, plain and then both encrypting.
            for encrypted in (False, True):
                library = domain.time_library(lives, encrypted=encrypted)
                nova = await domain.time_nova(lives, sealed=encrypted)
                suffix = " encrypted" if encrypted else ""
                runs.setdefault(f"library{suffix}", []).append(library)
                runs.setdefault("nova sealed" if encrypted else "nova", []).append(nova)
        for name, shown in (
            ("library", "eventsourcing library, audio lives"),
            ("nova", "Nova domain + item mapper, audio lives"),
            ("library encrypted", "eventsourcing library + AES cipher, audio lives"),
            ("nova sealed", "Nova sealing personal fields, audio lives"),
        ):
            for value in runs[name]:
                res.add_run(shown, value)
        shape = (
            "create, 2 loads, 4 events, 3 saves, final load; both serialise; "
            f"{domain.AUDIOS_PER_USER} audios per user"
        )
        res.figures += [
            ratio_figure(
                "in-process domain overhead vs `eventsourcing` (audio lives/s)",
                1.0,
                runs["nova"],
                runs["library"],
                shape,
            ),
            ratio_figure(
                "the same, both encrypting",
                1.0,
                runs["nova sealed"],
                runs["library encrypted"],
                "Nova: per-user AES-GCM keys on personal fields; library: one "
                "AES-GCM key over each whole stored event",
            ),
        ]
        self.sealed_cost = ratios(runs["nova sealed"], runs["nova"])

    # === Commands: throughput, growth, latency ===

    def _create(self, api: str) -> Callable[[str], Awaitable[object]]:
        url = f"{api}/commands/audio"

        async def create(key: str) -> str:
            async with self.http.post(
                url, json={"s3_key": key, "title": "Bench meeting"}, headers=self.auth
            ) as response:
                body = await response.read()
                if response.status != 201:
                    raise RuntimeError(f"{response.status}: {body[:200]!r}")
            audio_id: str = orjson.loads(body)["audio_id"]
            return audio_id

        return create

    @staticmethod
    def _putter(
        ddb: DynamoDBClient, table: str
    ) -> Callable[[raw.Item], Awaitable[object]]:
        async def put(item: raw.Item) -> None:
            await raw.raw_put(ddb, table, item)

        return put

    @staticmethod
    def _head_putter(
        s3: S3Client, bucket: str, ddb: DynamoDBClient, table: str
    ) -> Callable[[tuple[str, raw.Item]], Awaitable[object]]:
        async def head_put(payload: tuple[str, raw.Item]) -> None:
            key, item = payload
            await raw.raw_head(s3, bucket, key)
            await raw.raw_put(ddb, table, item)

        return head_put

    async def _fresh_event_table(self, ddb: DynamoDBClient, tag: str) -> str:
        spec = event_store_table(self.h.settings(tag))
        await ensure_table(ddb, spec)
        return str(spec["TableName"])

    def _raw_items(self, count: int) -> list[raw.Item]:
        return list(data.event_items(count, self.seed(), USER))

    async def commands(self) -> None:
        s, res, mon = self.scale, self.results, self.h.monitor
        mon.phase("commands: preload")
        small = await self.h.resources("c")
        large = await self.h.resources("g")
        n, pairs, sizes = s.command_requests, s.pairs, s.store_sizes
        small_keys = iter(f"audio/{USER}/c-{i:07d}.wav" for i in range(10**7))
        large_keys = iter(f"audio/{USER}/g-{i:07d}.wav" for i in range(10**7))

        def take(keys: Any, count: int) -> list[str]:
            return [next(keys) for _ in range(count)]

        aws = session()
        async with (
            aws.client("dynamodb", **client_kwargs(small)) as ddb,
            aws.client("s3", **client_kwargs(small)) as s3,
        ):
            warm_small, warm_large = take(small_keys, 20), take(large_keys, 20)
            small_runs = [take(small_keys, n) for _ in range(pairs)]
            large_runs = [take(large_keys, n) for _ in range(pairs)]
            points = [take(large_keys, s.growth_requests) for _ in sizes]
            await data.put_objects(
                s3, small.audio_bucket, warm_small + flat(small_runs)
            )
            await data.put_objects(
                s3,
                large.audio_bucket,
                warm_large + flat(large_runs) + flat(points),
            )
            await data.batch_load(
                ddb, small.event_store_table, data.event_items(sizes[0], 1, USER)
            )
            api_small = self.h.start(["command-api"], small, label="@small")
            api_large = self.h.start(["command-api"], large, label="@large")
            create_small = self._create(api_small["command-api"].url)
            create_large = self._create(api_large["command-api"].url)
            # Untimed: connections, token verification and pools warm up.
            await closed_loop(create_small, warm_small, s.concurrency)
            await closed_loop(create_large, warm_large, s.concurrency)

            growth: list[dict[str, float]] = []
            loaded = 0
            for size, keys in zip(sizes, points, strict=True):
                mon.phase(f"growth: load to {size} events")
                started = time.monotonic()
                loaded += await data.batch_load(
                    ddb,
                    large.event_store_table,
                    data.event_items(size - loaded, 1000 + size, USER),
                )
                res.notes.append(
                    f"growth store loaded to {size} events by BatchWriteItem in "
                    f"{time.monotonic() - started:.0f} s (untimed)"
                )
                mon.phase(f"growth: measure at {size} events")
                system = await closed_loop(create_large, keys, s.concurrency)
                _check(system, f"create at {size} events", res)
                baseline = await closed_loop(
                    self._putter(ddb, large.event_store_table),
                    self._raw_items(s.growth_requests),
                    s.concurrency,
                )
                growth.append(
                    {
                        "events": float(size),
                        "system": system.throughput,
                        "raw_put": baseline.throughput,
                    }
                )
            res.series["growth"] = growth

            mon.phase("commands: throughput rounds")
            raw_tp, small_tp, large_tp, io_tp = [], [], [], []
            for round_ in range(pairs):
                table = await self._fresh_event_table(ddb, f"r{round_}")
                baseline = await closed_loop(
                    self._putter(ddb, table), self._raw_items(n), s.concurrency
                )
                both = await closed_loop(
                    self._head_putter(s3, small.audio_bucket, ddb, table),
                    list(zip(small_runs[round_], self._raw_items(n), strict=True)),
                    s.concurrency,
                )
                system = await closed_loop(
                    create_small, small_runs[round_], s.concurrency
                )
                grown = await closed_loop(
                    create_large, large_runs[round_], s.concurrency
                )
                for run, what in ((system, "create"), (grown, "create (large)")):
                    _check(run, what, res)
                raw_tp.append(baseline.throughput)
                small_tp.append(system.throughput)
                large_tp.append(grown.throughput)
                res.add_run("raw_put (closed loop)", baseline.throughput)
                res.add_run("raw HEAD + PutItem (a create's I/O)", both.throughput)
                io_tp.append(both.throughput)
                res.add_run(f"REST create, {sizes[0]} events stored", system.throughput)
                res.add_run(f"REST create, {sizes[-1]} events stored", grown.throughput)
            res.figures.append(
                ratio_figure(
                    "command throughput (REST create, single-event append)",
                    0.5,
                    small_tp,
                    raw_tp,
                    f"{statistics.median(small_tp):.0f}/s vs raw_put "
                    f"{statistics.median(raw_tp):.0f}/s, {s.concurrency} in flight; "
                    "a create's own I/O raw (S3 HEAD, then the PutItem): "
                    f"{statistics.median(io_tp):.0f}/s",
                )
            )
            res.figures.append(
                ratio_figure(
                    f"growth: throughput with {sizes[-1]:,} events stored vs "
                    f"{sizes[0]:,}",
                    0.8,
                    large_tp,
                    small_tp,
                    "store preloaded by BatchWriteItem (untimed)",
                )
            )
            self.h.stop(api_large.values())
            await ddb.delete_table(TableName=large.event_store_table)

            self.command_peak = statistics.median(small_tp)
            rate = self.command_peak / 2
            count = max(1, int(rate * s.latency_seconds))
            mon.phase("commands: latency preload")
            latency_runs = [take(small_keys, count) for _ in range(pairs)]
            await data.put_objects(s3, small.audio_bucket, flat(latency_runs))
            mon.phase("commands: open-loop latency")
            raw_p99, sys_p99 = [], []
            raw_all: list[float] = []
            sys_all: list[float] = []
            for round_ in range(pairs):
                table = await self._fresh_event_table(ddb, f"l{round_}")
                baseline = await open_loop(
                    self._putter(ddb, table), self._raw_items(count), rate
                )
                system = await open_loop(create_small, latency_runs[round_], rate)
                _check(system, "create (open loop)", res)
                raw_p99.append(baseline.p(99))
                sys_p99.append(system.p(99))
                raw_all += baseline.latencies_s
                sys_all += system.latencies_s
            self.h.stop(api_small.values())
        res.series["latency"] = {
            "rate_per_s": rate,
            "raw_put": raw_all,
            "REST create": sys_all,
        }
        bound = 2 * statistics.median(raw_p99) + 0.005
        spread = Spread.of(ratios(sys_p99, raw_p99))
        res.figures.append(
            Figure(
                "command latency p99 at half of peak, open loop",
                "<= 2 x raw_put p99 + 5 ms",
                spread,
                "x",
                statistics.median(sys_p99) <= bound,
                f"p99 {statistics.median(sys_p99) * 1000:.1f} ms vs raw_put "
                f"{statistics.median(raw_p99) * 1000:.1f} ms (bound "
                f"{bound * 1000:.1f} ms) at {rate:.0f}/s; p50 "
                f"{percentile(sys_all, 50) * 1000:.1f} vs "
                f"{percentile(raw_all, 50) * 1000:.1f} ms",
            )
        )

    # === Pipeline: lag, queries, search ===

    async def pipeline(self) -> None:
        s, res, mon = self.scale, self.results, self.h.monitor
        rate = self.command_peak / 2 if math.isfinite(self.command_peak) else 20.0
        mon.phase("pipeline: preload")
        p = await self.h.resources("p")
        count = max(10, int(rate * s.lag_seconds))
        light = max(10, int(LIGHT_RATE * s.lag_seconds / 2))
        warm = 20
        keys = [f"audio/{USER}/p-{i:07d}.wav" for i in range(warm + count + light)]
        aws = session()
        async with (
            aws.client("dynamodb", **client_kwargs(p)) as ddb,
            aws.client("s3", **client_kwargs(p)) as s3,
        ):
            await data.put_objects(s3, p.audio_bucket, keys)
            running = self.h.start(PIPELINE, p)
            search = AsyncOpenSearch(hosts=[p.opensearch_url])
            try:
                res.settings.update(await index_settings(search, p.search_alias))
                create = self._create(running["command-api"].url)
                ids = await self._lag(ddb, search, p, create, keys[:warm], rate, 0)
                mon.phase("pipeline: lag (open loop, every service running)")
                ids += await self._lag(
                    ddb, search, p, create, keys[warm : warm + count], rate, 1
                )
                mon.phase(f"pipeline: lag at {LIGHT_RATE:.0f}/s")
                ids += await self._lag(
                    ddb, search, p, create, keys[warm + count :], LIGHT_RATE, 2
                )
                self.h.stop(running[n] for n in PIPELINE if n != "query-api")
                mon.phase("pipeline: queries")
                await self._queries(ddb, search, p, running["query-api"], ids)
            finally:
                await search.close()
                self.h.stop(running.values())

    async def _lag(
        self,
        ddb: DynamoDBClient,
        search: AsyncOpenSearch,
        p: NovaSettings,
        create: Callable[[str], Awaitable[object]],
        keys: list[str],
        rate: float,
        record: int,
    ) -> list[str]:
        """Send `keys` open loop at `rate`; poll the read model and the index
        for each acknowledged audio. `record` 0 is the untimed warm-up, 1 the
        run at the goals' rate, 2 the run at `LIGHT_RATE`."""
        acked: dict[str, float] = {}
        acked_wall: dict[str, float] = {}
        visible: dict[str, float] = {}
        searchable: dict[str, float] = {}
        sending = True
        intervals: dict[str, list[float]] = {"read_model": [], "search": []}

        async def rest(poller: str, asked: float, least_s: float) -> None:
            took = time.perf_counter() - asked
            pause = max(least_s, POLL_IDLE_RATIO * took)
            intervals[poller].append(took + pause)
            await asyncio.sleep(pause)

        async def send(key: str) -> None:
            audio_id = await create(key)
            acked[str(audio_id)] = time.perf_counter()
            acked_wall[str(audio_id)] = time.time()

        async def poll_read_model() -> None:
            table = p.read_model_table
            while sending or len(visible) < len(acked):
                pending = [a for a in acked if a not in visible][:100]
                asked = time.perf_counter()
                if pending:
                    found = await ddb.batch_get_item(
                        RequestItems={
                            table: {
                                "Keys": [
                                    {"pk": {"S": f"AUDIO#{a}"}, "sk": {"S": "METADATA"}}
                                    for a in pending
                                ],
                                "ProjectionExpression": "pk",
                            }
                        }
                    )
                    # Seen somewhere between asking and the answer: the middle.
                    seen = (asked + time.perf_counter()) / 2
                    for item in found.get("Responses", {}).get(table, []):
                        visible.setdefault(item["pk"]["S"].removeprefix("AUDIO#"), seen)
                await rest("read_model", asked, LAG_POLL_S)

        async def poll_index() -> None:
            while sending or len(searchable) < len(acked):
                pending = [a for a in acked if a not in searchable][:500]
                asked = time.perf_counter()
                if pending:
                    found = await search.search(
                        index=p.search_alias,
                        body={
                            "size": len(pending),
                            "_source": False,
                            "query": {"ids": {"values": pending}},
                        },
                    )
                    seen = (asked + time.perf_counter()) / 2
                    for hit in found["hits"]["hits"]:
                        searchable.setdefault(hit["_id"], seen)
                await rest("search", asked, SEARCH_POLL_S)

        pollers = asyncio.gather(poll_read_model(), poll_index())
        start = time.perf_counter()
        try:
            run = await open_loop(send, keys, rate)
        finally:
            sending = False
        try:
            await asyncio.wait_for(pollers, DRAIN_TIMEOUT_S)
        except TimeoutError:
            self.results.notes.append(
                f"lag: {len(acked) - len(visible)} audios never reached the read "
                f"model and {len(acked) - len(searchable)} the index within "
                f"{DRAIN_TIMEOUT_S:.0f} s"
            )
        _check(run, "create (lag run)", self.results)
        if record:
            label = "" if record == 1 else f" at {rate:.0f}/s (light load)"
            self._lag_figures(acked, visible, searchable, start, intervals, label)
            try:
                produced = await raw.record_times(
                    p.kafka_bootstrap_servers, p.events_topic
                )
            except Exception as exc:  # noqa: BLE001 - only splits the lag
                self.results.notes.append(f"lag split unknown: {exc!r}")
                return list(acked)
            relay = [produced[a] - acked_wall[a] for a in acked_wall if a in produced]
            consumer = [
                visible[a] - acked[a] - (produced[a] - acked_wall[a])
                for a in acked
                if a in produced and a in visible
            ]
            self.results.notes.append(
                f"lag to the read model{label}, split at the Kafka record's timestamp "
                f"(when the relay sent it): ack -> sent p50 "
                f"{percentile(relay, 50) * 1000:.0f} ms, p99 "
                f"{percentile(relay, 99) * 1000:.0f} ms; sent -> visible p50 "
                f"{percentile(consumer, 50) * 1000:.0f} ms, p99 "
                f"{percentile(consumer, 99) * 1000:.0f} ms (transaction commit, "
                "fetch, projector, PutItem)"
            )
        return list(acked)

    def _lag_figures(
        self,
        acked: dict[str, float],
        visible: dict[str, float],
        searchable: dict[str, float],
        start: float,
        intervals: dict[str, list[float]],
        label: str,
    ) -> None:
        """The lag figures, named with `label`; the run without one is plotted."""
        res, pairs = self.results, self.scale.pairs
        ordered = sorted(acked.items(), key=lambda kv: kv[1])
        lags = {
            "read_model_s": [
                (at - start, visible.get(a, math.nan) - at) for a, at in ordered
            ],
            "search_s": [
                (at - start, searchable.get(a, math.nan) - at) for a, at in ordered
            ],
        }
        if not label:
            res.series["lag"] = [
                {"acked_s": t, "read_model_s": rm, "search_s": os_}
                for (t, rm), (_, os_) in zip(
                    lags["read_model_s"], lags["search_s"], strict=True
                )
            ]
        span = max((t for t, _ in lags["read_model_s"]), default=0.0) or 1.0

        def windows(field: str, q: float) -> list[float]:
            found = []
            for w in range(pairs):
                low, high = span * w / pairs, span * (w + 1) / pairs
                values = [
                    lag
                    for t, lag in lags[field]
                    if low <= t <= high and not math.isnan(lag)
                ]
                found.append(percentile(values, q) * 1000)
            return found

        refresh_ms = float(res.settings.get("search_refresh_interval_ms", 1000))
        for name, field, q, goal, poll in (
            (
                "lag command ack -> read model, p50",
                "read_model_s",
                50,
                50.0,
                "read_model",
            ),
            (
                "lag command ack -> read model, p99",
                "read_model_s",
                99,
                250.0,
                "read_model",
            ),
            (
                "lag command ack -> searchable, p99",
                "search_s",
                99,
                refresh_ms + 250,
                "search",
            ),
        ):
            spread = Spread.of(windows(field, q))
            every = [lag for _, lag in lags[field] if not math.isnan(lag)]
            whole = percentile(every, q) * 1000
            res.figures.append(
                Figure(
                    f"{name}{label}",
                    f"<= {goal:.0f} ms",
                    spread,
                    "ms",
                    meets(whole, goal, at_least=False),
                    f"whole run {whole:.0f} ms over {len(every)} audios; "
                    f"[min, max] of {pairs} time windows; polled every "
                    f"{statistics.median(intervals[poll] or [0.0]) * 1000:.0f} ms "
                    "(median)",
                )
            )

    async def _queries(
        self,
        ddb: DynamoDBClient,
        search: AsyncOpenSearch,
        p: NovaSettings,
        query_api: RunningService,
        ids: list[str],
    ) -> None:
        s, res = self.scale, self.results
        rng = random.Random(self.seed())
        docs = data.search_documents(s.search_docs, self.seed(), USER)
        for start in range(0, len(docs), 500):
            await raw.raw_bulk(search, p.search_alias, docs[start : start + 500])
        await search.indices.refresh(index=p.search_alias)
        picks = [rng.choice(ids) for _ in range(s.query_requests)]
        words = [rng.choice(data.WORDS) for _ in range(s.query_requests)]
        table = p.read_model_table
        base = query_api.url

        async def rest_get(audio_id: str) -> None:
            async with self.http.get(
                f"{base}/queries/audio/{audio_id}", headers=self.auth
            ) as response:
                response.raise_for_status()
                await response.read()

        async def rest_search(word: str) -> None:
            async with self.http.get(
                f"{base}/queries/search", params={"q": word}, headers=self.auth
            ) as response:
                response.raise_for_status()
                await response.read()

        async def raw_get(audio_id: str) -> None:
            await raw.raw_get(
                ddb, table, {"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}}
            )

        async def raw_search(word: str) -> None:
            await raw.raw_search(search, p.search_alias, word)

        async def raw_nova_body(word: str) -> None:
            # What query-api sends, sent directly: the query's own cost.
            body = search_body(word, USER, DEFAULT_PAGE_SIZE, 0)
            await search.search(index=p.search_alias, body=body)

        empty_http, empty_grpc = free_port(), free_port()
        servers = self.h.start_empty(empty_http, empty_grpc)
        metadata = (("authorization", f"Bearer {self.token}"),)
        try:
            async with (
                grpc.aio.insecure_channel(
                    f"127.0.0.1:{query_api.grpc_port}"
                ) as channel,
                grpc.aio.insecure_channel(f"127.0.0.1:{empty_grpc}") as empty,
            ):
                stub = query_pb2_grpc.QueryServiceStub(channel)
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = (
                    empty.unary_unary(GRPC_METHOD)
                )

                async def grpc_get(audio_id: str) -> None:
                    await stub.GetAudio(
                        query_pb2.GetAudioRequest(audio_id=audio_id),
                        metadata=metadata,
                        timeout=10,
                    )

                async def empty_call(_: str) -> None:
                    await raw.raw_grpc(call)

                async def empty_route(_: str) -> None:
                    await raw.raw_http(
                        self.http, f"http://127.0.0.1:{empty_http}/empty"
                    )

                # Untimed: the cache holds every item, as it does for hot reads.
                await closed_loop(rest_get, ids, s.concurrency)
                runs: list[
                    tuple[str, Callable[[str], Awaitable[object]], list[str]]
                ] = [
                    ("raw_get", raw_get, picks),
                    ("query by id, REST", rest_get, picks),
                    ("query by id, gRPC", grpc_get, picks),
                    ("raw_http (empty FastAPI route)", empty_route, picks),
                    ("raw_grpc (empty unary call)", empty_call, picks),
                    ("raw_search", raw_search, words),
                    ("raw search with Nova's query body", raw_nova_body, words),
                    ("search, REST", rest_search, words),
                ]
                for _ in range(s.pairs):
                    for name, fn, payloads in runs:
                        run = await closed_loop(fn, payloads, s.concurrency)
                        _check(run, name, res)
                        res.add_run(name, run.throughput)
        finally:
            self.h.stop_empty(servers)
        r = res.runs
        res.figures += [
            ratio_figure(
                "query by id, REST",
                0.6,
                r["query by id, REST"],
                r["raw_get"],
                f"Redis cache warm; raw_http floor {median(r, 'raw_http'):.0f}/s",
            ),
            ratio_figure(
                "query by id, gRPC",
                0.7,
                r["query by id, gRPC"],
                r["raw_get"],
                f"Redis cache warm; raw_grpc floor {median(r, 'raw_grpc'):.0f}/s",
            ),
            ratio_figure(
                "search (REST) vs one match query",
                0.6,
                r["search, REST"],
                r["raw_search"],
                f"{s.search_docs} transcripts; Nova's query adds a user filter, "
                "two match fields and highlighting: the same body sent raw runs "
                f"at {median(r, 'raw search with'):.0f}/s",
            ),
        ]

    # === Projector catch-up ===

    async def catchup(self) -> None:
        s, res = self.scale, self.results
        rng = random.Random(self.seed())
        users = [
            data.new_uuid(rng)
            for _ in range(max(1, s.catchup_events // domain.AUDIOS_PER_USER))
        ]
        envelopes = data.created_envelopes(
            max(s.catchup_events, s.search_catchup_events), self.seed(), users
        )
        plain = data.messages(envelopes)
        names = (
            "raw consume + PutItem",
            "projector-readmodel catch-up",
            "raw consume + bulk",
            "projector-search catch-up",
            "projector-search catch-up, records in clear",
        )
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(s.pairs):
            measured = await self._catchup_round(round_, envelopes, plain)
            for name, value in zip(names, measured, strict=True):
                rates[name].append(value)
                res.add_run(name, value)
        raw_rm, sys_rm, raw_os, sys_os, sys_plain = (rates[n] for n in names)
        self.catchup_sealed_cost = ratios(sys_os, sys_plain)
        peak = [self.command_peak] * s.pairs
        note = f"sealed AudioCreated records of {len(users)} users"
        rm_note = f"{s.catchup_events} {note}"
        os_note = f"{s.search_catchup_events} {note}"
        raw_vs_commands = statistics.median(raw_rm) / self.command_peak
        res.figures += [
            ratio_figure(
                "projector catch-up, read model vs raw", 0.7, sys_rm, raw_rm, rm_note
            ),
            ratio_figure(
                "projector catch-up, search vs raw", 0.7, sys_os, raw_os, os_note
            ),
            ratio_figure(
                "projector catch-up, read model vs command rate",
                3.0,
                sys_rm,
                peak,
                f"command peak {self.command_peak:.0f}/s; the raw consume + PutItem "
                f"script itself reaches {raw_vs_commands:.1f} x",
            ),
            ratio_figure(
                "projector catch-up, search vs command rate",
                3.0,
                sys_os,
                peak,
                f"command peak {self.command_peak:.0f}/s",
            ),
        ]

    async def _prefill(
        self, settings: NovaSettings, messages: list[raw.Message]
    ) -> None:
        producer = raw.new_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            await raw.raw_produce(producer, settings.events_topic, messages)
        finally:
            await producer.stop()

    async def _catchup_round(
        self,
        round_: int,
        envelopes: list[EventEnvelope],
        plain: list[raw.Message],
    ) -> tuple[float, float, float, float, float]:
        """One round: raw and projector on the read model, then on search,
        all reading the sealed records the relay publishes; last
        projector-search on the same records in clear (another topic)."""
        mon = self.h.monitor
        mon.phase("catch-up: prefill")
        k = await self.h.resources(f"k{round_}")
        async with AsyncExitStack() as stack:
            personal = await open_personal_data(k, stack)
            await self._prefill(
                k, data.messages(await data.sealed(envelopes, personal))
            )
        async with session().client("dynamodb", **client_kwargs(k)) as ddb:
            raw_table = f"{k.read_model_table}-raw"
            await ensure_table(ddb, read_model_table(k, raw_table))

            async def write_items(records: list[Any]) -> None:
                items = [raw.read_model_item(r.value) for r in records]
                await raw.raw_put_items(ddb, raw_table, items)

            mon.phase("catch-up: read model")
            rm_events = self.scale.catchup_events
            raw_rm = await self._raw_catchup(k, "bench-raw-rm", write_items, rm_events)
            sys_rm = await self._service_catchup(k, "projector-readmodel", rm_events)
        search = AsyncOpenSearch(hosts=[k.opensearch_url])
        try:
            raw_index = f"{k.search_alias}-raw"
            await search.indices.create(index=raw_index, body=search_index_body())

            async def write_docs(records: list[Any]) -> None:
                docs = [raw.search_document(r.value) for r in records]
                await raw.raw_bulk(search, raw_index, docs)

            mon.phase("catch-up: search")
            os_events = self.scale.search_catchup_events
            raw_os = await self._raw_catchup(k, "bench-raw-os", write_docs, os_events)
            sys_os = await self._service_catchup(k, "projector-search", os_events)
        finally:
            await search.close()
        mon.phase("catch-up: search, records in clear")
        clear = await self.h.resources(f"q{round_}")
        await self._prefill(clear, plain)
        sys_plain = await self._service_catchup(clear, "projector-search", os_events)
        return raw_rm, sys_rm, raw_os, sys_os, sys_plain

    async def _raw_catchup(
        self,
        k: NovaSettings,
        group: str,
        write: Callable[[list[Any]], Awaitable[None]],
        events: int,
    ) -> float:
        consumer = raw.new_consumer(
            k.kafka_bootstrap_servers, k.events_topic, f"{group}-{k.resource_suffix}"
        )
        await consumer.start()
        try:
            progress = await raw.raw_consume(consumer, events, write)
        finally:
            await consumer.stop()
        return rate_from_progress(progress)

    async def _service_catchup(self, k: NovaSettings, name: str, events: int) -> float:
        """Start `name` on a full topic; its committed offsets, polled every
        `CATCHUP_POLL_S`, are the progress until `events` are applied."""
        group = k.consumer_group(name)
        admin = AIOKafkaAdminClient(bootstrap_servers=k.kafka_bootstrap_servers)
        await admin.start()
        running = self.h.start([name], k)
        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + DRAIN_TIMEOUT_S * 3
        try:
            done = 0
            while done < events:
                if time.monotonic() > deadline:
                    self.results.notes.append(f"{name}: catch-up stopped at {done}")
                    break
                offsets = await admin.list_consumer_group_offsets(group)
                done = sum(max(0, o.offset) for o in offsets.values())
                if done and (not progress or progress[-1][1] != done):
                    progress.append((time.monotonic(), done))
                await asyncio.sleep(CATCHUP_POLL_S)
        finally:
            self.h.stop(running.values())
            await admin.close()
        return rate_from_progress(progress)

    # === Outbox ===

    async def outbox(self) -> None:
        s, res, mon = self.scale, self.results, self.h.monitor
        n = s.outbox_events
        messages = data.created_messages(n, self.seed(), USER)
        reads, produces, naive, relayed = [], [], [], []
        for round_ in range(s.pairs):
            mon.phase("outbox: preload")
            o = await self.h.resources(f"o{round_}")
            aws = session()
            async with (
                aws.client("dynamodb", **client_kwargs(o)) as ddb,
                aws.client("dynamodbstreams", **client_kwargs(o)) as streams,
            ):
                await data.batch_load(
                    ddb, o.event_store_table, data.event_items(n, self.seed(), USER)
                )
                table = await ddb.describe_table(TableName=o.event_store_table)
                arn = table["Table"]["LatestStreamArn"]
                raw_topic = f"bench-raw-{o.resource_suffix}"
                admin = AIOKafkaAdminClient(bootstrap_servers=o.kafka_bootstrap_servers)
                await admin.start()
                try:
                    await admin.create_topics([NewTopic(raw_topic, 3, 1)])
                finally:
                    await admin.close()
                mon.phase("outbox: raw")
                reads.append(
                    rate_from_progress(await raw.raw_stream_read(streams, arn, n))
                )
                producer = raw.new_producer(o.kafka_bootstrap_servers)
                await producer.start()
                try:
                    sent = await raw.raw_produce(producer, raw_topic, messages)
                    produces.append(rate_from_progress(sent))
                    if round_ == 0:  # for the notes only, so once
                        naive.append(
                            rate_from_progress(
                                await raw.raw_outbox(
                                    streams, arn, producer, raw_topic, n
                                )
                            )
                        )
                finally:
                    await producer.stop()
            mon.phase("outbox: relay")
            relayed.append(await self._relay(o, n))
            for name, value in (
                ("raw stream read (GetRecords)", reads[-1]),
                ("raw_produce", produces[-1]),
                ("raw read-then-produce (first round only)", naive[-1]),
                (f"relay, {n:,} backlog", relayed[-1]),
            ):
                if round_ == 0 or not name.startswith("raw read-then"):
                    res.add_run(name, value)
        bounded = [min(a, b) for a, b in zip(reads, produces, strict=True)]
        res.figures.append(
            ratio_figure(
                f"outbox publication of a {n:,} backlog",
                0.7,
                relayed,
                bounded,
                f"baseline min(raw_produce {statistics.median(produces):.0f}/s, "
                f"stream read {statistics.median(reads):.0f}/s); "
                f"read-then-produce {statistics.median(naive):.0f}/s",
            )
        )

    async def _relay(self, o: NovaSettings, expected: int) -> float:
        running = self.h.start(["relay"], o)
        url = running["relay"].url + "/metrics"
        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + DRAIN_TIMEOUT_S * 3
        try:
            done = 0
            while done < expected and time.monotonic() < deadline:
                page = await asyncio.to_thread(scrape, url)
                done = int(metric(page, "nova_relay_published_events_total"))
                if done and (not progress or progress[-1][1] != done):
                    progress.append((time.monotonic(), done))
                await asyncio.sleep(0.1)
            if done < expected:
                self.results.notes.append(f"relay: published {done} of {expected}")
        finally:
            self.h.stop(running.values())
        return rate_from_progress(progress)

    # === Encryption (issue 10) ===

    def encryption(self) -> None:
        """The cost of crypto-shredding: sealed / plain, on the command path's
        in-process work (from `domain`) and on search catch-up (from
        `catchup`). The REST command path always seals, so its cost shows
        only inside the domain race."""
        res = self.results
        res.figures.append(
            Figure(
                "encryption cost, command path in process (sealed / plain)",
                "reported",
                Spread.of(self.sealed_cost),
                "x",
                None,
                "audio lives/s with personal fields sealed and opened vs without"
                if self.sealed_cost
                else "needs the domain phase",
            )
        )
        res.figures.append(
            Figure(
                "encryption cost, search catch-up (sealed / plain records)",
                "reported",
                Spread.of(self.catchup_sealed_cost),
                "x",
                None,
                "projector-search on the sealed topic vs the same records in clear"
                if self.catchup_sealed_cost
                else "needs the catchup phase",
            )
        )
