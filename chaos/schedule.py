"""The nemesis's plan: a seeded, deterministic list of faults (pure; no Ray).

The same seed, duration and fault kinds always give the same plan, so a failing run is replayed
with ``herd chaos --seed S``. Targets (which node, which child, which actor) are not known until
the fault runs; each planned fault carries ``pick`` in [0, 1), which the runner maps onto the
sorted list of candidates at that moment.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from herd.chaos.config import ChaosConfig

__all__ = ["PlannedFault", "plan_faults", "workload_rng"]


@dataclass(frozen=True)
class PlannedFault:
    """Fault number ``index``: ``kind``, ``gap_s`` seconds after the previous fault recovered
    (``at_s``: the sum of the gaps, where it falls when recoveries take no time), held for
    ``hold_s`` seconds (pause and partition), aimed at candidate ``pick`` (a fraction)."""

    index: int
    gap_s: float
    at_s: float
    kind: str
    hold_s: float
    pick: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def choose(self, candidates: list[Any]) -> Any:
        """The candidate this fault aims at (``None`` when there is none)."""
        if not candidates:
            return None
        return candidates[min(int(self.pick * len(candidates)), len(candidates) - 1)]


def plan_faults(config: ChaosConfig) -> list[PlannedFault]:
    """Faults at exponentially distributed gaps (mean ``fault_gap_s``, at least a second)
    over the run's duration, kinds drawn uniformly from ``config.faults``. The runner waits
    each gap after the previous fault has recovered and stops at the end of the duration, so
    a run carries out a prefix of this plan."""
    rng = random.Random(f"herd-chaos-faults-{config.seed}")
    low, high = config.hold_s
    plan: list[PlannedFault] = []
    at = 0.0
    while True:
        gap = round(max(1.0, rng.expovariate(1.0 / config.fault_gap_s)), 3)
        at += gap
        if at >= config.duration_s:
            return plan
        plan.append(PlannedFault(index=len(plan), gap_s=gap, at_s=round(at, 3),
                                 kind=rng.choice(config.faults),
                                 hold_s=round(rng.uniform(low, high), 3), pick=rng.random()))


def workload_rng(seed: int) -> random.Random:
    """The client's random source: its choices of operations follow the seed too."""
    return random.Random(f"herd-chaos-workload-{seed}")
