"""Ray metrics of chaos runs, recorded by the driver that runs the nemesis (its node's metrics
agent exports them while the cluster lives): faults injected by kind and outcome, runs by result,
violations found by the last run."""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge


class ChaosMetrics:
    def __init__(self) -> None:
        self.faults = Counter("herd_chaos_faults_total", "faults injected, by kind and outcome",
                              tag_keys=("kind", "outcome"))
        self.runs = Counter("herd_chaos_runs_total", "finished runs, by result",
                            tag_keys=("result",))
        self.violations = Gauge("herd_chaos_violations_count", "violations of the last run")

    def fault(self, kind: str, recovered: bool) -> None:
        self.faults.inc(tags={"kind": kind, "outcome": "recovered" if recovered
                              else "not_recovered"})

    def finished(self, violations: int) -> None:
        self.runs.inc(tags={"result": "green" if violations == 0 else "red"})
        self.violations.set(violations)


@cache
def chaos_metrics() -> ChaosMetrics:
    return ChaosMetrics()
