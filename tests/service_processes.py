"""Nova's services as processes for the end-to-end tests, started by the same
code as `make run` (`deploy/local/processes.py`)."""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from .backends import ROOT
from .net import free_port

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import (
    SERVICES,
    RunningService,
    start_services,
    stop_services,
    wait_healthy,
)

__all__ = [
    "BIN",
    "SERVICES",
    "RunningService",
    "running_services",
    "start_services",
    "stop_services",
    "wait_healthy",
]

BIN = Path(sys.executable).parent
"""Where the services' console scripts are: the virtualenv of the tests."""


@contextmanager
def running_services(
    request: pytest.FixtureRequest,
    env: Mapping[str, str],
    logs: Path,
    names: Collection[str] | None = None,
    *,
    ports: Mapping[str, int] | None = None,
    timeout: float = 120.0,
) -> Iterator[dict[str, RunningService]]:
    """The services `names` (all by default) running with `env`, each healthy,
    by name; every one stopped at the end, also one a test put in the dict in
    place of the one it stopped. When a test of the session failed, the tail of
    each log is printed.

    `ports` may give a service its HTTP port (e.g. one named in `env`); the
    others get free ones, and so does query-api's gRPC.
    """
    wanted = tuple(s for s in SERVICES if names is None or s.name in names)
    chosen = {s.name: free_port() for s in wanted} | dict(ports or {})
    running = start_services(BIN, dict(env), logs, chosen, wanted)
    by_name = {r.service.name: r for r in running}
    try:
        wait_healthy(running, timeout=timeout)
        yield by_name
    finally:
        current = list(by_name.values())
        stop_services(current)
        for item in current if request.session.testsfailed else ():
            sys.stderr.write(
                f"--- {item.service.name} log tail ---\n{item.log_tail(30)}\n"
            )
