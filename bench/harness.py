"""The stack, Nova's resources and services, as a benchmark run uses them.

The stack is the one `make run` uses (`deploy/local/stack.py`, which reads
`NOVA_STACK_HOME` and the `NOVA_STACK_*_PORT` variables), started if it is not
running and left running afterwards. Every phase of a run gets its own
resource suffix, so a run never touches another run's (or a test's) tables,
topics or indexes, and deletes all of them at the end. Services run as
processes exactly as `make run` starts them (`deploy/local/processes.py`),
optionally under pyinstrument.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from botocore.exceptions import ClientError
from opensearchpy import AsyncOpenSearch

from nova_platform.aws import client_kwargs, session
from nova_platform.personal import DEV_MASTER_KEY
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from .procmon import ProcessMonitor

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

ROOT = Path(__file__).resolve().parents[1]
STACK_SCRIPT = ROOT / "deploy" / "local" / "stack.py"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import SERVICES, RunningService, Service  # noqa: E402

__all__ = ["Harness", "RunningService", "free_port", "metric", "scrape"]

logger = logging.getLogger(__name__)
STACK_COMPONENTS = ("kafka", "opensearch", "moto", "redis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BENCH_STACK = {
    "NOVA_STACK_HOME": str(ROOT / ".nova" / "bench" / "stack"),
    "NOVA_STACK_KAFKA_PORT": "29092",
    "NOVA_STACK_KAFKA_CONTROLLER_PORT": "29093",
    "NOVA_STACK_OPENSEARCH_PORT": "29200",
    "NOVA_STACK_OPENSEARCH_TRANSPORT_PORT": "29300",
    "NOVA_STACK_MOTO_PORT": "25000",
    "NOVA_STACK_REDIS_PORT": "26379",
}
"""The benchmarks' own stack, so they never load one others test against;
`NOVA_STACK_*` variables in the environment override each setting."""


def use_bench_stack() -> None:
    """Point `deploy/local/stack.py` at the benchmarks' stack where the
    environment does not name one."""
    for key, value in BENCH_STACK.items():
        os.environ.setdefault(key, value)


def _stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def stack_home() -> Path:
    return Path(os.environ.get("NOVA_STACK_HOME") or ROOT / ".nova" / "stack")


def stack_running() -> bool:
    return _stack("status").returncode == 0


def stack_env() -> dict[str, str]:
    """Start the stack if needed; the `NOVA_*` endpoints its services use."""
    started = _stack("start")
    if started.returncode != 0:
        raise RuntimeError(
            f"the local stack did not start:\n{started.stdout}{started.stderr}"
        )
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in _stack("env").stdout.splitlines()
        if line.startswith("export ")
    )


def clean_stack() -> None:
    """Stop the stack and remove its data (moto's memory goes anyway)."""
    _stack("clean")


def stack_pids() -> dict[str, int]:
    pids: dict[str, int] = {}
    for name in STACK_COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            pids[name] = int((stack_home() / "run" / f"{name}.pid").read_text())
    return pids


def service(name: str) -> Service:
    for known in SERVICES:
        if known.name == name:
            return known
    raise KeyError(f"no service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


@dataclass
class Harness:
    """One run's stack endpoints, secrets, suffixes, processes and output."""

    env: dict[str, str]
    out: Path
    monitor: ProcessMonitor
    profile: frozenset[str] = frozenset()
    run_id: str = ""
    jwt_secret: str = ""

    def __post_init__(self) -> None:
        self.run_id = self.run_id or "b" + secrets.token_hex(4)
        self.jwt_secret = self.jwt_secret or secrets.token_hex(24)
        self._suffixes: list[str] = []
        self._running: list[RunningService] = []
        self._shown: dict[int, str] = {}
        """The name each service process has in logs and the CPU table."""
        # The development key-encryption key of `make run` and the tests,
        # unless the environment names one.
        self.env.setdefault(
            "NOVA_MASTER_KEY", os.environ.get("NOVA_MASTER_KEY", DEV_MASTER_KEY)
        )
        for key, value in self.env.items():
            if key.startswith("AWS_"):
                os.environ.setdefault(key, value)

    def settings(self, tag: str) -> NovaSettings:
        """Settings naming this run's resources for `tag` (a phase or round)."""
        suffix = f"{self.run_id}{tag}"
        self._suffixes.append(suffix)
        return NovaSettings(
            kafka_bootstrap_servers=self.env["NOVA_KAFKA_BOOTSTRAP_SERVERS"],
            aws_endpoint_url=self.env["NOVA_AWS_ENDPOINT_URL"],
            opensearch_url=self.env["NOVA_OPENSEARCH_URL"],
            redis_url=self.env["NOVA_REDIS_URL"],
            resource_suffix=suffix,
            jwt_secret=self.jwt_secret,
            master_key=self.env["NOVA_MASTER_KEY"],
        )

    async def resources(self, tag: str) -> NovaSettings:
        settings = self.settings(tag)
        await ensure_all(settings)
        return settings

    def start(
        self,
        names: Iterable[str],
        settings: NovaSettings,
        extra_env: dict[str, str] | None = None,
        label: str = "",
    ) -> dict[str, RunningService]:
        """Start the services `names` for `settings`' resources; wait until
        each answers `/healthz`. `label` tells apart two instances of one
        service in the logs and the CPU table."""
        env = {
            **os.environ,
            **self.env,
            "NOVA_RESOURCE_SUFFIX": settings.resource_suffix,
            "NOVA_JWT_SECRET": self.jwt_secret,
            "NOVA_HTTP_HOST": "127.0.0.1",
            **(extra_env or {}),
        }
        started: dict[str, RunningService] = {}
        for name in names:
            svc = service(name)
            port = free_port()
            run_env = {**env, svc.port_env: str(port)}
            grpc_port = None
            if svc.grpc_port_env is not None:
                grpc_port = free_port()
                run_env[svc.grpc_port_env] = str(grpc_port)
            shown = f"{name}{label}"
            log_path = self.out / "logs" / f"{shown}-{settings.resource_suffix}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("ab")
            command = [str(BIN / svc.command)]
            if name in self.profile:
                profile = self.out / "profiles" / f"{shown}-{settings.resource_suffix}"
                profile.parent.mkdir(parents=True, exist_ok=True)
                command = [
                    str(BIN / "pyinstrument"),
                    "-r",
                    "pyisession",
                    "-o",
                    f"{profile}.pyisession",
                    str(BIN / svc.command),
                ]
            process = subprocess.Popen(
                command,
                env=run_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            running = RunningService(svc, port, process, log_path, log, grpc_port)
            started[name] = running
            self._running.append(running)
            self._shown[process.pid] = shown
            self.monitor.watch(shown, process.pid)
        self._wait_healthy(list(started.values()))
        return started

    def start_empty(
        self, http_port: int, grpc_port: int
    ) -> list[subprocess.Popen[bytes]]:
        """The servers of `raw_http` and `raw_grpc` (`bench.empty`), answering."""
        started = []
        for kind, port in (("http", http_port), ("grpc", grpc_port)):
            log = (self.out / "logs" / f"empty-{kind}.log").open("ab")
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.empty", kind, str(port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            started.append(process)
            self.monitor.watch(f"raw-{kind} server", process.pid)
        deadline = time.monotonic() + 60
        for port in (http_port, grpc_port):
            while not _listening(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the empty server on port {port} never listened"
                    )
                time.sleep(0.1)
        return started

    def stop_empty(self, processes: Iterable[subprocess.Popen[bytes]]) -> None:
        for process, kind in zip(processes, ("http", "grpc"), strict=False):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.monitor.unwatch(f"raw-{kind} server")

    def stop(self, running: Iterable[RunningService]) -> None:
        for item in running:
            if item.service.name in self.profile and item.process.poll() is None:
                # uvicorn re-raises SIGTERM after its shutdown, which kills the
                # process before pyinstrument writes; SIGINT ends in a
                # KeyboardInterrupt that pyinstrument catches and reports.
                item.process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    item.process.wait(60)
                self._render_profile(item)
            item.stop(timeout=30)
            self.monitor.unwatch(self._shown.pop(item.process.pid, item.service.name))
            with contextlib.suppress(ValueError):
                self._running.remove(item)

    def _render_profile(self, item: RunningService) -> None:
        """The session as HTML (to browse) and text (to read in a terminal)."""
        stem = item.log_path.name.removesuffix(".log")
        session = self.out / "profiles" / f"{stem}.pyisession"
        if not session.exists():
            return
        for renderer, extension in (("html", "html"), ("text", "txt")):
            subprocess.run(
                [
                    str(BIN / "pyinstrument"),
                    "--load",
                    str(session),
                    "-r",
                    renderer,
                    "-o",
                    str(session.with_suffix(f".{extension}")),
                ],
                check=False,
                capture_output=True,
            )

    def stop_all(self) -> None:
        self.stop(list(reversed(self._running)))

    def _wait_healthy(
        self, running: list[RunningService], timeout: float = 120
    ) -> None:
        deadline = time.monotonic() + timeout
        pending = list(running)
        while pending:
            for item in list(pending):
                if item.process.poll() is not None:
                    raise RuntimeError(
                        f"{item.service.name} exited with {item.process.returncode}:"
                        f"\n{item.log_tail()}"
                    )
                if item.healthy():
                    pending.remove(item)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(
                    f"{pending[0].service.name} not healthy after {timeout:.0f}s:\n"
                    f"{pending[0].log_tail()}"
                )
            if pending:
                time.sleep(0.2)

    async def cleanup(self) -> None:
        """Delete every table, bucket, topic and index this run created."""
        if not self._suffixes:
            return
        base = self.settings("")
        self._suffixes.pop()
        await asyncio.gather(
            self._delete_tables(base),
            self._delete_buckets(base),
            self._delete_topics(base),
            self._delete_indexes(base),
        )

    def _ours(self, name: str) -> bool:
        return self.run_id in name

    async def _delete_tables(self, settings: NovaSettings) -> None:
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            names: list[str] = []
            request: dict[str, Any] = {}
            while True:
                page = await ddb.list_tables(**request)
                names += [n for n in page.get("TableNames", []) if self._ours(n)]
                if "LastEvaluatedTableName" not in page:
                    break
                request["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
            for name in names:
                with contextlib.suppress(ClientError):
                    await ddb.delete_table(TableName=name)

    async def _delete_buckets(self, settings: NovaSettings) -> None:
        async with session().client("s3", **client_kwargs(settings)) as s3:
            buckets = (await s3.list_buckets()).get("Buckets", [])
            for bucket in [b["Name"] for b in buckets if self._ours(b["Name"])]:
                paginator = s3.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=bucket):
                    keys: list[ObjectIdentifierTypeDef] = [
                        {"Key": o["Key"]} for o in page.get("Contents", [])
                    ]
                    if keys:
                        await s3.delete_objects(
                            Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
                        )
                with contextlib.suppress(ClientError):
                    await s3.delete_bucket(Bucket=bucket)

    async def _delete_topics(self, settings: NovaSettings) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if self._ours(t)]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()

    async def _delete_indexes(self, settings: NovaSettings) -> None:
        client = AsyncOpenSearch(hosts=[settings.opensearch_url])
        try:
            indexes = await client.cat.indices(format="json")
            for index in [i["index"] for i in indexes if self._ours(i["index"])]:
                await client.indices.delete(index=index)
        finally:
            await client.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def scrape(url: str) -> str:
    """A service's `/metrics` text ("" when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return ""


def metric(text: str, name: str) -> float:
    """The sum of every sample of metric `name` in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total
