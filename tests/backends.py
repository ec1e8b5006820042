"""Finds the real backends for integration and e2e tests.

In order: endpoints given in the environment (`NOVA_KAFKA_BOOTSTRAP_SERVERS`,
`NOVA_AWS_ENDPOINT_URL`, `NOVA_OPENSEARCH_URL`, `NOVA_REDIS_URL`); containers
when a Docker engine answers; otherwise the local stack of plain processes
(`deploy/local/stack.py`), started here and stopped again if it was not running.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nova_platform.personal import DEV_MASTER_KEY

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
            # Like the fake AWS credentials: what every service needs to start.
            "NOVA_MASTER_KEY": os.environ.get("NOVA_MASTER_KEY", DEV_MASTER_KEY),
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


@dataclass(frozen=True)
class ContainerSpec:
    """What to run for one backend; turned into a testcontainers container.

    `ports` maps a container port to a host port, None for any free one.
    `ready` is a regular expression the container logs once it serves.
    """

    image: str
    ports: dict[int, int | None]
    ready: str
    env: dict[str, str] = field(default_factory=dict)
    command: str | None = None


KAFKA_IMAGE = "apache/kafka:4.1.0"
OPENSEARCH_IMAGE = "opensearchproject/opensearch:2.19.6"
REDIS_IMAGE = "redis:7"


def moto_image() -> str:
    """moto's image at the version the lock pins (and the venv has installed)."""
    return f"motoserver/moto:{importlib.metadata.version('moto')}"


def kafka_spec(host: str, host_port: int) -> ContainerSpec:
    """One KRaft node, broker and controller, reachable at `host:host_port`.

    A client bootstraps at the mapped port and is then sent to the advertised
    listener, so that must be the host's address and port, not the container's.
    That port is chosen before the start and bound as is.
    """
    return ContainerSpec(
        image=KAFKA_IMAGE,
        ports={9092: host_port},
        ready=r"Kafka Server started",
        env={
            "CLUSTER_ID": "bm92YS10ZXN0LWthZmthLQ",
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port}",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        },
    )


def opensearch_spec() -> ContainerSpec:
    return ContainerSpec(
        image=OPENSEARCH_IMAGE,
        ports={9200: None},
        ready=r"\] started",
        env={
            "discovery.type": "single-node",
            "DISABLE_SECURITY_PLUGIN": "true",
            "DISABLE_INSTALL_DEMO_CONFIG": "true",
            "OPENSEARCH_JAVA_OPTS": "-Xms512m -Xmx512m",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        },
    )


def moto_spec() -> ContainerSpec:
    return ContainerSpec(
        image=moto_image(), ports={5000: None}, ready=r"Running on", env={}
    )


def redis_spec() -> ContainerSpec:
    return ContainerSpec(
        image=REDIS_IMAGE,
        ports={6379: None},
        ready=r"Ready to accept connections",
        command='redis-server --save "" --appendonly no',
    )


def container(spec: ContainerSpec, factory: Callable[..., Any]) -> Any:
    """A container not started yet, built by `factory` (`DockerContainer`)."""
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    built = factory(spec.image, command=spec.command)
    built.with_envs(**spec.env)
    for inside, outside in spec.ports.items():
        if outside is None:
            built.with_exposed_ports(inside)
        else:
            built.with_bind_ports(inside, outside)
    return built.waiting_for(LogMessageWaitStrategy(spec.ready))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def _containers() -> Iterator[Backends]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    host = DockerClient().host()
    kafka_port = _free_port()
    with ExitStack() as stack:

        def started(spec: ContainerSpec) -> Any:
            return stack.enter_context(container(spec, DockerContainer))

        started(kafka_spec(host, kafka_port))
        search = started(opensearch_spec())
        redis = started(redis_spec())
        moto = started(moto_spec())

        def url(scheme: str, running: Any, port: int, path: str = "") -> str:
            address = (
                f"{running.get_container_host_ip()}:{running.get_exposed_port(port)}"
            )
            return f"{scheme}://{address}{path}"

        yield Backends(
            kafka_bootstrap_servers=f"{host}:{kafka_port}",
            aws_endpoint_url=url("http", moto, 5000),
            opensearch_url=url("http", search, 9200),
            redis_url=url("redis", redis, 6379, "/0"),
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
