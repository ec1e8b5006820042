"""SIGKILL and restart the local stack's Kafka broker, on its own log.

The broker is the `kafka` component of `deploy/local/stack.py`, found through
the same `NOVA_STACK_*` variables the stack was started with. A kill leaves its
data folder alone, so the restarted broker recovers from its log, as a broker
process that crashed would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from ..backends import ROOT, STACK

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from stack import Kafka, Settings

RESTART_TIMEOUT_S = 180.0


class BrokerNotControllableError(RuntimeError):
    """Raised when the broker the services use is not the local stack's Kafka."""


class Broker:
    """The local stack's Kafka: kill it, start it again, make sure it runs."""

    def __init__(self, bootstrap_servers: str, environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        self._kafka = Kafka(Settings.from_env(self._environ))
        if self._kafka.endpoint != bootstrap_servers:
            raise BrokerNotControllableError(
                f"the services use Kafka at {bootstrap_servers}, but the local "
                f"stack's broker (NOVA_STACK_HOME={self._kafka.settings.home}) "
                f"listens at {self._kafka.endpoint}; start the stack with the "
                "matching NOVA_STACK_* variables to let the broker be killed"
            )
        if self._kafka.pid() is None:
            raise BrokerNotControllableError(
                f"no broker of the local stack runs under {self._kafka.settings.home}"
            )
        self.data = self._kafka.data

    @property
    def endpoint(self) -> str:
        return self._kafka.endpoint

    def pid(self) -> int | None:
        return self._kafka.pid()

    def kill(self) -> None:
        """SIGKILL the broker's process group and wait until it is gone."""
        pid = self._kafka.signal(signal.SIGKILL)
        if pid is None:
            raise RuntimeError("the broker was not running when it was to be killed")
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and self._kafka.pid() == pid:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker (pid {pid}) outlived SIGKILL by 30 s")
            time.sleep(0.05)

    def start(self) -> None:
        """`stack.py start kafka`: the broker on its log, once it answers.

        A broker killed with many partitions recovers each of them first,
        which can outlast `stack.py`'s own wait: then this waits on.
        """
        done = subprocess.run(
            [sys.executable, str(STACK), "start", "kafka"],
            env=self._environ,
            capture_output=True,
            text=True,
            timeout=RESTART_TIMEOUT_S,
            check=False,
        )
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while done.returncode != 0 and not self._kafka.healthy():
            if self._kafka.pid() is None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the broker did not start again:\n{done.stdout}{done.stderr}"
                )
            time.sleep(0.5)

    def ensure_running(self) -> None:
        """Start the broker unless it runs and answers (a finalizer's job)."""
        if self._kafka.pid() is None or not self._kafka.healthy():
            self.start()
