"""A pool of warm shells on one node, per child shape, refilled in the background.

Its owner (a dynamic supervisor's member, or a static supervisor) says which children may start
on its node (``want``); the pool keeps ``standby`` ready shells of each of their shapes (with
``"auto"``, as many as ``herd.supervisors.warm.sizing`` says the node can need at once),
creating one at a time per shape and only once its owner has been ``quiet`` (no child operation
in flight) for ``settle_s``, so refills never compete with the starts of a failover or a restart
for Ray's worker starts, nor with the first calls to the children just started. ``take`` hands
out a ready shell at once (never waits): None when there is none of that shape, and the caller
starts the child cold. A shell is handed out once; it is created by the owner, so it shares its
fate.

Shells hold exactly the resources their shape asks for (the child's own), nothing more; a shell
that is not up within ``start_timeout_s`` (e.g. no room for its resources) is killed and the
pool waits ``retry_s`` before trying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_GROUP, MONITOR_METHOD
from herd.supervisors.otp.classes import ShippedClass
from herd.supervisors.otp.harness import READY_METHOD, make_child_class
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.warm.shell import WarmShellActor
from herd.supervisors.warm.sizing import standby_needed
from herd.supervisors.warm.spec import NODE_AFFINITY, Shape, WarmPoolSpec, shape_of

__all__ = ["QUIET_POLL_S", "Standby", "WarmPool"]

log = get_logger("herd.supervisors.warm.pool")

#: How often a refill waiting for its owner to be quiet looks again.
QUIET_POLL_S = 0.05


@dataclass(eq=False)
class Standby:
    """A ready shell: its handle, what it answered when ready (pid, node id)."""

    handle: ActorHandle
    info: dict[str, Any]
    gone: Future[Any]
    """Resolves (or fails) when the shell's process ends."""

    @property
    def pid(self) -> int:
        pid: int = self.info["pid"]
        return pid


class WarmPool:
    """Ready shells by shape. ``place(options)``: the Ray options that put a shell where its
    owner's children go; ``placed_by_owner``: the child options that ``place`` replaces (left
    out of shapes); ``quiet()``: may a refill create a shell now?"""

    def __init__(self, owner: str, spec: WarmPoolSpec, *,
                 place: Callable[[dict[str, Any]], dict[str, Any]],
                 placed_by_owner: tuple[str, ...] = (),
                 quiet: Callable[[], bool] = lambda: True) -> None:
        self.owner = owner
        self.spec = spec
        self.place = place
        self.placed_by_owner = placed_by_owner
        self.quiet = quiet
        self.ready: dict[Shape, deque[Standby]] = {}
        self.targets: dict[Shape, int] = {}
        """Shells to keep ready, per wanted shape."""
        self.classes: dict[Shape, list[ShippedClass]] = {}
        """Per shape, the classes of its children: new shells import them ahead."""
        self.filling: dict[Shape, asyncio.Task[None]] = {}
        self.taken = 0
        self.missed = 0
        self.closed = False
        self.busy_at = time.monotonic()
        """When the owner was last seen busy (a shell taken, or not ``quiet``)."""
        self.log = log.bind(owner=owner)

    # ----------------------------------------------------------------------- shapes
    def shape_for(self, spec: ChildSpec) -> Shape | None:
        """The shape of an actor child, None if a shell cannot become it (or it cannot be
        resolved here: its start then fails cold, with the usual error)."""
        if spec.kind != "actor" or spec.supervisor is not None or spec.actor is None:
            return None
        try:
            defaults = make_child_class(spec.actor)._default_options
        except Exception:
            return None
        return shape_of(defaults, _plain(spec.options), self.placed_by_owner, MONITOR_GROUP)

    def want(self, specs: Iterable[ChildSpec], own: Collection[str] | None = None,
             takeover_sets: Sequence[Collection[str]] = ()) -> None:
        """Keep shells for the shapes of these children (the ``max_shapes`` most common);
        ``own`` (default: all of them) and ``takeover_sets`` size an ``"auto"`` pool (see
        ``herd.supervisors.warm.sizing``). Idle shells of shapes no child has any more are
        ended; a lower target ends none (the next starts take them)."""
        if self.closed:
            return
        shapes: dict[str, Shape] = {}
        classes: dict[Shape, dict[str, ShippedClass]] = {}
        for spec in specs:
            shape = self.shape_for(spec)
            if shape is not None:
                shapes[spec.id] = shape
                shipped = (spec.actor if isinstance(spec.actor, ShippedClass)
                           else ShippedClass.of(spec.actor))
                classes.setdefault(shape, {})[shipped.name] = shipped
        common = {s for s, _ in Counter(shapes.values()).most_common(self.spec.max_shapes)}
        if self.spec.standby == "auto":
            needed = standby_needed(shapes, shapes.keys() if own is None else own,
                                    takeover_sets, self.spec.max_standby)
        else:
            needed = dict.fromkeys(shapes.values(), self.spec.standby)
        # A shape keeps its idle shells while any child has it, even when its target drops
        # (e.g. to 0 between a node's death and this node's claims of its children).
        targets = {shape: needed.get(shape, 0) for shape in common}
        self.classes = {shape: list(classes[shape].values()) for shape in targets}
        for gone in self.targets.keys() - targets.keys():
            for standby in self.ready.pop(gone, deque()):
                ray.kill(standby.handle, no_restart=True)
        self.targets = targets
        for shape in targets:
            self._refill(shape)

    # ------------------------------------------------------------------------ taking
    def take(self, shape: Shape | None) -> Standby | None:
        """A ready shell of ``shape``, removed from the pool (a refill starts behind it);
        None when there is none."""
        if shape is None or self.closed:
            return None
        self.busy_at = time.monotonic()
        ready = self.ready.get(shape)
        while ready:
            standby = ready.popleft()
            if not standby.gone.done():
                self.taken += 1
                self._refill(shape)
                return standby
        self.missed += 1
        self._refill(shape)
        return None

    def stats(self) -> dict[str, Any]:
        """Ready shells per shape (their pids), the target per shape, shells taken, starts
        that found none."""
        return {"ready": {str(shape): [s.pid for s in ready] for shape, ready in
                          self.ready.items()},
                "targets": {str(shape): count for shape, count in self.targets.items()},
                "taken": self.taken, "missed": self.missed}

    def close(self) -> None:
        """End every idle shell and stop refilling."""
        self.closed = True
        for task in self.filling.values():
            task.cancel()
        for ready in self.ready.values():
            for standby in ready:
                ray.kill(standby.handle, no_restart=True)
        self.ready.clear()

    # ----------------------------------------------------------------------- refills
    def _refill(self, shape: Shape) -> None:
        task = self.filling.get(shape)
        if shape in self.targets and (task is None or task.done()) and not self.closed:
            self.filling[shape] = asyncio.get_running_loop().create_task(self._fill(shape))

    async def _fill(self, shape: Shape) -> None:
        while not self.closed and shape in self.targets:
            ready = self.ready.setdefault(shape, deque())
            for dead in [s for s in ready if s.gone.done()]:
                ready.remove(dead)
            if len(ready) >= self.targets[shape]:
                return
            if not self.quiet():
                self.busy_at = time.monotonic()
            settling = self.busy_at + self.spec.settle_s - time.monotonic()
            if settling > 0:
                await asyncio.sleep(max(settling, QUIET_POLL_S))
                continue
            try:
                standby = await self._create(shape)
            except Exception as exc:
                self.log.warning("warm_shell_not_started", shape=str(shape), error=repr(exc))
                await asyncio.sleep(self.spec.retry_s)
                continue
            if self.closed or shape not in self.targets:
                ray.kill(standby.handle, no_restart=True)
                return
            ready.append(standby)
            self.log.debug("warm_shell_ready", shape=str(shape), pid=standby.pid)

    async def _create(self, shape: Shape) -> Standby:
        options = self.place(_from_plain(shape.options()))
        handle = WarmShellActor.options(**options, max_restarts=0, max_task_retries=0).remote(
            self.classes.get(shape, []))
        try:
            info = await asyncio.wait_for(_await(getattr(handle, READY_METHOD).remote()),
                                          self.spec.start_timeout_s)
        except BaseException:
            ray.kill(handle, no_restart=True)
            raise
        gone = getattr(handle, MONITOR_METHOD).remote().future()
        gone.add_done_callback(_collect)
        return Standby(handle=handle, info=dict(info), gone=gone)


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a node affinity strategy as plain data (a shape can hold it)."""
    strategy = options.get("scheduling_strategy")
    if not isinstance(strategy, NodeAffinitySchedulingStrategy):
        return options
    return {**options, "scheduling_strategy": {NODE_AFFINITY: [strategy.node_id,
                                                               strategy.soft]}}


def _from_plain(options: dict[str, Any]) -> dict[str, Any]:
    strategy = options.get("scheduling_strategy")
    if not isinstance(strategy, dict):
        return options
    node_id, soft = strategy[NODE_AFFINITY]
    return {**options,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=soft)}


def _collect(future: Future[Any]) -> None:
    """Read a finished monitor call's outcome, so Ray reports no unhandled error for it."""
    with contextlib.suppress(Exception):
        future.result()


async def _await(ref: Any) -> Any:
    return await ref
