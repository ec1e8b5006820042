"""Finds the real backends for integration and e2e tests.

In order: endpoints given in the environment (`NOVA_KAFKA_BOOTSTRAP_SERVERS`,
`NOVA_AWS_ENDPOINT_URL`, `NOVA_OPENSEARCH_URL`, `NOVA_REDIS_URL`); containers
when a Docker engine answers; otherwise the local stack of plain processes
(`deploy/local/stack.py`), started here and stopped again if it was not running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "deploy" / "local" / "stack.py"
ENDPOINT_VARS = (
    "NOVA_KAFKA_BOOTSTRAP_SERVERS",
    "NOVA_AWS_ENDPOINT_URL",
    "NOVA_OPENSEARCH_URL",
    "NOVA_REDIS_URL",
)
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Backends:
    kafka_bootstrap_servers: str
    aws_endpoint_url: str
    opensearch_url: str
    redis_url: str
    origin: str

    def env(self) -> dict[str, str]:
        return {
            "NOVA_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "NOVA_AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "NOVA_OPENSEARCH_URL": self.opensearch_url,
            "NOVA_REDIS_URL": self.redis_url,
            **{k: os.environ.get(k, v) for k, v in FAKE_AWS.items()},
        }


def _stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK), *args], capture_output=True, text=True, check=False
    )


def _docker_available() -> bool:
    if os.environ.get("NOVA_TEST_NO_DOCKER"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means: no engine to use
        return False
    return True


@contextmanager
def _containers() -> Iterator[Backends]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.opensearch import OpenSearchContainer
    from testcontainers.redis import RedisContainer

    with ExitStack() as stack:
        kafka = stack.enter_context(KafkaContainer("apache/kafka:4.1.0").with_kraft())
        search = stack.enter_context(
            OpenSearchContainer("opensearchproject/opensearch:2.19.1")
        )
        redis = stack.enter_context(RedisContainer("redis:7"))
        moto = stack.enter_context(
            DockerContainer("motoserver/moto:5.1.0").with_exposed_ports(5000)
        )
        wait_for_logs(moto, "Running on")
        yield Backends(
            kafka_bootstrap_servers=kafka.get_bootstrap_server(),
            aws_endpoint_url=f"http://{moto.get_container_host_ip()}:{moto.get_exposed_port(5000)}",
            opensearch_url=f"http://{search.get_container_host_ip()}:{search.get_exposed_port(9200)}",
            redis_url=f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            origin="testcontainers",
        )


@contextmanager
def _local_stack() -> Iterator[Backends]:
    was_running = _stack("status").returncode == 0
    if not was_running:
        started = _stack("start")
        if started.returncode != 0:
            raise RuntimeError(
                "could not start the local stack:\n" + started.stdout + started.stderr
            )
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in _stack("env").stdout.splitlines()
        if line.startswith("export ")
    )
    try:
        yield Backends(
            kafka_bootstrap_servers=env["NOVA_KAFKA_BOOTSTRAP_SERVERS"],
            aws_endpoint_url=env["NOVA_AWS_ENDPOINT_URL"],
            opensearch_url=env["NOVA_OPENSEARCH_URL"],
            redis_url=env["NOVA_REDIS_URL"],
            origin="local stack (already running)" if was_running else "local stack",
        )
    finally:
        if not was_running:
            _stack("stop")


@contextmanager
def provide_backends() -> Iterator[Backends]:
    if all(os.environ.get(v) for v in ENDPOINT_VARS):
        yield Backends(
            kafka_bootstrap_servers=os.environ["NOVA_KAFKA_BOOTSTRAP_SERVERS"],
            aws_endpoint_url=os.environ["NOVA_AWS_ENDPOINT_URL"],
            opensearch_url=os.environ["NOVA_OPENSEARCH_URL"],
            redis_url=os.environ["NOVA_REDIS_URL"],
            origin="environment",
        )
    elif _docker_available():
        with _containers() as backends:
            yield backends
    else:
        with _local_stack() as backends:
            yield backends
