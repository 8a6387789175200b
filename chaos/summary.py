"""The JSON report of a run: counts of faults and operations, recovery percentiles per fault
kind, the checker's violations, and the command that replays the run."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from herd.chaos.checker import Violation
from herd.chaos.config import ChaosConfig
from herd.chaos.history import History
from herd.chaos.ledger import LedgerLog

__all__ = ["is_fault", "percentile", "recovery_times", "summarize", "write_report"]


def is_fault(f: str) -> bool:
    """Whether a nemesis operation named ``f`` is a fault (not its end, recovery or repair)."""
    return f not in ("recover", "replace_node") and not f.startswith("end_")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def recovery_times(history: History) -> dict[str, list[float]]:
    """Seconds from each fault's start until every anchor child answered, by fault kind."""
    times: dict[str, list[float]] = defaultdict(list)
    for invoke, outcome in history.completions("nemesis"):
        if invoke.f != "recover" or outcome is None or outcome.type != "ok":
            continue
        times[invoke.value["kind"]].append(float(outcome.value["seconds"]))
    return dict(times)


def summarize(config: ChaosConfig, history: History, violations: list[Violation],
              elapsed_s: float, ledger: LedgerLog | None = None) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    failed_faults: Counter[str] = Counter()
    operations: dict[str, Counter[str]] = defaultdict(Counter)
    for invoke, outcome in history.completions():
        kind = outcome.type if outcome is not None else "open"
        if invoke.process == "nemesis" and is_fault(invoke.f):
            (faults if kind != "fail" else failed_faults)[invoke.f] += 1
        elif invoke.process == "client":
            operations[invoke.f][kind] += 1
    recovery = {kind: {"count": len(values), "p50_s": percentile(values, 50),
                       "p99_s": percentile(values, 99), "max_s": max(values)}
                for kind, values in sorted(recovery_times(history).items())}
    return {
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "elapsed_s": round(elapsed_s, 1),
        "faults": dict(sorted(faults.items())),
        "faults_not_injected": dict(sorted(failed_faults.items())),
        "operations": {f: dict(sorted(c.items())) for f, c in sorted(operations.items())},
        "recovery": recovery,
        "ledger": ({"starts": len(ledger.starts), "writes": len(ledger.writes),
                    "writers": len({w.pid for w in ledger.writes})} if ledger else None),
        "violations": [v.to_dict() for v in violations],
        "replay": config.replay,
    }


def write_report(path: Path, summary: dict[str, Any], history: History) -> None:
    """The summary and the whole history as one JSON document."""
    path.write_text(json.dumps({"summary": summary, "history": history.to_list()},
                               indent=1, default=str))
