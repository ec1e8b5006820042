"""docker-compose.yml agrees with the packages, the settings and `make run`.

No Docker engine is needed: the file is parsed and compared with the console
scripts in each package's pyproject.toml, the fields of `NovaSettings`, the
service Dockerfiles it builds (`tests/dockerfiles.py` reads them) and the
processes `make run` starts (`deploy/local/processes.py`).
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

from nova_platform.auth.dev_token import DEV_SECRET
from nova_platform.personal import DEV_MASTER_KEY
from nova_platform.settings import NovaSettings
from nova_transcriber.settings import TranscriberSettings

from ..dockerfiles import ROOT, Dockerfile, parse
from ..process_settings import INIT as INIT_PROCESS
from ..process_settings import SETTINGS_OF, interpolate, load, unread_variables

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import SERVICES

COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT = "init"
API_SERVICES = ("command-api", "query-api")
# The processes that run another package's image (with their own `command`).
IMAGE_OF = {INIT: "command-api", "relay": "command-api"}
# Compose service name -> process name, where they differ.
PROCESS_OF = {INIT: INIT_PROCESS}
# The NovaSettings fields that locate a backend; each must reach every process.
BACKEND_FIELDS = (
    "kafka_bootstrap_servers",
    "aws_endpoint_url",
    "opensearch_url",
    "redis_url",
)
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

Service = dict[str, Any]


@dataclass(frozen=True)
class Port:
    host_ip: str
    published: int | None
    target: int
    protocol: str


def parse_port(entry: str | int | dict[str, Any]) -> Port:
    """One `ports` entry, short (`[ip:][host:]container[/proto]`) or long syntax."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return Port(
            host_ip=str(entry.get("host_ip", "")),
            published=None if published is None else int(published),
            target=int(entry["target"]),
            protocol=str(entry.get("protocol", "tcp")),
        )
    text, _, protocol = str(entry).partition("/")
    host_ip = ""
    if text.startswith("["):  # an IPv6 host address
        host_ip, _, text = text[1:].partition("]:")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, published, target = parts
    elif len(parts) == 2:
        published, target = parts
    else:
        published, target = "", parts[0]
    return Port(
        host_ip=host_ip,
        published=int(published) if published else None,
        target=int(target),
        protocol=protocol or "tcp",
    )


def env_of(service: Service) -> dict[str, str]:
    """`environment` as a mapping, from either of its two syntaxes."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def depends_on(service: Service) -> dict[str, str]:
    """`depends_on` as target -> condition, from either of its two syntaxes."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {str(name): "service_started" for name in raw}
    return {
        str(name): str((spec or {}).get("condition", "service_started"))
        for name, spec in raw.items()
    }


def build_args(service: Service) -> dict[str, str]:
    build = service.get("build") or {}
    raw = (build.get("args") or {}) if isinstance(build, dict) else {}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def build_paths(service: Service) -> tuple[Path, Path]:
    """The build's context directory and its Dockerfile, resolved."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / str(build.get("context", "."))).resolve()
    return context, (context / str(build.get("dockerfile", "Dockerfile"))).resolve()


def image_of(service: Service) -> Dockerfile:
    return parse(build_paths(service)[1])


def command_of(service: Service) -> str:
    """The console script the container runs: `command`, else the image's CMD."""
    command = service.get("command")
    if isinstance(command, list) and command:
        return str(command[0])
    if isinstance(command, str) and command.strip():
        return command.split()[0]
    return image_of(service).final.all("CMD")[-1].exec_form()[0]


def scripts_of(package_dir: Path) -> set[str]:
    with (package_dir / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    return set(project.get("scripts", {}))


def settings_env_name(field: str) -> str:
    assert field in NovaSettings.model_fields, f"NovaSettings has no field {field}"
    return f"{NovaSettings.model_config.get('env_prefix', '')}{field}".upper()


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    found = document.get("services")
    assert isinstance(found, dict)
    assert found, "docker-compose.yml has no services"
    return {str(name): dict(spec or {}) for name, spec in found.items()}


@pytest.fixture(scope="module")
def nova(services: dict[str, Service]) -> dict[str, Service]:
    """The services built from a Dockerfile: Nova's processes and `init`."""
    return {name: spec for name, spec in services.items() if "build" in spec}


def test_every_service_has_an_image_or_a_build(services: dict[str, Service]) -> None:
    missing = [n for n, s in services.items() if not (s.get("image") or "build" in s)]
    assert not missing, f"no image and no build: {missing}"


def test_compose_runs_the_processes_make_run_starts(nova: dict[str, Service]) -> None:
    assert set(nova) == {s.name for s in SERVICES} | {INIT}


def test_every_command_is_a_script_installed_in_its_image(
    nova: dict[str, Service],
) -> None:
    expected = {s.name: s.command for s in SERVICES} | {INIT: "nova-init"}
    for name, service in nova.items():
        # The scripts of exactly the packages the image builds and installs.
        packages = image_of(service).built_packages()
        assert packages, f"{name}: its Dockerfile installs no package"
        installed = set().union(*(scripts_of(p) for p in packages))
        command = command_of(service)
        assert command in installed, f"{name}: {command} is not in {sorted(installed)}"
        assert command == expected[name], name


def test_every_build_is_its_service_s_dockerfile_from_the_repository_root(
    nova: dict[str, Service],
) -> None:
    for name, service in nova.items():
        context, dockerfile = build_paths(service)
        package_dir = ROOT / "services" / IMAGE_OF.get(name, name)
        assert context == ROOT, f"{name}: the Dockerfiles COPY from the root"
        assert dockerfile == package_dir / "Dockerfile", f"{name}: {dockerfile}"
        assert dockerfile.is_file(), f"{name}: no {dockerfile.relative_to(ROOT)}"
        assert package_dir in image_of(service).built_packages(), name
        undeclared = set(build_args(service)) - image_of(service).declared_args()
        assert not undeclared, f"{name}: the Dockerfile has no ARG {undeclared}"


def test_ports_match_each_process_port_setting(nova: dict[str, Service]) -> None:
    for process in SERVICES:
        service = nova[process.name]
        port = str(process.default_port)
        assert env_of(service).get(process.port_env) == port, process.name
        # The image's HEALTHCHECK asks /healthz on HEALTH_PORT, else on
        # NOVA_HTTP_PORT (test_dockerfiles.py runs it); compose's env wins.
        env = image_of(service).final.env() | env_of(service)
        health = env.get("HEALTH_PORT") or env.get("NOVA_HTTP_PORT")
        assert health == port, f"{process.name}: the health check asks {health}"
        targets = {parse_port(p).target for p in service.get("ports", [])}
        targets |= {int(str(p).partition("/")[0]) for p in service.get("expose", [])}
        expected = {process.default_port}
        if process.grpc_port_env:
            grpc = env_of(service).get(process.grpc_port_env)
            assert grpc == str(process.default_grpc_port), process.name
            expected.add(int(grpc))
        assert targets == expected, process.name


def test_the_apis_are_published_on_their_own_port(nova: dict[str, Service]) -> None:
    published = {
        name: {(p.published, p.target) for p in map(parse_port, s.get("ports", []))}
        for name, s in nova.items()
        if s.get("ports")
    }
    ports = {s.name: {s.default_port, s.default_grpc_port} - {None} for s in SERVICES}
    assert published == {
        name: {(port, port) for port in ports[name]} for name in API_SERVICES
    }


def test_no_two_services_publish_the_same_host_port(
    services: dict[str, Service],
) -> None:
    owner: dict[tuple[int, str], str] = {}
    for name, service in services.items():
        for entry in service.get("ports", []):
            port = parse_port(entry)
            assert port.published is not None, f"{name}: {entry} picks a random port"
            key = (port.published, port.protocol)
            assert key not in owner, f"{name} and {owner.get(key)} both publish {key}"
            owner[key] = name


def test_every_nova_service_gets_the_backends_and_the_jwt_secret(
    services: dict[str, Service], nova: dict[str, Service]
) -> None:
    names = [settings_env_name(f) for f in (*BACKEND_FIELDS, "jwt_secret")]
    for name, service in nova.items():
        env = env_of(service)
        missing = [n for n in names if not env.get(n)]
        assert not missing, f"{name} lacks {missing}"
        for field in BACKEND_FIELDS:
            value = env[settings_env_name(field)]
            host = urlsplit(value if "://" in value else f"//{value}").hostname
            assert host in services, f"{name}: {value} names no compose service"
            assert "build" not in services[str(host)], f"{name}: {value}"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            assert env.get(key), f"{name} lacks {key}"


def test_every_variable_is_one_the_process_reads(nova: dict[str, Service]) -> None:
    for name, service in nova.items():
        settings = SETTINGS_OF[PROCESS_OF.get(name, name)]
        # HEALTH_PORT is read by the image's HEALTHCHECK, not by the process.
        unknown = unread_variables(settings, env_of(service)) - {"HEALTH_PORT"}
        assert not unknown, f"{name} does not read {sorted(unknown)}"


def test_the_settings_load_from_the_environment_given(
    nova: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process's settings validate with its service's variables, the
    `${NAME:-default}` ones at their defaults."""
    for name, service in nova.items():
        settings = SETTINGS_OF[PROCESS_OF.get(name, name)]
        env = {key: interpolate(value) for key, value in env_of(service).items()}
        loaded = load(settings, env, monkeypatch)
        if isinstance(loaded, TranscriberSettings):
            # Inside a container 127.0.0.1 is the transcriber itself.
            host = urlsplit(loaded.command_api_url).hostname
            assert host == "command-api", f"transcriber posts results to {host}"


def test_the_default_jwt_secret_is_the_one_make_token_signs_with(
    nova: dict[str, Service],
) -> None:
    for name, service in nova.items():
        secret = env_of(service)[settings_env_name("jwt_secret")]
        assert secret == f"${{NOVA_JWT_SECRET:-{DEV_SECRET}}}", name


def test_the_default_master_key_is_the_development_one(
    nova: dict[str, Service],
) -> None:
    for name, service in nova.items():
        key = env_of(service)[settings_env_name("master_key")]
        assert key == f"${{NOVA_MASTER_KEY:-{DEV_MASTER_KEY}}}", name


def test_kafka_advertises_the_address_the_services_use(
    services: dict[str, Service], nova: dict[str, Service]
) -> None:
    bootstrap = {
        env_of(s)[settings_env_name("kafka_bootstrap_servers")] for s in nova.values()
    }
    assert len(bootstrap) == 1
    advertised = env_of(services["kafka"]).get("KAFKA_ADVERTISED_LISTENERS", "")
    addresses = {a.partition("://")[2] for a in advertised.split(",")}
    assert bootstrap <= addresses, f"{bootstrap} not in {advertised}"


def test_every_dependency_exists_and_can_be_met(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert target != name, name
            assert condition in CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                # Built services have their Dockerfile's HEALTHCHECK.
                has_check = bool(check.get("test")) or (
                    "build" in services[target]
                    and bool(image_of(services[target]).final.all("HEALTHCHECK"))
                )
                assert has_check, f"{name} -> {target}: no healthcheck"
                assert not check.get("disable"), f"{name} -> {target}: disabled"


def test_init_runs_once_after_the_backends_and_before_every_process(
    services: dict[str, Service],
) -> None:
    init = services[INIT]
    backends = {name for name, s in services.items() if "build" not in s}
    assert depends_on(init) == dict.fromkeys(backends, "service_healthy")
    assert command_of(init) == "nova-init"
    assert str(init.get("restart", "no")) == "no"
    for process in SERVICES:
        assert depends_on(services[process.name]).get(INIT) == (
            "service_completed_successfully"
        ), process.name


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("8001", Port("", None, 8001, "tcp")),
        ("8001:8002", Port("", 8001, 8002, "tcp")),
        ("127.0.0.1:8001:8002/udp", Port("127.0.0.1", 8001, 8002, "udp")),
        ("[::1]:8001:8002", Port("::1", 8001, 8002, "tcp")),
        ({"target": 8002, "published": "8001"}, Port("", 8001, 8002, "tcp")),
    ],
)
def test_parse_port(entry: str | dict[str, Any], expected: Port) -> None:
    assert parse_port(entry) == expected
