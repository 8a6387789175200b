"""What every benchmark reports: a :class:`BenchReport` (table rows, settings, machine), the
percentile helpers and a throwaway local cluster."""

from __future__ import annotations

import contextlib
import os
import platform as stdlib_platform
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from herd.platform.cluster import LocalCluster


@dataclass
class BenchReport:
    """Result of one benchmark: table rows plus the settings that were in force."""

    name: str
    rows: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render_table(self) -> str:
        lines = [f"== herd bench {self.name} =="]
        if self.rows:
            columns = list(dict.fromkeys(key for row in self.rows for key in row))
            cells = [[_cell(row.get(col, "")) for col in columns] for row in self.rows]
            widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
            lines.append("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=False)))
            lines.append("  ".join("-" * w for w in widths))
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in cells]
        for key, value in self.params.items():
            lines.append(f"{key}: {value}")
        lines += self.notes
        return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": mem_gib,
            "python": stdlib_platform.python_version(), "ray": ray.__version__}


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low, high = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean of samples given in seconds, in milliseconds."""
    return {"p50_ms": percentile(samples_s, 50) * 1e3, "p99_ms": percentile(samples_s, 99) * 1e3,
            "mean_ms": statistics.fmean(samples_s) * 1e3, "n": float(len(samples_s))}


@contextlib.contextmanager
def bench_cluster(nodes: int = 3, regions: list[str] | None = None,
                  **kwargs: Any) -> Iterator[Any]:
    """A connected LocalCluster for one benchmark, always shut down afterwards."""
    cluster = LocalCluster(nodes=nodes, regions=regions or ["us-east", "us-west"], **kwargs)
    try:
        cluster.connect()
        yield cluster
    finally:
        cluster.shutdown()
