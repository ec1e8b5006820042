"""The arithmetic of a benchmark: percentiles, rates from progress, ratios.

Pure functions, tested in `tests/unit/test_bench.py`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of repeated measurements and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(finite), min(finite), max(finite))

    def format(self, digits: int = 2) -> str:
        if math.isnan(self.median):
            return "n/a"
        return (
            f"{self.median:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        )


def ratios(systems: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """system / baseline of each pair (same index = same round of the run)."""
    if len(systems) != len(baselines):
        raise ValueError(
            f"pairs need as many system runs as baseline runs "
            f"({len(systems)} != {len(baselines)})"
        )
    return [
        s / b if b > 0 and math.isfinite(b) else math.nan
        for s, b in zip(systems, baselines, strict=True)
    ]


def rate_from_progress(progress: Sequence[tuple[float, int]]) -> float:
    """Items per second between the first and the last progress point.

    `progress` holds (monotonic time, items done so far). Counting from the
    first point (not from the start of a process) leaves out start-up and
    group joins, and treats a raw script and a service alike.
    """
    if len(progress) < 2:
        return math.nan
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    if t1 <= t0 or n1 <= n0:
        return math.nan
    return (n1 - n0) / (t1 - t0)


def arrival_times(rate_per_s: float, count: int, start: float = 0.0) -> list[float]:
    """When each request of an open-loop run is due: evenly spaced at `rate`."""
    if rate_per_s <= 0:
        raise ValueError(f"the arrival rate must be positive, got {rate_per_s}")
    return [start + i / rate_per_s for i in range(count)]


def meets(value: float, goal: float, *, at_least: bool) -> bool:
    """Whether `value` meets a goal of `at least` (or `at most`) `goal`."""
    if math.isnan(value):
        return False
    return value >= goal if at_least else value <= goal
