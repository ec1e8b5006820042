#!/usr/bin/env python3
"""Local backend stack for Nova: Kafka, OpenSearch, moto and Redis as processes.

Usage::

    python3 deploy/local/stack.py COMMAND [COMPONENT ...]

Commands:
    install  download, copy or compile what is missing (idempotent)
    start    install if needed, start what is not running, wait until ready
    stop     stop what the stack started (``--clean`` also removes data)
    status   one line per component; exit 0 only if all are healthy
    env      print ``export NAME=value`` lines for the services
    clean    stop, then remove the data folders (keeps installed jars)

Components (default: all): kafka, opensearch, moto, redis.

Settings come from the environment: ``NOVA_STACK_HOME`` (state folder, default
``<repo>/.nova/stack``), ``NOVA_STACK_PYTHON`` (a Python with moto installed)
and the ports ``NOVA_STACK_KAFKA_PORT``, ``NOVA_STACK_KAFKA_CONTROLLER_PORT``,
``NOVA_STACK_OPENSEARCH_PORT``, ``NOVA_STACK_OPENSEARCH_TRANSPORT_PORT``,
``NOVA_STACK_MOTO_PORT`` and ``NOVA_STACK_REDIS_PORT``.

This script only uses the standard library: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOG_TAIL_LINES = 30
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.25
HOST = "127.0.0.1"


class StackError(Exception):
    """A failure to report to the user; the message says what to do."""


@dataclass(frozen=True)
class Settings:
    """Where the stack keeps its state and which ports it uses."""

    home: Path
    kafka_port: int
    kafka_controller_port: int
    opensearch_port: int
    opensearch_transport_port: int
    moto_port: int
    redis_port: int
    python: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the settings from environment variables, with defaults."""

        def port(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name}={raw!r} is not a port number (1-65535)")
            return int(raw)

        ports = {
            name: port(name, default)
            for name, default in (
                ("NOVA_STACK_KAFKA_PORT", 9092),
                ("NOVA_STACK_KAFKA_CONTROLLER_PORT", 9093),
                ("NOVA_STACK_OPENSEARCH_PORT", 9200),
                ("NOVA_STACK_OPENSEARCH_TRANSPORT_PORT", 9300),
                ("NOVA_STACK_MOTO_PORT", 5000),
                ("NOVA_STACK_REDIS_PORT", 6379),
            )
        }
        by_port: dict[int, list[str]] = {}
        for name, number in ports.items():
            by_port.setdefault(number, []).append(name)
        clashes = [names for names in by_port.values() if len(names) > 1]
        if clashes:
            raise StackError(
                "each component needs its own port, but "
                + "; ".join(" and ".join(names) + " are equal" for names in clashes)
            )
        home = environ.get("NOVA_STACK_HOME") or str(REPO / ".nova" / "stack")
        python = environ.get("NOVA_STACK_PYTHON") or None
        if python is None and (REPO / ".venv" / "bin" / "python").exists():
            python = str(REPO / ".venv" / "bin" / "python")
        return cls(
            home=Path(home).expanduser().resolve(),
            kafka_port=ports["NOVA_STACK_KAFKA_PORT"],
            kafka_controller_port=ports["NOVA_STACK_KAFKA_CONTROLLER_PORT"],
            opensearch_port=ports["NOVA_STACK_OPENSEARCH_PORT"],
            opensearch_transport_port=ports["NOVA_STACK_OPENSEARCH_TRANSPORT_PORT"],
            moto_port=ports["NOVA_STACK_MOTO_PORT"],
            redis_port=ports["NOVA_STACK_REDIS_PORT"],
            python=python,
        )

    @property
    def logs(self) -> Path:
        """Folder of the components' log files."""
        return self.home / "logs"

    @property
    def run(self) -> Path:
        """Folder of the pidfiles."""
        return self.home / "run"


# --------------------------------------------------------------------------
# Small helpers: processes, ports, files, tools.


def _process_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _port_free(port: int) -> bool:
    """True if a server could listen on ``HOST:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> str:
    """Describe the process listening on ``port`` (best effort, via /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if inodes:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    if str(fd.readlink()) in inodes:
                        name = _cmdline(int(proc.name)).strip() or "?"
                        return f"pid {proc.name}: {name[:80]}"
    return "owner unknown"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _stamp_ok(folder: Path, stamp: str) -> bool:
    marker = folder / ".nova-stamp"
    return marker.is_file() and marker.read_text().strip() == stamp


def _replace_folder(tmp: Path, dest: Path, stamp: str) -> None:
    """Move a freshly built ``tmp`` into place as ``dest``, marked with ``stamp``."""
    (tmp / ".nova-stamp").write_text(stamp + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _run(
    cmd: Sequence[str], what: str, hint: str, env: Mapping[str, str] | None = None
) -> None:
    """Run an install step; on failure raise with its output and ``hint``."""
    try:
        done = subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {cmd[0]} not found. {hint}") from exc
    if done.returncode != 0:
        out = "\n".join(done.stdout.decode(errors="replace").splitlines()[-40:])
        raise StackError(f"{what} failed (exit {done.returncode}):\n{out}\n{hint}")


def _tool(name: str, package: str) -> str:
    """Path of a Java/Maven tool, preferring ``$JAVA_HOME/bin``."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and name != "mvn" and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed: run `apt-get install -y {package}`")
    return found


def _java() -> str:
    return _tool("java", "openjdk-17-jdk-headless")


def _check_java() -> None:
    """Fail unless ``java`` is version 17 or newer (Kafka 4 and OpenSearch 2.19)."""
    out = subprocess.run(
        [_java(), "-version"], capture_output=True, text=True, check=False
    ).stderr
    try:
        version = out.split('"')[1]
        major = int(version.split(".")[0])
    except (IndexError, ValueError):
        return  # unknown format: let the JVM speak for itself later
    if major < 17:
        raise StackError(
            f"java {version} is too old: Kafka 4 and OpenSearch 2.19 need Java 17+; "
            "run `apt-get install -y openjdk-17-jdk-headless` or set JAVA_HOME"
        )


def _maven_libs(pom: Path, dest: Path) -> None:
    """Copy the runtime dependency jars of ``pom`` into ``dest`` unless present."""
    stamp = _digest(pom)
    if _stamp_ok(dest, stamp):
        return
    _check_java()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"installing {pom.parent.name} jars into {dest} (Maven) ...", flush=True)
    _run(
        [
            _tool("mvn", "maven"),
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        what=f"mvn dependency:copy-dependencies ({pom})",
        hint="The first install needs Maven Central (network) or a filled ~/.m2.",
    )
    _replace_folder(tmp, dest, stamp)


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url`` without any proxy; returns (status, body), status 0 if down."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return 0, b""


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise stack commands that change state (e.g. make and pytest at once)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(settings.home / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"waiting for another stack.py command ({settings.home / '.lock'}) ...",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Components.


class Component(ABC):
    """One backend process: how to install, start, probe and stop it."""

    name: ClassVar[str]
    marker: ClassVar[str]
    """A substring of the process's command line, to recognise our process."""
    start_timeout: ClassVar[float]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / self.name
        self.log = settings.logs / f"{self.name}.log"
        self.pidfile = settings.run / f"{self.name}.pid"

    # -- to implement ------------------------------------------------------

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where clients connect, as printed by ``start`` and ``status``."""

    @abstractmethod
    def ports(self) -> list[tuple[int, str]]:
        """The ports the process listens on, with the env var that sets each."""

    @abstractmethod
    def env(self) -> dict[str, str]:
        """Environment variables that point the services at this component."""

    @abstractmethod
    def is_installed(self) -> bool:
        """True if ``install`` has nothing to do (must be fast and offline)."""

    @abstractmethod
    def install(self) -> None:
        """Make the component runnable; does nothing if already installed."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line of the process."""

    @abstractmethod
    def healthy(self) -> bool:
        """True if the component answers a real request."""

    def prepare(self, log: IO[bytes]) -> None:
        """Write config files etc. just before the process starts (optional)."""
        del log  # nothing to prepare by default

    def data_dirs(self) -> list[Path]:
        """Folders removed by ``clean``."""
        return []

    # -- shared process handling ---------------------------------------------

    def pid(self) -> int | None:
        """Pid of our running process, or None (drops a stale pidfile)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if _process_alive(pid) and self.marker in _cmdline(pid):
            return pid
        self.pidfile.unlink(missing_ok=True)
        return None

    def busy_ports(self) -> list[str]:
        """Ports this component needs that another process holds, described."""
        return [
            f"port {port} is in use by another process ({_port_owner(port)}); "
            f"stop it or choose another port with {var}=<port>"
            for port, var in self.ports()
            if not _port_free(port)
        ]

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process detached from our session; stdout/err to the log."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        self.settings.run.mkdir(parents=True, exist_ok=True)
        if self.log.exists():
            self.log.replace(self.log.with_name(self.log.name + ".1"))
        with open(self.log, "ab") as log:
            self.prepare(log)
            try:
                proc = subprocess.Popen(
                    self.command(),
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(
                    f"{self.name}: cannot run {exc.filename}: {exc}"
                ) from exc
        self.pidfile.write_text(f"{proc.pid}\n")
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes] | None, since: float) -> None:
        """Wait until ``healthy()``; raise with the log tail on exit or timeout."""
        deadline = since + self.start_timeout
        while True:
            if self.healthy():
                return
            code = proc.poll() if proc is not None else None
            if code is not None or (proc is None and self.pid() is None):
                self.pidfile.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited (code {code}) before it was ready. "
                    f"Last {LOG_TAIL_LINES} lines of {self.log}:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} was not ready after {self.start_timeout:.0f}s "
                    f"(it is left running; `stack.py stop {self.name}` ends it). "
                    f"Last {LOG_TAIL_LINES} lines of {self.log}:\n{_tail(self.log)}"
                )
            time.sleep(POLL_INTERVAL)

    def signal(self, sig: signal.Signals) -> int | None:
        """Send ``sig`` to our process group; returns the pid, None if not running."""
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        return pid


class Kafka(Component):
    """Apache Kafka 4 in KRaft mode: one node that is broker and controller."""

    name = "kafka"
    marker = "kafka.Kafka"
    start_timeout = 90.0
    main_class = "kafka.Kafka"
    storage_tool = "kafka.tools.StorageTool"
    protocol_map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.settings.kafka_port}"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.settings.kafka_port, "NOVA_STACK_KAFKA_PORT"),
            (self.settings.kafka_controller_port, "NOVA_STACK_KAFKA_CONTROLLER_PORT"),
        ]

    def env(self) -> dict[str, str]:
        return {"NOVA_KAFKA_BOOTSTRAP_SERVERS": self.endpoint}

    @property
    def libs(self) -> Path:
        return self.dir / "libs"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def is_installed(self) -> bool:
        return _stamp_ok(self.libs, _digest(HERE / "kafka" / "pom.xml"))

    def install(self) -> None:
        _maven_libs(HERE / "kafka" / "pom.xml", self.libs)

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            _java(),
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.settings.logs}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def server_properties(self) -> str:
        """Render the broker configuration (rewritten at every start)."""
        s = self.settings
        broker = f"{HOST}:{s.kafka_port}"
        controller = f"{HOST}:{s.kafka_controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": self.protocol_map,
            "log.dirs": str(self.data),
            # One broker: every internal topic has a single replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "3",
        }
        lines = ["# Written by deploy/local/stack.py at every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def prepare(self, log: IO[bytes]) -> None:
        config = self.dir / "server.properties"
        config.write_text(self.server_properties())
        if (self.data / "meta.properties").exists():
            return
        # A Kafka cluster id is 16 random bytes in URL-safe base64, unpadded.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        log.write(f"--- formatting {self.data} (cluster id {cluster_id})\n".encode())
        log.flush()
        done = subprocess.run(
            self._java_cmd(
                self.storage_tool,
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(config),
                "--ignore-formatted",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(
                f"formatting the Kafka log dir {self.data} failed. Last "
                f"{LOG_TAIL_LINES} lines of {self.log}:\n{_tail(self.log)}"
            )
        log.write(b"--- starting the broker\n")
        log.flush()

    def command(self) -> list[str]:
        return self._java_cmd(self.main_class, str(self.dir / "server.properties"))

    def healthy(self) -> bool:
        """Send an ApiVersions (v0) request and check the broker's answer."""
        correlation_id = 0x4E6F7661
        client_id = b"nova-stack"
        body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
        try:
            with socket.create_connection((HOST, self.settings.kafka_port), 2) as sock:
                sock.settimeout(2)
                sock.sendall(struct.pack(">i", len(body)) + body)
                size = struct.unpack(">i", _recv_exact(sock, 4))[0]
                reply = _recv_exact(sock, size)
        except (OSError, struct.error):
            return False
        if len(reply) < 10:
            return False
        got_id, error, count = struct.unpack(">ihi", reply[:10])
        if got_id != correlation_id or error != 0:
            return False
        keys = {
            struct.unpack(">h", reply[10 + 6 * i : 12 + 6 * i])[0]
            for i in range(count)
            if len(reply) >= 16 + 6 * i
        }
        return 0 in keys and 1 in keys  # Produce and Fetch are served

    def data_dirs(self) -> list[Path]:
        return [self.data]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return bytes(chunks)


class OpenSearch(Component):
    """OpenSearch 2.19 from Maven Central jars, run by a small Java launcher."""

    name = "opensearch"
    marker = "NovaOpenSearchNode"
    start_timeout = 120.0
    source = HERE / "opensearch" / "NovaOpenSearchNode.java"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.settings.opensearch_port}"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.settings.opensearch_port, "NOVA_STACK_OPENSEARCH_PORT"),
            (
                self.settings.opensearch_transport_port,
                "NOVA_STACK_OPENSEARCH_TRANSPORT_PORT",
            ),
        ]

    def env(self) -> dict[str, str]:
        return {"NOVA_OPENSEARCH_URL": self.endpoint}

    @property
    def libs(self) -> Path:
        return self.dir / "libs"

    @property
    def classes(self) -> Path:
        return self.dir / "classes"

    def _classes_stamp(self) -> str:
        return _digest(HERE / "opensearch" / "pom.xml", self.source)

    def is_installed(self) -> bool:
        return _stamp_ok(
            self.libs, _digest(HERE / "opensearch" / "pom.xml")
        ) and _stamp_ok(self.classes, self._classes_stamp())

    def install(self) -> None:
        _maven_libs(HERE / "opensearch" / "pom.xml", self.libs)
        stamp = self._classes_stamp()
        if _stamp_ok(self.classes, stamp):
            return
        tmp = self.dir / "classes.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"compiling {self.source.name} into {self.classes} ...", flush=True)
        _run(
            [
                _tool("javac", "openjdk-17-jdk-headless"),
                "--release",
                "17",
                "-d",
                str(tmp),
                "-cp",
                f"{self.libs}/*",
                str(self.source),
            ],
            what="javac NovaOpenSearchNode.java",
            hint="A Java 17 JDK (javac) is needed: apt-get install -y "
            "openjdk-17-jdk-headless",
        )
        _replace_folder(tmp, self.classes, stamp)

    def prepare(self, log: IO[bytes]) -> None:
        config = self.dir / "home" / "config"
        config.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(
            HERE / "opensearch" / "log4j2.properties", config / "log4j2.properties"
        )

    def command(self) -> list[str]:
        s = self.settings
        settings = {
            "cluster.name": "nova-local",
            "node.name": "nova-local",
            "discovery.type": "single-node",
            "network.host": HOST,
            "http.port": str(s.opensearch_port),
            "transport.port": str(s.opensearch_transport_port),
            "path.home": str(self.dir / "home"),
            "path.data": str(self.dir / "data"),
            "path.logs": str(self.dir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        return [
            _java(),
            "-Xms512m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            # As in OpenSearch's own jvm.options:
            "-Djava.locale.providers=SPI,COMPAT",
            "-Dlog4j2.formatMsgNoLookups=true",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dlog4j2.disable.jmx=true",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-cp",
            f"{self.classes}:{self.libs}/*",
            "NovaOpenSearchNode",
            *(f"{key}={value}" for key, value in settings.items()),
        ]

    def healthy(self) -> bool:
        url = f"{self.endpoint}/_cluster/health?wait_for_status=yellow&timeout=1s"
        status, body = _http_get(url, timeout=5)
        if status != 200:
            return False
        try:
            health = json.loads(body)
        except ValueError:
            return False
        return health.get("status") in ("green", "yellow") and not health.get(
            "timed_out", False
        )

    def data_dirs(self) -> list[Path]:
        return [self.dir / "data", self.dir / "logs"]


class Moto(Component):
    """moto's server: DynamoDB, DynamoDB Streams and S3 on one port."""

    name = "moto"
    # moto_serialized.py (moto.server before it): both name moto.
    marker = "moto"
    start_timeout = 60.0

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.settings.moto_port}"

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.moto_port, "NOVA_STACK_MOTO_PORT")]

    def env(self) -> dict[str, str]:
        return {
            "NOVA_AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _python(self) -> str:
        python = self.settings.python
        if python is None:
            raise StackError(
                f"moto needs the project's venv ({REPO / '.venv'}), which does not "
                "exist yet: run `make install` first (or set NOVA_STACK_PYTHON to a "
                "Python that has moto[server])"
            )
        return python

    def _has_moto(self) -> bool:
        probe = (
            "import importlib.util as u, sys; "
            "sys.exit(0 if u.find_spec('moto') and u.find_spec('flask') else 1)"
        )
        try:
            done = subprocess.run(
                [self._python(), "-c", probe], capture_output=True, check=False
            )
        except OSError:
            return False
        return done.returncode == 0

    def is_installed(self) -> bool:
        return self.settings.python is not None and self._has_moto()

    def install(self) -> None:
        if not self._has_moto():
            raise StackError(
                f"{self._python()} has no moto server (moto[server]): run "
                "`make install` first (or set NOVA_STACK_PYTHON to a Python that "
                "has moto[server])"
            )

    def command(self) -> list[str]:
        # One request at a time: see moto_serialized.py for why.
        return [
            self._python(),
            str(HERE / "moto_serialized.py"),
            "-H",
            HOST,
            "-p",
            str(self.settings.moto_port),
        ]

    def healthy(self) -> bool:
        return _http_get(f"{self.endpoint}/moto-api/", timeout=2)[0] == 200


class Redis(Component):
    """Debian's redis-server, in memory only (no RDB, no AOF)."""

    name = "redis"
    marker = "redis-server"
    start_timeout = 20.0
    package = "redis-server"

    @property
    def endpoint(self) -> str:
        return f"redis://{HOST}:{self.settings.redis_port}/0"

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.redis_port, "NOVA_STACK_REDIS_PORT")]

    def env(self) -> dict[str, str]:
        return {"NOVA_REDIS_URL": self.endpoint}

    @staticmethod
    def _binary() -> str | None:
        found = shutil.which("redis-server")
        if found is None and Path("/usr/bin/redis-server").exists():
            found = "/usr/bin/redis-server"
        return found

    def is_installed(self) -> bool:
        return self._binary() is not None

    def install(self) -> None:
        if self._binary() is not None:
            return
        apt = shutil.which("apt-get")
        if os.geteuid() != 0 or apt is None:
            raise StackError(
                "redis-server is not installed: run `sudo apt-get install -y "
                "redis-server` (Debian/Ubuntu) or put a redis-server on PATH"
            )
        print("installing redis-server (apt-get) ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        hint = "Run `apt-get update && apt-get install -y redis-server` by hand."
        # Keep Debian's maintainer scripts from starting a system redis on 6379:
        # the stack runs its own. policy-rc.d is Debian's switch for that.
        policy = Path("/usr/sbin/policy-rc.d")
        added_policy = not policy.exists()
        if added_policy:
            policy.write_text(
                "#!/bin/sh\n# nova stack.py: no service starts\nexit 101\n"
            )
            policy.chmod(0o755)
        try:
            _run([apt, "update"], what="apt-get update", hint=hint, env=env)
            _run(
                [apt, "install", "-y", self.package],
                what="apt-get install redis-server",
                hint=hint,
                env=env,
            )
        finally:
            if added_policy:
                policy.unlink(missing_ok=True)
        if self._binary() is None:
            raise StackError(f"redis-server still missing after apt-get. {hint}")

    def command(self) -> list[str]:
        binary = self._binary()
        if binary is None:
            raise StackError("redis-server is not installed: run `stack.py install`")
        return [
            binary,
            "--bind",
            HOST,
            "--port",
            str(self.settings.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            "",
        ]

    def healthy(self) -> bool:
        try:
            with socket.create_connection((HOST, self.settings.redis_port), 2) as sock:
                sock.settimeout(2)
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return _recv_exact(sock, 7) == b"+PONG\r\n"
        except OSError:
            return False


COMPONENTS: dict[str, type[Component]] = {
    cls.name: cls for cls in (Kafka, OpenSearch, Moto, Redis)
}


# --------------------------------------------------------------------------
# Commands.


class Stack:
    """The requested components and the commands that act on them."""

    def __init__(self, settings: Settings, names: Sequence[str]) -> None:
        self.settings = settings
        self.components = [COMPONENTS[name](settings) for name in names]

    def install(self) -> None:
        """Install every component that is not installed yet."""
        for comp in self.components:
            if comp.is_installed():
                print(f"{comp.name:<11} already installed")
            else:
                comp.install()
                print(f"{comp.name:<11} installed")

    def start(self) -> None:
        """Start what is not running, then wait until every component is ready."""
        for comp in self.components:
            comp.install()
        pending: list[tuple[Component, subprocess.Popen[bytes] | None, float]] = []
        problems: list[str] = []
        for comp in self.components:
            if comp.pid() is not None:
                pending.append((comp, None, time.monotonic()))
                continue
            problems += [f"{comp.name}: {msg}" for msg in comp.busy_ports()]
        if problems:
            raise StackError("\n".join(problems))
        for comp in self.components:
            if comp.pid() is None:
                pending.append((comp, comp.launch(), time.monotonic()))
        order = {comp.name: i for i, comp in enumerate(self.components)}
        pending.sort(key=lambda item: order[item[0].name])
        for comp, proc, since in pending:
            comp.wait_ready(proc, since)
            how = "started" if proc is not None else "already running"
            took = f" in {time.monotonic() - since:.1f}s" if proc is not None else ""
            print(
                f"{comp.name:<11} ready  {comp.endpoint:<26} "
                f"(pid {comp.pid()}, {how}{took})",
                flush=True,
            )

    def stop(self) -> None:
        """SIGTERM what the stack started, SIGKILL what is left after a while."""
        signalled = []
        for comp in self.components:
            pid = comp.signal(signal.SIGTERM)
            if pid is None:
                comp.pidfile.unlink(missing_ok=True)
                print(f"{comp.name:<11} not running")
            else:
                signalled.append((comp, pid))
        deadline = time.monotonic() + STOP_TIMEOUT
        for comp, pid in signalled:
            while _process_alive(pid) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            how = "stopped"
            if _process_alive(pid):
                comp.signal(signal.SIGKILL)
                how = f"killed (no exit {STOP_TIMEOUT:.0f}s after SIGTERM)"
            comp.pidfile.unlink(missing_ok=True)
            print(f"{comp.name:<11} {how} (pid {pid})")

    def clean(self) -> None:
        """Stop, then remove the data folders (the installed jars stay)."""
        self.stop()
        for comp in self.components:
            for folder in comp.data_dirs():
                if folder.exists():
                    shutil.rmtree(folder)
                    print(f"{comp.name:<11} removed {folder}")

    def status(self) -> bool:
        """Print one line per component; True if all are healthy."""
        all_ok = True
        for comp in self.components:
            pid = comp.pid()
            if pid is None:
                all_ok = False
                busy = comp.busy_ports()
                note = f" ({busy[0]})" if busy else ""
                print(f"{comp.name:<11} stopped  {comp.endpoint}{note}")
                continue
            state = "healthy" if comp.healthy() else "running (not answering)"
            all_ok = all_ok and state == "healthy"
            rss = _rss_mib(pid)
            mem = f" rss={rss:.0f}MiB" if rss is not None else ""
            print(f"{comp.name:<11} {state:<8} {comp.endpoint:<26} pid={pid}{mem}")
        return all_ok

    def env(self) -> None:
        """Print ``export`` lines for the services."""
        for comp in self.components:
            for key, value in comp.env().items():
                print(f"export {key}={value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=["install", "start", "stop", "status", "env", "clean"]
    )
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=f"any of {', '.join(COMPONENTS)} (default: all)",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="with stop: also remove the data folders",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.components if name not in COMPONENTS]
    if unknown:
        parser.error(
            f"unknown component(s) {', '.join(unknown)}; "
            f"choose from {', '.join(COMPONENTS)}"
        )
    names = list(dict.fromkeys(args.components)) or list(COMPONENTS)
    try:
        stack = Stack(Settings.from_env(os.environ), names)
        if args.command == "env":
            stack.env()
            return 0
        if args.command == "status":
            return 0 if stack.status() else 1
        with _locked(stack.settings):
            if args.command == "install":
                stack.install()
            elif args.command == "start":
                stack.start()
            elif args.command == "stop" and not args.clean:
                stack.stop()
            else:
                stack.clean()
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away; nothing left to report to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
