"""Nova's services as local processes: what `make run` and the e2e tests start.

Stdlib only. Each service is its own process with its own port, reading the
same `NOVA_*` settings it would read in a container.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Service:
    name: str
    command: str
    port_env: str
    default_port: int
    grpc_port_env: str | None = None
    default_grpc_port: int | None = None


SERVICES: tuple[Service, ...] = (
    Service("command-api", "nova-command-api", "NOVA_HTTP_PORT", 8001),
    Service("relay", "nova-relay", "NOVA_RELAY_HEALTH_PORT", 8010),
    Service("projector-readmodel", "nova-projector-readmodel", "NOVA_HTTP_PORT", 8011),
    Service("projector-search", "nova-projector-search", "NOVA_HTTP_PORT", 8012),
    Service("integration", "nova-integration", "NOVA_HTTP_PORT", 8013),
    Service(
        "query-api", "nova-query-api", "NOVA_HTTP_PORT", 8002, "NOVA_GRPC_PORT", 50051
    ),
    Service("transcriber", "nova-transcriber", "NOVA_HTTP_PORT", 8014),
)


@dataclass
class RunningService:
    service: Service
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    grpc_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_services(
    bin_dir: Path,
    env: dict[str, str],
    log_dir: Path,
    ports: dict[str, int] | None = None,
    services: tuple[Service, ...] = SERVICES,
    grpc_ports: dict[str, int] | None = None,
) -> list[RunningService]:
    """Start each service with `env` and its port; logs go to `log_dir/<name>.log`.

    A service with a gRPC port (query-api) gets `grpc_ports[name]`, else its
    default when it runs on its default port (`make run`), else a free one, so
    tests that pick their own ports never collide on it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    running: list[RunningService] = []
    for service in services:
        port = (ports or {}).get(service.name, service.default_port)
        extra_env: dict[str, str] = {}
        grpc_port: int | None = None
        if service.grpc_port_env is not None:
            grpc_port = (grpc_ports or {}).get(service.name) or (
                service.default_grpc_port
                if port == service.default_port
                else _free_port()
            )
            extra_env[service.grpc_port_env] = str(grpc_port)
        log_path = log_dir / f"{service.name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            [str(bin_dir / service.command)],
            env={
                **os.environ,
                **env,
                **extra_env,
                service.port_env: str(port),
                "NOVA_HTTP_HOST": "127.0.0.1",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running.append(RunningService(service, port, process, log_path, log, grpc_port))
    return running


def wait_healthy(running: list[RunningService], timeout: float = 60.0) -> None:
    """Wait until every service answers `/healthz`; raise with its log if not."""
    deadline = time.monotonic() + timeout
    pending = list(running)
    while pending:
        for item in list(pending):
            if item.process.poll() is not None:
                raise RuntimeError(
                    f"{item.service.name} exited with {item.process.returncode}:\n"
                    f"{item.log_tail()}"
                )
            if item.healthy():
                pending.remove(item)
        if pending and time.monotonic() > deadline:
            names = ", ".join(i.service.name for i in pending)
            raise RuntimeError(
                f"not healthy after {timeout:.0f}s: {names}\n{pending[0].log_tail()}"
            )
        if pending:
            time.sleep(0.2)


def stop_services(running: list[RunningService]) -> None:
    for item in reversed(running):
        item.stop()
