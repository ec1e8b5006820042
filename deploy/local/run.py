"""`make run`: the local stack, Nova's resources and every service, until Ctrl-C.

Run with the workspace's Python (`.venv/bin/python deploy/local/run.py`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from processes import start_services, stop_services, wait_healthy

from nova_platform.auth.dev_token import DEV_SECRET
from nova_platform.personal import DEV_MASTER_KEY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "stack.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    started = stack("start")
    print(started.stdout, end="")
    if started.returncode != 0:
        print(started.stderr, file=sys.stderr)
        return started.returncode
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in stack("env").stdout.splitlines()
        if line.startswith("export ")
    )
    env.setdefault("NOVA_JWT_SECRET", os.environ.get("NOVA_JWT_SECRET", DEV_SECRET))
    # Wraps the users' data keys; public, like the JWT secret: development only.
    env.setdefault("NOVA_MASTER_KEY", os.environ.get("NOVA_MASTER_KEY", DEV_MASTER_KEY))
    # A development machine's webhook receivers listen on loopback.
    env.setdefault(
        "NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS",
        os.environ.get("NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
    )
    subprocess.run([str(BIN / "nova-init")], env={**os.environ, **env}, check=True)

    log_dir = ROOT / ".nova" / "run" / "logs"
    running = start_services(BIN, env, log_dir)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        wait_healthy(running, timeout=120)
        print("\nNova is running (logs in .nova/run/logs/):")
        for item in running:
            print(f"  {item.service.name:<20} {item.url}")
        print("  command API docs     http://127.0.0.1:8001/commands/docs")
        print("  query API docs       http://127.0.0.1:8002/queries/docs")
        print("Press Ctrl-C to stop the services and the stack.")
        while not stopping:
            for item in running:
                if item.process.poll() is not None:
                    print(
                        f"{item.service.name} exited:\n{item.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    finally:
        print("\nstopping services ...")
        stop_services(running)
        print(stack("stop").stdout, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
