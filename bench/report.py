"""The results table (Markdown) and the plots (PNG) of a run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from .results import Figure, Results
from .stats import Spread, percentile

PERCENTILES = (50, 90, 99, 99.9)


def verdict(figure: Figure) -> str:
    if figure.passed is None:
        return "not measured" if math.isnan(figure.value.median) else "reported"
    return "pass" if figure.passed else "**miss**"


def figures_table(figures: list[Figure]) -> str:
    lines = [
        "| figure | goal | measured: median [min, max] | result | notes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        digits = 0 if f.unit == "ms" else 2
        value = f.value.format(digits)
        shown = f"{value} {f.unit}" if value != "n/a" else value
        lines.append(f"| {f.name} | {f.goal} | {shown} | {verdict(f)} | {f.note} |")
    return "\n".join(lines)


def runs_table(runs: dict[str, list[float]]) -> str:
    lines = [
        "| what ran | per second: median [min, max] | rounds |",
        "| --- | --- | --- |",
    ]
    for name, values in runs.items():
        lines.append(f"| {name} | {Spread.of(values).format(0)} | {len(values)} |")
    return "\n".join(lines)


def usage_table(usage: list[dict[str, Any]]) -> str:
    lines = [
        "| phase | seconds | process: CPU (% of one core), peak RSS (MiB) |",
        "| --- | --- | --- |",
    ]
    for phase in usage:
        cells = ", ".join(
            f"{name} {u['cpu_pct']:.0f}% {u['rss_mib']:.0f}"
            for name, u in sorted(phase["processes"].items())
        )
        lines.append(f"| {phase['phase']} | {phase['seconds']:.0f} | {cells} |")
    return "\n".join(lines)


def latency_table(latency: dict[str, Any]) -> str:
    head = " | ".join(f"p{q:g}" for q in PERCENTILES)
    lines = [f"| open loop at {latency['rate_per_s']:.0f}/s | {head} |"]
    lines.append("| --- |" + " --- |" * len(PERCENTILES))
    for name in ("raw_put", "REST create"):
        values = latency.get(name, [])
        cells = " | ".join(
            f"{percentile(values, q) * 1000:.1f} ms" for q in PERCENTILES
        )
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def markdown(results: Results) -> str:
    parts = [
        f"# Nova benchmark ({results.scale.name} scale)",
        "",
        "Every ratio is Nova / its raw baseline, measured alternately in one run "
        f"({results.scale.pairs} rounds): median [min, max] over the rounds.",
        "",
        figures_table(results.figures),
        "",
        "## Runs",
        "",
        runs_table(results.runs),
    ]
    if "latency" in results.series:
        parts += [
            "",
            "## Command latency",
            "",
            latency_table(results.series["latency"]),
        ]
    if results.series.get("growth"):
        parts += ["", "## Throughput against store size", ""]
        parts += ["| events stored | REST create /s | raw_put into that table /s |"]
        parts += ["| --- | --- | --- |"]
        for point in results.series["growth"]:
            parts.append(
                f"| {point['events']:,.0f} | {point['system']:.0f} | "
                f"{point['raw_put']:.0f} |"
            )
    if results.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in results.notes]
    parts += ["", "## Settings", ""]
    parts += [
        f"- {k}: {v}" for k, v in results.settings.items() if not k.endswith("_ms")
    ]
    parts += ["", "## Versions", ""]
    parts += [f"- {k}: {v}" for k, v in results.versions.items()]
    if results.usage:
        parts += ["", "## CPU and memory by phase", "", usage_table(results.usage)]
    return "\n".join(parts) + "\n"


def _throughput_plot(results: Results, path: Path) -> None:
    names = list(results.runs)
    spreads = [Spread.of(results.runs[n]) for n in names]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(names) + 1.5))
    medians = [s.median for s in spreads]
    low = [s.median - s.low for s in spreads]
    high = [s.high - s.median for s in spreads]
    colors = ["tab:gray" if n.startswith("raw") else "tab:blue" for n in names]
    ax.barh(names, medians, xerr=[low, high], color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("per second (median, min-max bars); grey: raw baselines")
    ax.invert_yaxis()
    ax.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_plot(latency: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("raw_put", "REST create"):
        values = latency.get(name, [])
        ax.plot(
            [f"p{q:g}" for q in PERCENTILES],
            [percentile(values, q) * 1000 for q in PERCENTILES],
            marker="o",
            label=name,
        )
    ax.set_ylabel("ms")
    ax.set_title(f"Command latency, open loop at {latency['rate_per_s']:.0f}/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lag_plot(samples: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    for field, label in (("read_model_s", "read model"), ("search_s", "searchable")):
        points = [
            (s["acked_s"], s[field] * 1000) for s in samples if s[field] is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=6, label=label)
    ax.set_xlabel("command acknowledged at (s into the run)")
    ax.set_ylabel("lag (ms)")
    ax.set_yscale("log")
    ax.set_title("Lag from command acknowledged to visible")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _growth_plot(points: list[dict[str, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [p["events"] for p in points]
    ax.plot(sizes, [p["system"] for p in points], marker="o", label="REST create")
    ax.plot(sizes, [p["raw_put"] for p in points], marker="s", label="raw_put")
    ax.set_xscale("log")
    ax.set_xlabel("events stored")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against store size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(results: Results, out: Path) -> list[Path]:
    """Write every plot the results have data for; returns their paths."""
    written = []
    if results.runs:
        written.append(out / "throughput.png")
        _throughput_plot(results, written[-1])
    if "latency" in results.series:
        written.append(out / "latency.png")
        _latency_plot(results.series["latency"], written[-1])
    lag = results.series.get("lag")
    if lag:
        written.append(out / "lag.png")
        _lag_plot(lag, written[-1])
    growth = results.series.get("growth")
    if growth:
        written.append(out / "growth.png")
        _growth_plot(growth, written[-1])
    return written


def usage_rows(report: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The process monitor's phases as plain rows for the JSON and the table."""
    rows = []
    for phase, seconds, usage in report:
        rows.append(
            {
                "phase": phase,
                "seconds": seconds,
                "processes": {
                    name: {
                        "cpu_pct": 100 * u.cpu_s / seconds if seconds else math.nan,
                        "rss_mib": u.peak_rss / 2**20,
                    }
                    for name, u in usage.items()
                    if u.cpu_s > 0.05 or u.peak_rss
                },
            }
        )
    return rows
