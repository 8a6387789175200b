"""The distributed dynamic supervisor (Horde-like), driver side.

    sup = DynamicSupervisor.start("workers", distribution="hash_ring")
    info = sup.start_child(ChildSpec(id="counter-1", actor=Counter, args=(0,)))
    ray.get(via("counter-1").incr.remote())

One member actor per eligible node (``herd.supervisors.dynamic.member``) owns the children placed
there; the registry record of each child is the single source of truth for its owner and its
epoch. Every operation here has a timeout. Differences from Horde, on purpose: each child has its
own restart budget; claims are compare-and-set on the registry (no duplicates after a partition
heals, since within a Ray cluster the GCS declares a cut-off node dead and its children are
superseded); quorum is counted over a static member list; specs live once in the GCS KV store,
not in a full-mesh CRDT on every node.

``start_child`` is safe to call from several threads at once (the spawn benchmark does).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import HerdError, HerdTimeoutError, NoQuorum
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeInfo
from herd.platform.waiting import time_left
from herd.registry import Registration, Registry
from herd.registry.errors import EpochConflict, NotRegistered
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.member import ensure_member, member_handle
from herd.supervisors.dynamic.spec import (
    DynamicChildInfo,
    DynamicSupervisorSpec,
    check_child_spec,
    member_of,
    requirements_of,
)
from herd.supervisors.errors import (
    ChildAlreadyStarted,
    ChildNotFound,
    PlacementError,
    StartChildError,
    SupervisorError,
    SupervisorStopped,
)
from herd.supervisors.otp.spec import ChildSpec

log = get_logger("herd.dynamic")

#: Extra time the driver waits for ``start_owned`` beyond the child's own ``start_timeout``.
START_MARGIN_S = 10.0
QUORUM_POLL_S = 0.1
DRAIN_POLL_S = 0.1


class DynamicSupervisor:
    """Handle of a running dynamic supervisor (picklable: it is just the name)."""

    def __init__(self, config: DynamicSupervisorSpec) -> None:
        self.name = config.name
        self.config = config
        self.strategy = config.strategy()
        self.registry = Registry.start(config.registry)
        self._membership: Membership | None = None
        self._members: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (DynamicSupervisor.get, (self.name,))

    def __repr__(self) -> str:
        return f"DynamicSupervisor({self.name!r}, distribution={self.config.distribution!r})"

    # ------------------------------------------------------------------------------ start
    @classmethod
    def start(cls, name: str, members: Any = "auto", distribution: str = "hash_ring",
              redistribution: str = "passive", max_restarts: int = 3, max_seconds: float = 5,
              max_children: int | None = None, *, on_exhausted: str = "give_up",
              distribution_options: dict[str, Any] | None = None, registry: str = "default",
              reconcile_interval_s: float = 1.0, timeout: float | None = None
              ) -> DynamicSupervisor:
        """Start (or get, when one with the same settings runs) the supervisor ``name`` with
        one member on every eligible node. A supervisor of that name that has stopped (e.g.
        escalated) is cleared away first: its members, records and state."""
        config = DynamicSupervisorSpec.build(
            name=name, members=members, distribution=distribution,
            redistribution=redistribution, max_restarts=max_restarts, max_seconds=max_seconds,
            max_children=max_children, on_exhausted=on_exhausted,
            distribution_options=distribution_options or {}, registry=registry,
            reconcile_interval_s=reconcile_interval_s)
        require_ray()
        deadline = time.monotonic() + (timeout or rpc.DEFAULT_TIMEOUT_S)
        existing, stopped = records.load_state(name)
        if existing is not None and stopped is None:
            if existing.model_dump(exclude={"draining"}) != config.model_dump(exclude={"draining"}):
                raise SupervisorError(f"dynamic supervisor {name!r} is already running with "
                                      f"other settings; stop it first")
            config = existing
        else:
            if existing is not None:
                cls(existing)._clear(timeout)
            records.forget(name)
            records.save_config(config)
        supervisor = cls(config)
        nodes = supervisor._eligible_nodes()
        if not nodes:
            raise PlacementError(f"no live node matches members={config.members!r}")
        refs = [supervisor._member(node.node_id).start.remote() for node in nodes]
        rpc.get(refs, timeout=max(1.0, deadline - time.monotonic()),
                what=f"members of {name!r} starting")
        log.info("dynamic_supervisor_started", supervisor=name, members=len(nodes),
                 distribution=config.distribution)
        return supervisor

    @classmethod
    def get(cls, name: str) -> DynamicSupervisor:
        require_ray()
        config = records.load_config(name)
        if config is None:
            raise SupervisorError(f"no dynamic supervisor named {name!r}")
        return cls(config)

    # ---------------------------------------------------------------------------- children
    def start_child(self, spec: ChildSpec | dict[str, Any],
                    timeout: float | None = None) -> DynamicChildInfo:
        """Place the child with the distribution strategy and start it on that member's node.

        Raises ``PlacementError`` at once when no member satisfies its labels/resources,
        ``NoQuorum`` without quorum, ``ChildAlreadyStarted`` for a taken id,
        ``SupervisorStopped`` after the supervisor stopped, and ``StartChildError`` when its
        constructor fails or it does not start in time (no record is left behind then)."""
        child = check_child_spec(spec)
        wait_s = timeout or (child.start_timeout + START_MARGIN_S)
        deadline = time.monotonic() + wait_s
        self._check_running()
        regs = (self._records(wait_s)
                if self.config.max_children is not None or self.strategy.load_aware else [])
        if self.config.max_children is not None and len(regs) >= self.config.max_children:
            raise SupervisorError(f"{self.name!r} already has max_children="
                                  f"{self.config.max_children} children")
        requirements = requirements_of(child)
        owner = self._choose(child, regs)
        meta = records.child_meta(self.name, owner, child, requirements,
                                  start_by=time.time() + wait_s)
        try:
            reg = self.registry.compare_and_set(child.id, 0, meta=meta, on_holder_death="clear",
                                                timeout=time_left(deadline))
        except EpochConflict:
            raise ChildAlreadyStarted(child.id) from None
        records.save_spec(self.name, child)
        log.info("child_placed", supervisor=self.name, child_id=child.id, node_id=owner[:12])
        try:
            return rpc.get(self._member(owner).start_owned.remote(reg, child),
                           timeout=time_left(deadline), what=f"start_child {child.id!r}")
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError:  # the owner's node died meanwhile: a survivor fails it over
            self._forget_member(owner)
            return self._await_running(child.id, deadline)
        except HerdTimeoutError:
            # Its member did not answer in time. Remove the record unless the child got
            # registered meanwhile; a start still in flight then finds it gone and stops.
            try:
                self.registry.unregister(child.id, epoch=reg.epoch)
            except EpochConflict:  # it changed: started (or being failed over) after all
                return records.info_from(self._record(child.id, None))
            records.delete_spec(self.name, child.id)
            raise StartChildError(f"child {child.id!r} did not start within {wait_s:.1f} s"
                                  ) from None

    def terminate_child(self, child_id: str, timeout: float | None = None) -> None:
        """Stop the child (its ``terminate`` hook within its shutdown time) and forget it."""
        reg = self._record(child_id, timeout)
        owner = reg.meta["owner"]
        if owner in {n.node_id for n in self._membership_client().nodes(timeout=timeout)}:
            try:
                rpc.get(self._member(owner).terminate.remote(child_id), timeout=timeout,
                        what=f"terminate_child {child_id!r}")
                return
            except RayTaskError as exc:
                raise _cause(exc) from None
            except RayActorError:
                self._forget_member(owner)
        # Its member is gone with its node: only the record is left.
        self.registry.unregister(child_id, timeout=timeout)
        records.delete_spec(self.name, child_id)

    def restart_child(self, child_id: str, timeout: float | None = None) -> DynamicChildInfo:
        """Stop the child and start a new incarnation of it on its current node."""
        reg = self._record(child_id, timeout)
        try:
            info = rpc.get(self._member(reg.meta["owner"]).restart.remote(child_id),
                           timeout=timeout, what=f"restart_child {child_id!r}")
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError:
            raise SupervisorError(f"the owner of {child_id!r} is not running; it will be "
                                  f"failed over") from None
        if info is None:
            raise SupervisorError(f"child {child_id!r} changed owner while restarting")
        return info

    def which_children(self, timeout: float | None = None) -> list[DynamicChildInfo]:
        live = {node.node_id for node in self._membership_client().nodes(timeout=timeout)}
        return [records.info_from(reg, live) for reg in self._records(timeout)]

    def count_children(self, timeout: float | None = None) -> dict[str, int]:
        """OTP's count_children: specs, active (running with a live holder), workers,
        supervisors."""
        children = self.which_children(timeout)
        return {"specs": len(children),
                "active": sum(c.status == "running" and c.handle is not None for c in children),
                "workers": len(children), "supervisors": 0}

    def given_up(self) -> dict[str, dict[str, Any]]:
        """Children removed after exceeding their restart budget, with the last reason."""
        return records.given_up(self.name)

    # ----------------------------------------------------------------------------- members
    def members(self, timeout: float | None = None) -> list[dict[str, Any]]:
        loads = self._loads(self._records(timeout))
        self.config = records.load_config(self.name) or self.config
        out = []
        for node in self._eligible_nodes(include_draining=True):
            out.append({"node_id": node.node_id, "region": node.region, "zone": node.zone,
                        "labels": dict(node.labels), "children": loads.get(node.node_id, 0),
                        "draining": node.node_id in self.config.draining,
                        "member": member_handle(self.name, node.node_id) is not None})
        return out

    def has_quorum(self) -> bool:
        return self.strategy.has_quorum([member_of(n) for n in self._eligible_nodes()])

    def wait_for_quorum(self, timeout: float) -> None:
        """Return once the member set has quorum; ``NoQuorum`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.has_quorum():
            if time.monotonic() >= deadline:
                raise NoQuorum(f"{self.name!r} has no quorum after {timeout:.1f} s")
            time.sleep(QUORUM_POLL_S)

    def drain_node(self, node_id: str, timeout: float = 60.0) -> None:
        """Move every child off ``node_id`` (handoff, graceful stop, restart elsewhere) and
        stop placing children there. Raises ``HerdTimeoutError`` naming the children still
        there (or not yet running elsewhere) at the deadline."""
        deadline = time.monotonic() + timeout
        if node_id not in {n.node_id for n in self._eligible_nodes(include_draining=True)}:
            raise SupervisorError(f"node {node_id[:12]} runs no member of {self.name!r}")
        moving = {r.key for r in self._records(timeout) if r.meta["owner"] == node_id}
        config = records.load_config(self.name) or self.config
        if node_id not in config.draining:
            config = config.model_copy(update={"draining": (*config.draining, node_id)})
            records.save_config(config)
        self.config = config
        self._poke_members()
        while True:
            current = {r.key: r for r in self._records(time_left(deadline))}
            left = sorted(key for key in moving if key in current and (
                current[key].meta["owner"] == node_id or current[key].handle is None))
            if not left:
                log.info("node_drained", supervisor=self.name, node_id=node_id[:12],
                         moved=len(moving))
                return
            if time.monotonic() >= deadline:
                raise HerdTimeoutError(f"drain of {node_id[:12]}: children not moved in "
                                       f"{timeout:.0f} s: {left}")
            time.sleep(DRAIN_POLL_S)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every child (newest first on each member), the members, and forget the
        supervisor's records."""
        records.mark_stopped(self.name, "stopped")
        self._clear(timeout)
        records.forget(self.name)
        log.info("dynamic_supervisor_stopped", supervisor=self.name)

    # ---------------------------------------------------------------------------- internals
    def _clear(self, timeout: float | None) -> None:
        """Stop the children and members of a supervisor marked stopped; drop its records."""
        handles = [h for h in (member_handle(self.name, n.node_id)
                               for n in self._membership_client().nodes(timeout=timeout)) if h]
        refs = [h.stop_all.remote() for h in handles]
        try:
            ready, _ = ray.wait(refs, num_returns=len(refs),
                                timeout=timeout or rpc.DEFAULT_TIMEOUT_S)
            for ref in ready:  # collect errors of members that died meanwhile
                with contextlib.suppress(RayActorError):
                    ray.get(ref, timeout=0)
        finally:
            for handle in handles:  # their children share their fate
                ray.kill(handle, no_restart=True)
            for reg in self._records(timeout):
                self.registry.unregister(reg.key, timeout=timeout)

    def _membership_client(self) -> Membership:
        if self._membership is None:
            self._membership = Membership.start()
        return self._membership

    def _member(self, node_id: str) -> Any:
        with self._lock:
            handle = self._members.get(node_id)
        if handle is None:
            handle = member_handle(self.name, node_id) or ensure_member(self.name, node_id)
            with self._lock:
                self._members[node_id] = handle
        return handle

    def _forget_member(self, node_id: str) -> None:
        with self._lock:
            self._members.pop(node_id, None)

    def _eligible_nodes(self, include_draining: bool = False) -> list[NodeInfo]:
        return [n for n in self._membership_client().nodes()
                if n.alive and self.config.admits_node(n.labels)
                and (include_draining or n.node_id not in self.config.draining)]

    def _records(self, timeout: float | None) -> list[Registration]:
        return self.registry.select(meta={records.SUP_META: self.name}, timeout=timeout)

    def _record(self, child_id: str, timeout: float | None) -> Registration:
        reg = self.registry.entry(child_id, fresh=True, timeout=timeout)
        if reg is None or reg.meta.get(records.SUP_META) != self.name:
            raise ChildNotFound(f"no child {child_id!r} under {self.name!r}")
        return reg

    def _await_running(self, child_id: str, deadline: float) -> DynamicChildInfo:
        """The child once a member runs it (after its first owner died while starting it)."""
        try:
            reg = self.registry.wait_for(child_id, timeout=time_left(deadline))
        except NotRegistered:
            raise StartChildError(f"child {child_id!r} did not start in time: its node died "
                                  f"and no survivor started it") from None
        return records.info_from(reg)

    @staticmethod
    def _loads(regs: Iterable[Registration]) -> dict[str, int]:
        loads: dict[str, int] = {}
        for reg in regs:
            loads[reg.meta["owner"]] = loads.get(reg.meta["owner"], 0) + 1
        return loads

    def _choose(self, child: ChildSpec, regs: list[Registration]) -> str:
        loads = self._loads(regs)
        members = [member_of(n, loads.get(n.node_id, 0)) for n in self._eligible_nodes()]
        return self.strategy.choose(child.id, members, requirements_of(child)).id

    def _check_running(self) -> None:
        reason = records.stopped_reason(self.name)
        if reason is not None:
            raise SupervisorStopped(f"dynamic supervisor {self.name!r} has stopped: {reason}")

    def _poke_members(self) -> None:
        for node in self._eligible_nodes(include_draining=True):
            self._member(node.node_id).reconcile_now.remote()



def _cause(exc: RayTaskError) -> HerdError:
    """The herd error a member raised (Ray wraps it); anything else as a SupervisorError."""
    cause = exc.cause
    if isinstance(cause, HerdError):
        return cause
    return SupervisorError(f"a member failed: {type(cause).__name__}: {cause}")
