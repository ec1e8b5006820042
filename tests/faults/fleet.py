"""Nova's services as processes that a fault script kills and starts again.

Each service keeps its port across restarts, so clients (the load generator,
the invariant checker) keep their URLs; its log grows across restarts.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from ..backends import ROOT

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import (
    SERVICES,
    RunningService,
    start_services,
    stop_services,
    wait_healthy,
)

from ..net import free_port

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0


class Fleet:
    """The running services by name; `kill` and `restart` one at a time."""

    def __init__(self, names: tuple[str, ...], env: dict[str, str], logs: Path):
        self._env = env
        self._logs = logs
        self._wanted = tuple(s for s in SERVICES if s.name in names)
        missing = set(names) - {s.name for s in self._wanted}
        if missing:
            raise ValueError(f"unknown services {sorted(missing)}")
        self._ports = {s.name: free_port() for s in self._wanted}
        self.running: dict[str, RunningService] = {}
        self.exited_by_themselves: list[str] = []
        self.restarted_unhealthy: list[str] = []

    def start(self) -> None:
        started = start_services(BIN, self._env, self._logs, self._ports, self._wanted)
        self.running = {r.service.name: r for r in started}
        wait_healthy(started, timeout=START_TIMEOUT_S)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._ports[name]}"

    def kill(self, name: str) -> None:
        """SIGKILL the service's process group (no shutdown hook runs)."""
        item = self.running[name]
        if item.process.poll() is None:
            os.killpg(item.process.pid, signal.SIGKILL)
        item.process.wait()
        item.log_file.close()

    def restart(self, name: str) -> None:
        """Start the service again on its port and wait until it is healthy."""
        item = self.running[name]
        if item.process.poll() is None:
            raise RuntimeError(f"{name} still runs; kill it first")
        (again,) = start_services(
            BIN, self._env, self._logs, {name: item.port}, (item.service,)
        )
        self.running[name] = again
        wait_healthy([again], timeout=START_TIMEOUT_S)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every service is healthy, as a liveness probe would.

        A service that exited by itself is started again; one that stays
        unhealthy for `timeout` is killed and started again. Both are noted
        in `exited_by_themselves` / `restarted_unhealthy`.
        """
        for name, item in list(self.running.items()):
            if item.process.poll() is not None:
                self.exited_by_themselves.append(
                    f"{name} (exit {item.process.returncode})"
                )
                item.log_file.close()
                self.restart(name)
        deadline = time.monotonic() + timeout
        pending = [n for n, item in self.running.items() if not item.healthy()]
        while pending and time.monotonic() < deadline:
            time.sleep(0.2)
            pending = [n for n in pending if not self.running[n].healthy()]
        for name in pending:
            self.restarted_unhealthy.append(name)
            self.kill(name)
            self.restart(name)

    def stop(self) -> None:
        stop_services(list(self.running.values()))

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name} log tail ---\n{item.log_tail(lines)}"
            for name, item in self.running.items()
        )
