"""Small worker classes used by ``configs/demo.yaml``, ``configs/multi-region.yaml`` and the
README: plain Python classes that herd runs as supervised Ray actors."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from herd.platform.logging import get_logger


def _where() -> dict[str, Any]:
    context = ray.get_runtime_context()
    labels = context.get_node_labels()
    return {"node_id": context.get_node_id(), "region": labels.get("region"),
            "zone": labels.get("zone"), "pid": os.getpid()}


class Counter:
    """Counts, and reports where it runs. Hands its count over when herd moves it."""

    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.started_at = time.time()

    def incr(self, by: int = 1) -> int:
        self.count += by
        return self.count

    def value(self) -> int:
        return self.count

    def where(self) -> dict[str, Any]:
        return {**_where(), "count": self.count, "uptime_s": time.time() - self.started_at}

    def crash(self) -> None:
        """Die at once, as a crash would (to watch herd restart or fail it over)."""
        os._exit(1)

    def handoff(self) -> int:
        return self.count

    def restore(self, state: int) -> None:
        self.count = state


class Reporter(Counter):
    """A Counter that also logs through structlog when it stops (OTP's terminate hook)."""

    def terminate(self, reason: str) -> None:
        get_logger("herd.examples").info("reporter_terminating", reason=reason,
                                         count=self.count)
