"""The testcontainers branch of `tests/backends.py`, built without a Docker engine.

Nothing here starts a container: the specs and the calls that turn them into
testcontainers containers are checked against a recording stand-in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..backends import (
    ContainerSpec,
    container,
    kafka_spec,
    moto_spec,
    opensearch_spec,
    redis_spec,
)

LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"


class RecordingContainer:
    """Takes the calls `container()` makes; each must exist on DockerContainer."""

    def __init__(self, image: str, command: str | None = None) -> None:
        self.image = image
        self.command = command
        self.env: dict[str, str] = {}
        self.exposed: list[int] = []
        self.bound: dict[int, int] = {}
        self.strategy: Any = None

    def with_envs(self, **variables: str) -> RecordingContainer:
        self.env.update(variables)
        return self

    def with_exposed_ports(self, *ports: int) -> RecordingContainer:
        self.exposed.extend(ports)
        return self

    def with_bind_ports(self, inside: int, outside: int) -> RecordingContainer:
        self.bound[inside] = outside
        return self

    def waiting_for(self, strategy: Any) -> RecordingContainer:
        self.strategy = strategy
        return self


def test_the_stand_in_only_uses_the_real_containers_api() -> None:
    used = {n for n in vars(RecordingContainer) if n.startswith(("with_", "wait"))}

    assert used
    assert all(callable(getattr(DockerContainer, name, None)) for name in used)


def test_kafka_is_one_kraft_node_advertised_at_the_host_port() -> None:
    spec = kafka_spec("127.0.0.1", 39092)

    assert spec.image == "apache/kafka:4.1.0"
    assert spec.ports == {9092: 39092}
    env = spec.env
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:39092"
    # The controller listener named by the quorum is one the node listens on.
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert f"CONTROLLER://:{voter_port}" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_NODE_ID"] == env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[0]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["CLUSTER_ID"]


def test_opensearch_matches_the_local_stack_version() -> None:
    spec = opensearch_spec()

    assert spec.image == "opensearchproject/opensearch:2.19.6"
    assert spec.ports == {9200: None}
    assert spec.env["discovery.type"] == "single-node"
    assert spec.env["DISABLE_SECURITY_PLUGIN"] == "true"
    assert re.search(spec.ready, "[o.o.n.Node] [a1b2] started")


def test_moto_runs_the_locked_version() -> None:
    locked = re.search(r"^moto==(\S+)", LOCK.read_text(), re.MULTILINE)

    assert locked is not None
    assert moto_spec().image == f"motoserver/moto:{locked[1]}"
    assert moto_spec().ports == {5000: None}


def test_specs_become_containers_with_their_env_ports_and_readiness() -> None:
    specs: list[ContainerSpec] = [
        kafka_spec("localhost", 39092),
        opensearch_spec(),
        moto_spec(),
        redis_spec(),
    ]

    built = [container(spec, RecordingContainer) for spec in specs]

    for spec, made in zip(specs, built, strict=True):
        assert made.image == spec.image
        assert made.env == spec.env
        assert made.bound == {k: v for k, v in spec.ports.items() if v is not None}
        assert made.exposed == [k for k, v in spec.ports.items() if v is None]
        assert isinstance(made.strategy, LogMessageWaitStrategy)
    assert built[3].command is not None
    assert "--save" in built[3].command
