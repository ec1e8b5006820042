"""Versions and settings a run records next to its numbers."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from nova_command_api.settings import CommandApiSettings
from nova_platform.consumer import BATCH_WAIT_MS, build_consumer_app
from nova_query_api.settings import QueryApiSettings

from .harness import ROOT, stack_home, stack_pids

PACKAGES = (
    "aioboto3",
    "botocore",
    "aiokafka",
    "faststream",
    "opensearch-py",
    "redis",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "grpcio",
    "aiohttp",
    "pydantic",
    "orjson",
    "moto",
    "eventsourcing",
)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def heap_sizes() -> dict[str, str]:
    """-Xms/-Xmx of the stack's JVMs (Kafka, OpenSearch)."""
    found = {}
    for name, pid in stack_pids().items():
        flags = [a for a in _cmdline(pid) if re.match(r"-Xm[sx]\d", a)]
        if flags:
            found[f"{name} heap"] = " ".join(flags)
    return found


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git commit": commit,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "stack home": str(stack_home()),
    }


async def backend_versions(env: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    search = AsyncOpenSearch(hosts=[env["NOVA_OPENSEARCH_URL"]])
    try:
        info = await search.info()
        found["OpenSearch"] = str(info["version"]["number"])
    finally:
        await search.close()
    redis = Redis.from_url(env["NOVA_REDIS_URL"])
    try:
        server = await redis.info("server")
        found["Redis"] = str(server.get("redis_version"))
    finally:
        await redis.aclose()
    jars = sorted((stack_home() / "kafka" / "libs").glob("kafka_*.jar"))
    named = [j.name for j in jars if re.match(r"kafka_[\d.]+-[\d.]+\.jar$", j.name)]
    found["Kafka"] = named[0].split("-", 1)[1].removesuffix(".jar") if named else "?"
    found["moto (DynamoDB, Streams, S3)"] = _version("moto")
    return found


def versions() -> dict[str, str]:
    return {name: _version(name) for name in PACKAGES}


async def index_settings(search: AsyncOpenSearch, alias: str) -> dict[str, Any]:
    """The refresh interval and shards of the search index behind `alias`."""
    found = await search.indices.get_settings(index=alias, include_defaults=True)
    index = next(iter(found.values()))
    own, defaults = index.get("settings", {}), index.get("defaults", {})
    interval = own.get("index", {}).get("refresh_interval") or defaults.get(
        "index", {}
    ).get("refresh_interval", "1s")
    return {
        "search refresh interval": interval,
        "search_refresh_interval_ms": _millis(interval),
        "search shards / replicas": f"{own['index']['number_of_shards']} / "
        f"{own['index']['number_of_replicas']}",
    }


def _millis(interval: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", interval)
    if not match:
        return 1000.0
    value, unit = int(match[1]), match[2]
    return float(value * {"ms": 1, "s": 1000, "m": 60_000}[unit])


async def topic_partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()


def service_settings() -> dict[str, str]:
    """The services' defaults the figures depend on (none is changed here)."""
    command = CommandApiSettings()
    query = QueryApiSettings()
    defaults = build_consumer_app.__kwdefaults__ or {}
    return {
        "relay poll interval": f"{command.relay_poll_interval_s} s",
        "consumer max records per batch": str(defaults.get("max_records")),
        "consumer batch timeout": f"{BATCH_WAIT_MS} ms (nova_platform.consumer)",
        "query cache TTL": f"{query.cache_ttl_s} s",
        "log level": command.log_level,
        "uvicorn": "nova_platform.serve: uvloop + httptools when installed, "
        "no access log",
    }
