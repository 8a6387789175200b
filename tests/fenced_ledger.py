"""The ledger of the fault tests: starts of children, and a store fenced by epoch (a write
whose epoch is below the highest one seen for its key is refused: the fencing-token rule).
Shipped to the workers by value, as the tests' own classes are."""

from __future__ import annotations

import sys
import time
from typing import Any

import ray
from ray import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class FencedLedger:
    def __init__(self) -> None:
        self.starts: list[tuple[str, int, str]] = []
        self.high: dict[str, int] = {}
        self.accepted: list[tuple[str, int, int, float]] = []
        self.refused: list[tuple[str, int, int, float]] = []

    def started(self, tag: str, pid: int, node: str) -> None:
        self.starts.append((tag, pid, node))

    def write(self, key: str, epoch: int, pid: int) -> bool:
        entry = (key, epoch, pid, time.time())
        if epoch < self.high.get(key, 0):
            self.refused.append(entry)
            return False
        self.high[key] = epoch
        self.accepted.append(entry)
        return True

    def report(self) -> dict[str, Any]:
        return {"starts": list(self.starts), "accepted": list(self.accepted),
                "refused": list(self.refused)}
