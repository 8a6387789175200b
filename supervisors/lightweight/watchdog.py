"""Loop-lag watchdog: notices a lightweight child that blocks its host's event loop.

A heartbeat task in the loop records when it last ran; a daemon thread checks it every
``threshold_s / 4``. When the loop has not run the heartbeat for more than ``threshold_s`` (a
child's sync code or a blocking call inside an ``async`` method holds the loop: no other child
of the host can run meanwhile), the thread reads the loop thread's stack to name the child whose
method is on it and calls ``on_blocked(lag_s, child_key)`` once. The host escalates from there
(it ends its process: the owner restarts it and its children). The lag of the loop (max and
last, measured by the heartbeat itself) is kept for status.

The watchdog cannot interrupt the blocking code: Python gives no way to stop a running frame of
another thread. Ending the process is the only remedy that frees the loop.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["LoopWatchdog", "blocking_key"]


class LoopWatchdog:
    def __init__(self, threshold_s: float, on_blocked: Callable[[float, str | None], None],
                 who: Callable[[FrameType | None], str | None]) -> None:
        self.threshold_s = threshold_s
        self.interval_s = max(threshold_s / 4, 0.005)
        self.on_blocked = on_blocked
        self.who = who
        self.beat = time.monotonic()
        self.max_lag_s = 0.0
        self.last_lag_s = 0.0
        self.tripped = False
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[Any] | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the heartbeat (in the running loop, whose thread is watched) and the thread."""
        self._loop_thread = threading.get_ident()
        self.beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        threading.Thread(target=self._watch, name="herd-loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    def status(self) -> dict[str, Any]:
        return {"lag_threshold_s": self.threshold_s, "max_lag_s": round(self.max_lag_s, 4),
                "last_lag_s": round(self.last_lag_s, 4), "tripped": self.tripped}

    async def _heartbeat(self) -> None:
        while True:
            before = time.monotonic()
            self.beat = before
            await asyncio.sleep(self.interval_s)
            self.last_lag_s = max(0.0, time.monotonic() - before - self.interval_s)
            self.max_lag_s = max(self.max_lag_s, self.last_lag_s)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            lag = time.monotonic() - self.beat - self.interval_s
            if lag > self.threshold_s and not self.tripped:
                self.tripped = True
                frame = sys._current_frames().get(self._loop_thread)
                self.on_blocked(lag, self.who(frame))


def blocking_key(frame: FrameType | None, instances: dict[int, str]) -> str | None:
    """The key of the child whose method is on the stack ending in ``frame`` (innermost first:
    a frame whose ``self`` is one of ``instances``, a map ``id(instance) -> key``)."""
    while frame is not None:
        owner = frame.f_locals.get("self")
        if owner is not None and id(owner) in instances:
            return instances[id(owner)]
        frame = frame.f_back
    return None
