"""CPU and resident memory of every process of a run, read from /proc.

psutil is not in the lock; /proc/<pid>/stat (utime + stime, in clock ticks)
and /proc/<pid>/status (VmRSS) are all this needs. A thread samples every
`interval_s`; each phase of the run gets the CPU time its processes used
(as a share of one core) and their peak RSS during it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class PhaseUsage:
    """One process during one phase."""

    cpu_s: float = 0.0
    peak_rss: int = 0


@dataclass
class _Phase:
    name: str
    started: float
    cpu_at_start: dict[str, float]
    usage: dict[str, PhaseUsage] = field(default_factory=dict)
    seconds: float = 0.0


class ProcessMonitor:
    """Watches named processes; `phase(name)` starts a new accounting period."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._phases: list[_Phase] = []
        self._last_cpu: dict[str, float] = {}
        """Total CPU seconds of each name: earlier pids' and the current one's."""
        self._offset: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        """Watch `pid` as `name`; a new pid for a known name (a restarted
        service) adds its CPU time to what the earlier ones used."""
        with self._lock:
            if name in self._pids:
                self._sample()
                self._offset[name] = self._last_cpu.get(name, 0.0)
            self._pids[name] = pid
            self._sample()

    def unwatch(self, name: str) -> None:
        """Stop watching `name` (its process ended): its pid may be reused by
        another process, whose CPU time must not count as this one's."""
        with self._lock:
            self._sample()
            if self._pids.pop(name, None) is not None:
                self._offset[name] = self._last_cpu.get(name, 0.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.phase("")
        self._stop.set()
        self._thread.join(timeout=5)

    def phase(self, name: str) -> None:
        """Close the current phase and (unless `name` is empty) open `name`."""
        with self._lock:
            self._sample()
            now = time.monotonic()
            if self._phases:
                current = self._phases[-1]
                current.seconds = now - current.started
                for proc, cpu in self._last_cpu.items():
                    begin = current.cpu_at_start.get(proc)
                    if begin is not None:
                        current.usage.setdefault(proc, PhaseUsage()).cpu_s = cpu - begin
            if name:
                self._phases.append(_Phase(name, now, dict(self._last_cpu)))

    def report(self) -> list[tuple[str, float, dict[str, PhaseUsage]]]:
        """(phase, seconds, usage by process) of every closed phase."""
        with self._lock:
            return [(p.name, p.seconds, p.usage) for p in self._phases if p.seconds]

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                self._sample()

    def _sample(self) -> None:
        phase = self._phases[-1] if self._phases else None
        for name, pid in self._pids.items():
            own = cpu_seconds(pid)
            if own is None:
                continue
            cpu = self._offset.get(name, 0.0) + own
            self._last_cpu[name] = cpu
            if phase is None:
                continue
            phase.cpu_at_start.setdefault(name, cpu)
            rss = rss_bytes(pid) or 0
            usage = phase.usage.setdefault(name, PhaseUsage())
            usage.peak_rss = max(usage.peak_rss, rss)
