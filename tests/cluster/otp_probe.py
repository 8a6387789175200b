"""A probe actor shared by the OTP conformance tests (actor and lightweight children): a
notebook of what children did, and start failures to inject. Workers cannot import test
modules, so the test modules register this one to be pickled by value."""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0)
class Probe:
    """What children did (starts, terminate hooks), and start failures to inject."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.failures: dict[str, int] = {}

    def reset(self) -> None:
        self.events.clear()
        self.failures.clear()

    def record(self, *event: Any) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[Any, ...]]:
        return list(self.events)

    def fail_next_starts(self, key: str, count: int) -> None:
        self.failures[key] = count

    def take_failure(self, key: str) -> bool:
        left = self.failures.get(key, 0)
        if left > 0:
            self.failures[key] = left - 1
        return left > 0
