"""The services workload of a chaos run: a client thread that tracks and untracks processes in
a presence, kills some of them, writes and deletes cache keys and observes what every node
shows, recording it all in the history for ``herd.chaos.services_checker``.

Each write to a key carries the next sequence number of that key (``{"seq": n}``; a delete
has one too), so the checker can tell a stale value from a newer one. Outcomes: ``ok`` when
acknowledged, ``info`` when unknown (timeouts, a node going away).
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

from herd.chaos.history import History
from herd.platform.errors import HerdError
from herd.platform.gcs import nodes
from herd.platform.logging import get_logger
from herd.platform.rpc import get
from herd.replication.cache import Cache
from herd.replication.presence import Presence

__all__ = ["ServicesWorkload"]

log = get_logger("herd.chaos.services")

TOPIC = "chaos"
KEYS = ("k0", "k1", "k2")
CALL_TIMEOUT_S = 5.0


class ServicesWorkload:
    """Drives ``presence`` and ``cache`` (replicated) with ``members`` (name -> actor handle
    with a ``where() -> (pid, node_id)`` method) as the tracked processes."""

    def __init__(self, presence: Presence, cache: Cache, members: dict[str, Any],
                 history: History, seed: int = 0) -> None:
        self.presence, self.cache, self.history = presence, cache, history
        self.members = dict(members)
        self.alive = set(members)
        self.tracked: set[str] = set()
        self.rng = random.Random(seed)
        self.seq = dict.fromkeys(KEYS, 0)

    def run(self, duration_s: float, kills: int = 1) -> None:
        """Random operations for ``duration_s``; ``kills`` members are SIGKILLed on the way,
        evenly spread; a last observation of each kind closes the run."""
        started = time.monotonic()
        kill_at = [started + duration_s * (n + 1) / (kills + 1) for n in range(kills)]
        while time.monotonic() - started < duration_s:
            if kill_at and time.monotonic() >= kill_at[0] and self.tracked & self.alive:
                kill_at.pop(0)
                self.kill(self.rng.choice(sorted(self.tracked & self.alive)))
                continue
            self.step()
        self.observe_presence()
        self.observe_cache()

    def step(self) -> None:
        choice = self.rng.random()
        if choice < 0.2:
            self.track(self.rng.choice(sorted(self.alive)))
        elif choice < 0.3 and self.tracked & self.alive:
            self.untrack(self.rng.choice(sorted(self.tracked & self.alive)))
        elif choice < 0.55:
            self.write(self.rng.choice(KEYS), delete=self.rng.random() < 0.25)
        elif choice < 0.8:
            self.observe_presence()
        else:
            self.observe_cache()

    def _do(self, f: str, value: dict[str, Any], action: Any) -> bool:
        """Run ``action`` as operation ``f``; a dict it returns is added to the outcome's
        value. True when it was acknowledged."""
        op = self.history.invoke("client", f, value)
        try:
            result = action()
        except (HerdError, OSError) as exc:
            op.info({**value, "error": f"{type(exc).__name__}: {str(exc)[:160]}"})
            return False
        op.ok({**value, **(result if isinstance(result, dict) else {})})
        return True

    def track(self, name: str) -> None:
        if self._do("track", {"key": name}, lambda: self.presence.track(
                self.members[name], TOPIC, name, {"at": time.time()})):
            self.tracked.add(name)

    def untrack(self, name: str) -> None:
        self._do("untrack", {"key": name}, lambda: {"removed": self.presence.untrack(
            self.members[name], TOPIC)})
        self.tracked.discard(name)

    def kill(self, name: str) -> None:
        pid, _ = get(self.members[name].where.remote(), timeout=CALL_TIMEOUT_S)
        self.alive.discard(name)
        self._do("kill", {"key": name, "pid": pid}, lambda: os.kill(pid, signal.SIGKILL))
        log.info("services_member_killed", member=name, pid=pid)

    def write(self, key: str, delete: bool) -> None:
        self.seq[key] += 1
        value = {"key": key, "seq": self.seq[key]}
        if delete:
            self._do("cache_delete", value, lambda: self.cache.delete(key))
        else:
            self._do("cache_put", value, lambda: self.cache.put(key, {"seq": value["seq"]}))

    def _live_nodes(self) -> list[str]:
        return [n.node_id for n in nodes() if n.alive]

    def observe_presence(self) -> None:
        self._do("observe_presence", {}, lambda: {"views": {
            node: sorted(self.presence.list(TOPIC, node_id=node)) for node in self._live_nodes()}})

    def observe_cache(self) -> None:
        def views() -> dict[str, Any]:
            seen: dict[str, dict[str, Any]] = {"driver": {k: self.cache.get(k) for k in KEYS}}
            for node in self._live_nodes():
                seen[node] = {k: self.cache.replica_get(node, k)[1] for k in KEYS}
            return {"views": seen}
        self._do("observe_cache", {}, views)
