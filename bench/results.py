"""What a run measures and how big it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import Spread


@dataclass(frozen=True)
class Scale:
    """Sizes of one run. `full` is what BENCHMARKS.md asks for; `small`
    checks the harness in a few minutes without loading a shared stack."""

    name: str
    pairs: int
    concurrency: int
    domain_lives: int
    command_requests: int
    latency_seconds: float
    store_sizes: tuple[int, ...]
    """Events stored before each growth point; the first is the small store
    every command run uses, the last the large one."""
    growth_requests: int
    lag_seconds: float
    query_requests: int
    search_docs: int
    catchup_events: int
    """Several batches of 500: rates run from the first commit to the last."""
    search_catchup_events: int
    """More for projector-search, which applies them many times faster: its
    catch-up must last long enough for the progress polled to resolve it."""
    outbox_events: int
    """Several pages of 1000, for the same reason."""


SCALES = {
    "full": Scale(
        name="full",
        pairs=5,
        concurrency=16,
        domain_lives=2000,
        command_requests=400,
        latency_seconds=8.0,
        store_sizes=(10_000, 50_000, 100_000, 250_000, 500_000),
        growth_requests=300,
        lag_seconds=30.0,
        query_requests=500,
        search_docs=2000,
        catchup_events=3000,
        search_catchup_events=30_000,
        outbox_events=20_000,
    ),
    "small": Scale(
        name="small",
        pairs=5,
        concurrency=8,
        domain_lives=200,
        command_requests=60,
        latency_seconds=2.0,
        store_sizes=(500, 2000),
        growth_requests=40,
        lag_seconds=5.0,
        query_requests=100,
        search_docs=200,
        catchup_events=1500,
        search_catchup_events=6000,
        outbox_events=3000,
    ),
}


@dataclass
class Figure:
    """One row of the results table."""

    name: str
    goal: str
    value: Spread
    unit: str
    """"x" for a ratio against its baseline, "ms" for an absolute latency."""
    passed: bool | None
    """None: not measured (the note says why)."""
    note: str = ""


@dataclass
class Results:
    scale: Scale
    figures: list[Figure] = field(default_factory=list)
    runs: dict[str, list[float]] = field(default_factory=dict)
    """Throughput (per second) of each round, by what ran: baselines and system."""
    series: dict[str, Any] = field(default_factory=dict)
    """Raw data of the plots: latencies, lag samples, growth points."""
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)

    def add_run(self, name: str, per_s: float) -> None:
        self.runs.setdefault(name, []).append(per_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
