"""deploy/k8s renders, validates and agrees with what the services really do.

Each overlay is rendered by kustomize (built by `make install`), every object
is validated offline against the Kubernetes schemas (kubernetes-validate), and
each workload is compared with its package: the settings class that reads its
environment, the port settings, the routes its probes ask, the console script
it runs. No cluster is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from nova_command_api.settings import CommandApiSettings
from nova_integration.settings import IntegrationSettings
from nova_platform.resources import EVENTS_TOPIC_PARTITIONS
from nova_projector_readmodel.entrypoints.consumer import (
    ProjectorSettings as ReadModelSettings,
)
from nova_projector_search.entrypoints.consumer import (
    ProjectorSettings as SearchSettings,
)
from nova_query_api.settings import QueryApiSettings
from nova_transcriber.settings import TranscriberSettings

from ..process_settings import INIT, SETTINGS_OF, env_name, load, unread_variables

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "aws")
sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import SERVICES  # noqa: E402

KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "nova"
INIT_JOB = INIT
SECRET = "nova-secrets"
EGRESS_PREFIX = "egress.nova/"
# Per workload: its package (image nova/<package>), the settings class that
# reads its environment, and the backends it talks to (its egress labels).
#   aws: DynamoDB, Streams, S3, EventBridge; the others name themselves.


@dataclass(frozen=True)
class Workload:
    package: str
    egress: frozenset[str]


def _workload(package: str, *egress: str) -> Workload:
    return Workload(package, frozenset(egress))


WORKLOADS: dict[str, Workload] = {
    "command-api": _workload("command-api", "aws"),
    "relay": _workload("command-api", "aws", "kafka"),
    "projector-readmodel": _workload("projector-readmodel", "aws", "kafka", "redis"),
    "projector-search": _workload("projector-search", "aws", "kafka", "opensearch"),
    "integration": _workload("integration", "aws", "kafka", "webhooks"),
    "query-api": _workload("query-api", "aws", "opensearch", "redis"),
    "transcriber": _workload("transcriber", "aws", "kafka", "redis"),
    INIT_JOB: _workload("command-api", "aws", "kafka", "opensearch"),
}
# The fields that locate a backend: each overlay must set them for everyone.
BACKEND_FIELDS = (
    "kafka_bootstrap_servers",
    "opensearch_url",
    "redis_url",
    "aws_region",
)
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")

Doc = dict[str, Any]


def kustomize() -> list[str]:
    """The command that renders an overlay: `kustomize build`, else kubectl's."""
    built = sorted((ROOT / ".nova" / "tools").glob("kustomize-v*"))
    found = os.environ.get("NOVA_KUSTOMIZE") or (
        str(built[-1]) if built else shutil.which("kustomize")
    )
    if found:
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    pytest.fail("no kustomize: run `make install` (it builds one with Go)")


def render(overlay: str) -> list[Doc]:
    done = subprocess.run(
        [*kustomize(), str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"kustomize {overlay} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def docs(overlay: str) -> list[Doc]:
    return render(overlay)


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[Doc]) -> dict[str, Doc]:
    """Nova's Deployments and the init Job (not the local overlay's backends)."""
    found = {**of_kind(docs, "Deployment"), **of_kind(docs, "Job")}
    return {name: d for name, d in found.items() if name in WORKLOADS}


def pod_spec(workload: Doc) -> Doc:
    return dict(workload["spec"]["template"]["spec"])


def pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def containers(workload: Doc) -> list[Doc]:
    return list(pod_spec(workload)["containers"])


def config_map(docs: list[Doc], container: Doc) -> dict[str, str]:
    maps = of_kind(docs, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"{container['name']}: envFrom other than a ConfigMap: {source}"
        assert ref["name"] in maps, f"{container['name']}: no ConfigMap {ref['name']}"
        values.update(maps[ref["name"]].get("data", {}))
    return values


def environment(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's variables, secrets standing in as 32-character values."""
    values = config_map(docs, container)
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET, f"{entry['name']}: secret {ref['name']}"
            assert ref["key"] == entry["name"], entry
            values[entry["name"]] = "s" * 32
    return values


def named_ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}


def routes(name: str) -> set[str]:
    """The paths the workload's own HTTP app serves (no backend is contacted)."""
    app: Any
    if name == "command-api":
        from nova_command_api.entrypoints.http import create_app as command_app

        app = command_app(CommandApiSettings(jwt_secret="s" * 32))
    elif name == "relay":
        from nova_command_api.entrypoints.relay import create_app as relay_app

        app = relay_app(CommandApiSettings())
    elif name == "query-api":
        from nova_query_api.entrypoints.http import create_app as query_app

        app = query_app(QueryApiSettings(jwt_secret="s" * 32), grpc=False)
    else:
        return consumer_routes(name)
    return {str(route.path) for route in app.routes if hasattr(route, "path")}


def consumer_routes(name: str) -> set[str]:
    app: Any
    if name == "projector-readmodel":
        from nova_projector_readmodel.entrypoints.consumer import create_app as rm

        app = rm(ReadModelSettings())
    elif name == "projector-search":
        from nova_projector_search.entrypoints.consumer import create_app as ps

        app = ps(SearchSettings())
    elif name == "integration":
        from nova_integration.entrypoints.consumer import create_app as integration

        app = integration(IntegrationSettings())
    else:
        from nova_transcriber.entrypoints.consumer import create_app as transcriber

        app = transcriber(TranscriberSettings(jwt_secret="s" * 32))
    return {str(path) for path, _ in app.routes}


def scripts(package: str) -> set[str]:
    found: set[str] = set()
    for folder in (ROOT / "services" / package, ROOT / "libs" / "platform"):
        with (folder / "pyproject.toml").open("rb") as f:
            found |= set(tomllib.load(f)["project"].get("scripts", {}))
    return found


def each_container(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(docs, kind).items():
            for container in containers(workload):
                yield name, container


# --- the render itself -----------------------------------------------------


def test_every_object_is_valid_for_kubernetes(docs: list[Doc]) -> None:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_everything_is_in_nova_s_namespace(docs: list[Doc]) -> None:
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]


def test_every_process_is_deployed_once(docs: list[Doc]) -> None:
    deployed = {**of_kind(docs, "Deployment"), **of_kind(docs, "Job")}
    assert set(WORKLOADS) <= set(deployed)
    assert {s.name for s in SERVICES} == set(of_kind(docs, "Deployment")) & set(
        WORKLOADS
    )
    assert of_kind(docs, "Job")[INIT_JOB]["spec"]["template"]["spec"][
        "restartPolicy"
    ] in ("OnFailure", "Never")


def test_no_secret_value_is_in_the_repository(docs: list[Doc]) -> None:
    assert not of_kind(docs, "Secret"), "Secrets come from outside the repository"
    for name, config in of_kind(docs, "ConfigMap").items():
        data = config.get("data", {})
        emulator = bool(data.get("NOVA_AWS_ENDPOINT_URL"))
        for key in data:
            if emulator and key == "AWS_SECRET_ACCESS_KEY":
                continue  # moto's placeholder, which opens only the emulator
            assert not any(w in key for w in SECRET_WORDS), f"{name}: {key}"
    for name, container in each_container(docs):
        for entry in container.get("env", []):
            if any(word in entry["name"] for word in SECRET_WORDS):
                assert "valueFrom" in entry, f"{name}: {entry['name']} is inline"


# --- each workload against its package ---------------------------------------


def test_every_variable_is_one_the_process_reads(docs: list[Doc]) -> None:
    for name, workload in workloads(docs).items():
        for container in containers(workload):
            unknown = unread_variables(SETTINGS_OF[name], environment(docs, container))
            assert not unknown, f"{name} does not read {sorted(unknown)}"


def test_the_settings_load_from_the_environment_given(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process's settings validate with exactly its container's variables."""
    for name, workload in workloads(docs).items():
        settings = SETTINGS_OF[name]
        for container in containers(workload):
            given = environment(docs, container)
            loaded = load(settings, given, monkeypatch)
            for field in BACKEND_FIELDS:
                assert env_name(settings, field) in given, f"{name}: {field}"
            if name in ("command-api", "query-api"):
                assert loaded.jwt_secret or loaded.jwt_jwks_url, name
            if isinstance(loaded, TranscriberSettings):
                assert loaded.jwt_secret or loaded.transcriber_token, name


# The processes that seal or open personal data (the relay forwards it sealed).
KEY_HOLDERS = frozenset(
    {
        "command-api",
        "projector-readmodel",
        "projector-search",
        "integration",
        "query-api",
        "transcriber",
    }
)


def test_each_reader_of_personal_data_has_one_key_encryption_key(
    docs: list[Doc], overlay: str
) -> None:
    wrapper = "NOVA_KMS_KEY_ID" if overlay == "aws" else "NOVA_MASTER_KEY"
    for name, container in each_container(docs):
        env = environment(docs, container)
        given = {"NOVA_MASTER_KEY", "NOVA_KMS_KEY_ID"} & set(env)
        if name in KEY_HOLDERS:
            assert given == {wrapper}, f"{name} wraps data keys with {given}"
        else:
            assert "NOVA_MASTER_KEY" not in env, f"{name} needs no master key"


def test_ports_are_the_ones_the_settings_open(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    for service in SERVICES:
        [container] = containers(deployments[service.name])
        env = environment(docs, container)
        ports = named_ports(container)
        assert int(env[service.port_env]) == ports["http"], service.name
        if service.grpc_port_env:
            assert int(env[service.grpc_port_env]) == ports["grpc"], service.name
        else:
            assert set(ports) == {"http"}, service.name
        annotations = deployments[service.name]["spec"]["template"]["metadata"].get(
            "annotations", {}
        )
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == ports["http"]
            assert annotations["prometheus.io/path"] in routes(service.name)


def test_probes_ask_what_the_service_serves(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    for service in SERVICES:
        [container] = containers(deployments[service.name])
        ports = named_ports(container)
        served = routes(service.name)
        for kind in PROBES:
            probe = container.get(kind)
            assert probe, f"{service.name} has no {kind}"
            if "httpGet" in probe:
                path = probe["httpGet"]["path"].partition("?")[0]
                assert path in served, f"{service.name} {kind}: no route {path}"
                port = probe["httpGet"]["port"]
                assert port in ports or port in ports.values(), (service.name, kind)
            else:
                # Only query-api has a gRPC port, and gRPC health on it.
                assert "grpc" in probe, f"{service.name} {kind}: {probe}"
                assert probe["grpc"]["port"] == ports["grpc"], service.name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_each_workload_runs_a_script_of_its_own_image(docs: list[Doc]) -> None:
    for name, workload in workloads(docs).items():
        package = WORKLOADS[name].package
        [container] = containers(workload)
        image = container["image"].rpartition(":")[0] or container["image"]
        assert image.endswith(f"nova/{package}"), f"{name}: {container['image']}"
        command = (container.get("command") or [f"nova-{package}"])[0]
        assert command in scripts(package), f"{name}: {command} not in {package}"
        if name in {s.name for s in SERVICES}:
            expected = {s.name: s.command for s in SERVICES}[name]
            assert command == expected, name


def test_every_container_has_requests_and_limits(docs: list[Doc]) -> None:
    for name, container in each_container(docs):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for what in ("cpu", "memory"):
                assert what in resources.get(bound, {}), f"{name}: {bound}.{what}"


def test_every_pod_meets_the_restricted_pod_security_standard(
    docs: list[Doc],
) -> None:
    namespace = of_kind(docs, "Namespace")[NAMESPACE]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(docs, kind).items():
            spec = pod_spec(workload)
            pod = spec.get("securityContext", {})
            assert pod.get("runAsNonRoot") is True, name
            assert pod.get("runAsUser", 1) != 0, name
            assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            assert spec.get("automountServiceAccountToken") is False, name
            for container in spec["containers"]:
                context = container.get("securityContext", {})
                assert context.get("allowPrivilegeEscalation") is False, name
                assert context.get("capabilities", {}).get("drop") == ["ALL"], name


# --- scaling, disruption, services -------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_services_reach_a_deployment_on_a_named_port(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    for name, service in of_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        matched = [d for d in deployments.values() if selects(selector, pod_labels(d))]
        assert len(matched) == 1, f"Service {name} selects {len(matched)} pods"
        ports: dict[str, int] = {}
        for container in containers(matched[0]):
            ports |= named_ports(container)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: {port['targetPort']}"
            assert ports[port["targetPort"]] == port["port"], name


def test_only_the_apis_autoscale_on_cpu(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    scaled = set()
    for name, hpa in of_kind(docs, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        deployment = deployments[target["name"]]
        assert "replicas" not in deployment["spec"], f"{name} fights the HPA"
        assert pod_labels(deployment)["app.kubernetes.io/component"] == "api"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        scaled.add(target["name"])
    assert scaled == {"command-api", "query-api"}


def test_consumers_never_outnumber_the_partitions(docs: list[Doc]) -> None:
    for name, deployment in of_kind(docs, "Deployment").items():
        if pod_labels(deployment).get("app.kubernetes.io/component") == "consumer":
            replicas = deployment["spec"].get("replicas", 1)
            assert 1 <= replicas <= EVENTS_TOPIC_PARTITIONS, name


def test_every_deployment_has_a_disruption_budget(docs: list[Doc]) -> None:
    budgets = of_kind(docs, "PodDisruptionBudget")
    for name, deployment in of_kind(docs, "Deployment").items():
        if name not in WORKLOADS:
            continue
        covering = [
            b
            for b in budgets.values()
            if selects(b["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} budgets"
        # One replica at a time may go: a budget of 0 would block node drains.
        assert covering[0]["spec"].get("maxUnavailable") == 1, name


# --- network policies --------------------------------------------------------


def policies(docs: list[Doc]) -> dict[str, Doc]:
    return of_kind(docs, "NetworkPolicy")


def test_everything_starts_closed(docs: list[Doc]) -> None:
    deny = [
        p
        for p in policies(docs).values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny policy"


def test_each_workload_asks_for_exactly_the_backends_it_uses(
    docs: list[Doc],
) -> None:
    for name, workload in workloads(docs).items():
        labels = pod_labels(workload)
        asked = {
            k.removeprefix(EGRESS_PREFIX)
            for k, v in labels.items()
            if k.startswith(EGRESS_PREFIX) and v == "true"
        }
        assert asked == WORKLOADS[name].egress, name


def test_every_egress_label_is_granted_a_path(docs: list[Doc]) -> None:
    asked = {label for w in WORKLOADS.values() for label in w.egress}
    for label in asked:
        key = EGRESS_PREFIX + label
        granted = [
            p
            for p in policies(docs).values()
            if p["spec"]["podSelector"].get("matchLabels", {}).get(key) == "true"
            and p["spec"].get("egress")
        ]
        assert granted, f"nothing grants {key}"


def test_backends_in_the_namespace_admit_only_their_clients() -> None:
    docs = render("local")
    backends = {
        name: d
        for name, d in of_kind(docs, "Deployment").items()
        if pod_labels(d).get("app.kubernetes.io/component") == "backend"
    }
    assert set(backends) == {"kafka", "opensearch", "moto", "redis"}
    label_of = {"kafka": "kafka", "opensearch": "opensearch", "moto": "aws"}
    label_of["redis"] = "redis"
    for name, deployment in backends.items():
        ingress = [
            rule
            for p in policies(docs).values()
            if selects(
                p["spec"]["podSelector"].get("matchLabels", {}), pod_labels(deployment)
            )
            for rule in p["spec"].get("ingress", [])
        ]
        assert ingress, f"{name} admits nobody"
        for rule in ingress:
            sources = [
                s.get("podSelector", {}).get("matchLabels", {}) for s in rule["from"]
            ]
            assert {EGRESS_PREFIX + label_of[name]: "true"} in sources, name


def test_the_apis_are_open_and_the_rest_only_to_monitoring(docs: list[Doc]) -> None:
    by_selected: dict[str, list[Doc]] = {}
    for policy in policies(docs).values():
        for name, workload in workloads(docs).items():
            if _selected(policy, pod_labels(workload)):
                by_selected.setdefault(name, []).append(policy)
    for name in WORKLOADS:
        if name == INIT_JOB:
            continue
        rules = [
            rule
            for p in by_selected.get(name, [])
            for rule in p["spec"].get("ingress", [])
        ]
        assert rules, f"{name}: nothing may reach it, not even Prometheus"
        open_to_all = any("from" not in rule for rule in rules)
        assert open_to_all == (name in ("command-api", "query-api")), name


def _selected(policy: Doc, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if selector == {}:
        return True
    if selector.get("matchLabels") and not selects(selector["matchLabels"], labels):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
    return True


# --- what only AWS has -------------------------------------------------------


def test_aws_uses_iam_roles_and_the_identity_provider() -> None:
    docs = render("aws")
    for name, account in of_kind(docs, "ServiceAccount").items():
        role = (
            account["metadata"]
            .get("annotations", {})
            .get("eks.amazonaws.com/role-arn", "")
        )
        assert role.startswith("arn:aws:iam::"), name
    config = of_kind(docs, "ConfigMap")
    [data] = [c.get("data", {}) for c in config.values()]
    assert data["NOVA_JWT_JWKS_URL"].startswith("https://")
    assert "NOVA_AWS_ENDPOINT_URL" not in data
    for name, container in each_container(docs):
        env = environment(docs, container)
        names = set(env)
        if "kafka" in WORKLOADS[name].egress:
            assert env["NOVA_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert "NOVA_JWT_SECRET" not in names, f"{name} holds a signing secret"
        assert "AWS_ACCESS_KEY_ID" not in names, f"{name}: use the IAM role"


def test_the_relay_has_a_standby_on_aws() -> None:
    deployments = of_kind(render("aws"), "Deployment")
    assert deployments["relay"]["spec"]["replicas"] == 2
