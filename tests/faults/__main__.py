"""`make faults`: SIGKILL Nova's services and the broker under load, then check.

    python -m tests.faults [--cycles 30] [--rate 1] [--seed 1] [--keep-stack]

The run kills the broker, so it uses a local stack of its own (state under
`.nova/faults/stack`, Kafka on 19092, OpenSearch on 19200, moto on 15000,
Redis on 16379: below the ephemeral port range, so no client connection holds
them), never the one `make run` and the tests use. `NOVA_STACK_*`
variables override those settings. If this run started the stack, it stops it
at the end and removes its data (`stack.py clean`), unless `--keep-stack`.
Exit status 0 only if every invariant held over at least `--cycles` kill
cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from nova_platform.personal import DEV_MASTER_KEY
from nova_platform.settings import NovaSettings

from ..backends import FAKE_AWS, ROOT, STACK
from .broker import Broker
from .scenario import FaultPlan, run_faults

FAULTS_HOME = ROOT / ".nova" / "faults"
FAULTS_STACK = {
    "NOVA_STACK_HOME": str(FAULTS_HOME / "stack"),
    "NOVA_STACK_KAFKA_PORT": "19092",
    "NOVA_STACK_KAFKA_CONTROLLER_PORT": "19093",
    "NOVA_STACK_OPENSEARCH_PORT": "19200",
    "NOVA_STACK_OPENSEARCH_TRANSPORT_PORT": "19300",
    "NOVA_STACK_MOTO_PORT": "15000",
    "NOVA_STACK_REDIS_PORT": "16379",
}


def say(line: str) -> None:
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
    sys.stdout.flush()


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cycles", type=int, default=30, help="kill cycles (30)")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="audio histories started per second"
    )
    parser.add_argument("--seed", type=int, default=1, help="of the kill order")
    parser.add_argument(
        "--keep-stack", action="store_true", help="leave the faults stack running"
    )
    args = parser.parse_args(argv)
    # The topic tail's client reports every failed fetch while the broker is
    # down, which is the point of the run.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    env = {
        **os.environ,
        **FAULTS_STACK,
        **{k: v for k, v in os.environ.items() if k.startswith("NOVA_STACK_")},
    }
    was_running = stack(env, "status").returncode == 0
    say(f"starting the faults stack in {env['NOVA_STACK_HOME']} ...")
    started = stack(env, "start")
    if started.returncode != 0:
        sys.stderr.write(started.stdout + started.stderr)
        return 1
    backends_env = {
        **dict(
            line.removeprefix("export ").split("=", 1)
            for line in stack(env, "env").stdout.splitlines()
            if line.startswith("export ")
        ),
        **FAKE_AWS,
        "NOVA_MASTER_KEY": os.environ.get("NOVA_MASTER_KEY", DEV_MASTER_KEY),
    }
    suffix = "f" + uuid.uuid4().hex[:8]
    secret = "faults-" + uuid.uuid4().hex
    settings = NovaSettings(
        kafka_bootstrap_servers=backends_env["NOVA_KAFKA_BOOTSTRAP_SERVERS"],
        aws_endpoint_url=backends_env["NOVA_AWS_ENDPOINT_URL"],
        opensearch_url=backends_env["NOVA_OPENSEARCH_URL"],
        redis_url=backends_env["NOVA_REDIS_URL"],
        resource_suffix=suffix,
        jwt_secret=secret,
        master_key=backends_env["NOVA_MASTER_KEY"],
    )
    for key, value in FAKE_AWS.items():
        os.environ.setdefault(key, value)
    logs = FAULTS_HOME / "logs" / suffix
    plan = FaultPlan(cycles=args.cycles, rate=args.rate, seed=args.seed)
    say(f"run {suffix}: {plan.cycles} cycles over {', '.join(plan.targets)}")
    say(f"service logs in {logs}")
    try:
        broker = Broker(settings.kafka_bootstrap_servers, env)
        report = asyncio.run(
            run_faults(settings, backends_env, secret, plan, Path(logs), broker, say)
        )
    finally:
        if not was_running and not args.keep_stack:
            # Its data goes with it: each run's broker then recovers only its
            # own partitions after a kill.
            say("stopping the faults stack and removing its data ...")
            stack(env, "clean")
    sys.stdout.write(report.describe() + "\n")
    if len(report.cycles) < args.cycles:
        say(f"only {len(report.cycles)} of {args.cycles} cycles ran within the bound")
        return 1
    say("every invariant held" if report.passed else "INVARIANTS BROKEN")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
