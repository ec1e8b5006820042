"""`make bench`: every figure of BENCHMARKS.md, against raw baselines.

    python -m bench [--scale full|small] [--only PHASE,...] [--profile SERVICE,...]

Phases: domain, commands, pipeline, catchup, outbox (all by default, in that
order; `pipeline` and `catchup` use the command rate `commands` measured, or
`--command-rate` without it). The run uses a stack of its own
(`.nova/bench/stack`: Kafka on 29092, OpenSearch 29200, moto 25000, Redis
26379; `NOVA_STACK_*` variables override them), started if it is not running
and, if this run started it, stopped with its data removed at the end unless
`--keep-stack`. Results go to `bench/results/<time>/`:
summary.md (the table, runs, settings, versions, CPU and memory by phase),
results.json, the PNG plots, the services' logs and, with `--profile`,
pyinstrument's HTML profile of each named service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import environment, report
from .harness import (
    Harness,
    clean_stack,
    stack_env,
    stack_home,
    stack_pids,
    stack_running,
    use_bench_stack,
)
from .phases import Bench
from .procmon import ProcessMonitor
from .results import SCALES, Results

PHASES = ("domain", "commands", "pipeline", "catchup", "outbox")
RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("bench")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument(
        "--only", default="", help=f"comma-separated phases of: {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--profile",
        default="",
        help="comma-separated services to run under pyinstrument (HTML profiles)",
    )
    parser.add_argument(
        "--command-rate",
        type=float,
        default=20.0,
        help="commands/s assumed as the peak when the commands phase is skipped",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--keep-stack",
        action="store_true",
        help="leave the benchmarks' stack running when this run started it",
    )
    args = parser.parse_args(argv)
    chosen = [p for p in args.only.split(",") if p] or list(PHASES)
    unknown = set(chosen) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase {', '.join(sorted(unknown))}; use {PHASES}")
    args.phases = [p for p in PHASES if p in chosen]
    return args


async def _run(args: argparse.Namespace, out: Path) -> Results:
    scale = SCALES[args.scale]
    results = Results(scale)
    monitor = ProcessMonitor()
    monitor.watch("bench (load generator)", os.getpid())
    uses_stack = bool(set(args.phases) - {"domain"})
    started_stack = False
    env: dict[str, str] = {}
    if uses_stack:
        use_bench_stack()
        started_stack = not stack_running()
        print(f"stack: {stack_home()}", flush=True)
        env = stack_env()
    for name, pid in stack_pids().items():
        monitor.watch(name, pid)
    monitor.start()
    results.versions = environment.versions()
    results.settings = {
        **environment.machine(),
        "scale": scale.name,
        "rounds (A B pairs)": str(scale.pairs),
        "closed-loop concurrency": str(scale.concurrency),
        "seeds": "fixed (bench.phases.SEED, incremented per data set)",
        **environment.service_settings(),
    }
    harness = Harness(
        env, out, monitor, frozenset(p for p in args.profile.split(",") if p)
    )
    bench = Bench(harness, scale, results)
    bench.command_peak = (
        args.command_rate if "commands" not in args.phases else bench.command_peak
    )
    try:
        if uses_stack:
            results.versions.update(await environment.backend_versions(env))
            results.settings.update(environment.heap_sizes())
            base = harness.settings("")
            await harness.resources("")
            results.settings["events topic partitions"] = str(
                await environment.topic_partitions(
                    base.kafka_bootstrap_servers, base.events_topic
                )
            )
        stopping = asyncio.Event()
        phases = asyncio.create_task(_phases(args, bench, monitor, stopping))
        # A signal cancels the phases' task, never this one, so the cleanup
        # below runs with nothing left to cancel it.
        _stop_on_signals(stopping, phases)
        try:
            await phases
        except asyncio.CancelledError:
            if not stopping.is_set():
                raise
            results.notes.append("stopped by a signal")
        bench.encryption()
    finally:
        harness.stop_all()
        monitor.stop()
        await bench.close()
        if uses_stack:
            await harness.cleanup()
        if started_stack and not args.keep_stack:
            print("stopping the benchmarks' stack and removing its data ...")
            clean_stack()
    results.usage = report.usage_rows(monitor.report())
    results.settings["load average at end"] = " ".join(
        f"{x:.2f}" for x in os.getloadavg()
    )
    return results


async def _phases(
    args: argparse.Namespace,
    bench: Bench,
    monitor: ProcessMonitor,
    stopping: asyncio.Event,
) -> None:
    results = bench.results
    for phase in args.phases:
        if stopping.is_set():
            results.notes.append(f"stopped by a signal before {phase}")
            return
        started = time.monotonic()
        print(f"== {phase} ...", flush=True)
        try:
            if phase == "domain":
                monitor.phase("domain (in process)")
            await getattr(bench, phase)()
        except Exception as exc:
            logger.exception("phase %s failed", phase)
            results.notes.append(f"phase {phase} failed: {exc!r}"[:500])
            bench.h.stop_all()
        print(f"   {phase} took {time.monotonic() - started:.0f} s", flush=True)


def _stop_on_signals(stopping: asyncio.Event, phases: asyncio.Task[None]) -> None:
    """SIGINT or SIGTERM cancels the phase under way; the run then stops its
    services, deletes its resources and its stack as after the last phase."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        print("\nstopping: cleaning up ...", flush=True)
        stopping.set()
        phases.cancel()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    out = args.out or RESULTS / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print(f"results: {out}", flush=True)
    results = asyncio.run(_run(args, out))
    summary = report.markdown(results)
    (out / "summary.md").write_text(summary)
    (out / "results.json").write_text(
        json.dumps(results.to_json(), indent=1, default=str)
    )
    plots = report.plots(results, out)
    print()
    print(report.figures_table(results.figures))
    print(f"\nsummary: {out / 'summary.md'}")
    print("plots: " + ", ".join(p.name for p in plots))
    missed = [f.name for f in results.figures if f.passed is False]
    if missed:
        print(f"{len(missed)} figure(s) miss their goal: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
