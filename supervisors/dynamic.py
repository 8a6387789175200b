"""The distributed dynamic supervisor (Horde-like), driver side.

    sup = DynamicSupervisor.start("workers", distribution="hash_ring")
    info = sup.start_child(ChildSpec(id="counter-1", actor=Counter, args=(0,)))
    ray.get(via("counter-1").incr.remote())

One member actor per eligible node (``herd.supervisors.dynamic_member``) owns the children placed
there; the registry record of each child is the single source of truth for its owner and its
epoch. Every operation here has a timeout. Differences from Horde, on purpose: each child has its
own restart budget; claims are compare-and-set on the registry (no duplicates after a partition
heals, since within a Ray cluster the GCS declares a cut-off node dead and its children are
superseded); quorum is counted over a static member list; specs live once in the GCS KV store,
not in a full-mesh CRDT on every node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import ray

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import (ChildNotFound, EpochConflict, HerdTimeoutError, NoQuorum,
                                  PlacementError, SupervisorError, SupervisorStopped)
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeInfo
from herd.registry import Registration, Registry
from herd.supervisors import dynamic_records as records
from herd.supervisors.dynamic_member import ensure_member, member_handle
from herd.supervisors.dynamic_spec import (DynamicChildInfo, DynamicSupervisorSpec,
                                           check_child_spec, member_of, requirements_of)
from herd.supervisors.errors import ChildAlreadyStarted
from herd.supervisors.spec import ChildSpec

log = get_logger("herd.dynamic")

START_MARGIN_S = 10.0


class DynamicSupervisor:
    """Handle of a running dynamic supervisor (picklable: it is just the name)."""

    def __init__(self, config: DynamicSupervisorSpec) -> None:
        self.name = config.name
        self.config = config
        self.registry = Registry.start(config.registry)

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
        one member on every eligible node."""
        config = DynamicSupervisorSpec.build(
            name=name, members=members, distribution=distribution,
            redistribution=redistribution, max_restarts=max_restarts, max_seconds=max_seconds,
            max_children=max_children, on_exhausted=on_exhausted,
            distribution_options=distribution_options or {}, registry=registry,
            reconcile_interval_s=reconcile_interval_s)
        require_ray()
        existing = records.load_config(name)
        if existing is not None and records.stopped_reason(name) is None:
            if existing.model_dump(exclude={"draining"}) != config.model_dump(exclude={"draining"}):
                raise SupervisorError(f"dynamic supervisor {name!r} is already running with "
                                      f"other settings; stop it first")
            config = existing
        else:
            records.forget(name)
            records.save_config(config)
        supervisor = cls(config)
        deadline = time.monotonic() + (timeout or rpc.DEFAULT_TIMEOUT_S)
        nodes = supervisor._eligible_nodes()
        if not nodes:
            raise PlacementError(f"no live node matches members={config.members!r}")
        refs = [ensure_member(name, node.node_id).start.remote() for node in nodes]
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
        ``NoQuorum`` without quorum, ``ChildAlreadyStarted`` for a taken id, and
        ``StartChildError`` when its constructor fails or it does not start in time."""
        child = check_child_spec(spec)
        self._check_running()
        regs = self._records(timeout)
        if self.config.max_children is not None and len(regs) >= self.config.max_children:
            raise SupervisorError(f"{self.name!r} already has max_children="
                                  f"{self.config.max_children} children")
        owner = self._choose(child, regs)
        records.save_spec(self.name, child)
        meta = records.child_meta(self.name, owner, child)
        try:
            self.registry.compare_and_set(child.id, 0, meta=meta, on_holder_death="clear",
                                          timeout=timeout)
        except EpochConflict:
            raise ChildAlreadyStarted(child.id) from None
        log.info("child_placed", supervisor=self.name, child_id=child.id, node_id=owner[:12])
        member = member_handle(self.name, owner) or ensure_member(self.name, owner)
        wait_s = timeout or (child.start_timeout + START_MARGIN_S)
        return rpc.get(member.start_owned.remote(child.id), timeout=wait_s,
                       what=f"start_child {child.id!r}")

    def terminate_child(self, child_id: str, timeout: float | None = None) -> None:
        """Stop the child (its ``terminate`` hook within its shutdown time) and forget it."""
        reg = self._record(child_id, timeout)
        member = member_handle(self.name, reg.meta["owner"])
        if member is not None:
            try:
                rpc.get(member.terminate.remote(child_id), timeout=timeout,
                        what=f"terminate_child {child_id!r}")
                return
            except ray.exceptions.RayActorError:
                pass  # its member is gone with its node: only the record is left
        self.registry.unregister(child_id, timeout=timeout)
        records.delete_spec(self.name, child_id)

    def restart_child(self, child_id: str, timeout: float | None = None) -> DynamicChildInfo:
        reg = self._record(child_id, timeout)
        member = member_handle(self.name, reg.meta["owner"])
        if member is None:
            raise SupervisorError(f"the owner of {child_id!r} is not running; it will be "
                                  f"failed over")
        info = rpc.get(member.restart.remote(child_id), timeout=timeout,
                       what=f"restart_child {child_id!r}")
        if info is None:
            raise SupervisorError(f"child {child_id!r} changed owner while restarting")
        return info

    def which_children(self, timeout: float | None = None) -> list[DynamicChildInfo]:
        live = {node.node_id for node in self._membership().nodes(timeout=timeout)}
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
        out = []
        for node in self._eligible_nodes(include_draining=True):
            out.append({"node_id": node.node_id, "region": node.region, "zone": node.zone,
                        "labels": dict(node.labels), "children": loads.get(node.node_id, 0),
                        "draining": node.node_id in self.config.draining,
                        "member": member_handle(self.name, node.node_id) is not None})
        return out

    def has_quorum(self) -> bool:
        members = [member_of(n) for n in self._eligible_nodes()]
        return self.config.strategy().has_quorum(members)

    def wait_for_quorum(self, timeout: float) -> None:
        """Return once the member set has quorum; ``NoQuorum`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.has_quorum():
            if time.monotonic() >= deadline:
                raise NoQuorum(f"{self.name!r} has no quorum after {timeout:.1f} s")
            time.sleep(0.1)

    def drain_node(self, node_id: str, timeout: float = 60.0) -> None:
        """Move every child off ``node_id`` (handoff, graceful stop, restart elsewhere) and
        stop placing children there. Raises ``HerdTimeoutError`` naming the children still
        there at the deadline."""
        moving = {r.key for r in self._records(None) if r.meta["owner"] == node_id}
        config = self.config.model_copy(update={"draining": (*self.config.draining, node_id)})
        records.save_config(config)
        self.config = config
        self._poke_members()
        deadline = time.monotonic() + timeout
        while True:
            current = {r.key: r for r in self._records(None)}
            left = sorted(key for key in moving if key in current and (
                current[key].meta["owner"] == node_id or current[key].handle is None))
            if not left:
                log.info("node_drained", supervisor=self.name, node_id=node_id[:12],
                         moved=len(moving))
                return
            if time.monotonic() >= deadline:
                raise HerdTimeoutError(f"drain of {node_id[:12]}: children not moved in "
                                       f"{timeout:.0f} s: {left}")
            time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every child (newest first on each member), the members, and forget the
        supervisor's records."""
        records.mark_stopped(self.name, "stopped")
        handles = [h for h in (member_handle(self.name, n.node_id)
                               for n in self._eligible_nodes(include_draining=True)) if h]
        refs = [h.stop_all.remote() for h in handles]
        try:
            rpc.get(refs, timeout=timeout, what=f"stop of {self.name!r}")
        finally:
            for handle in handles:
                ray.kill(handle, no_restart=True)
            for reg in self._records(timeout):
                self.registry.unregister(reg.key, timeout=timeout)
            records.forget(self.name)
        log.info("dynamic_supervisor_stopped", supervisor=self.name)

    # ---------------------------------------------------------------------------- internals
    def _membership(self) -> Membership:
        return Membership.start()

    def _eligible_nodes(self, include_draining: bool = False) -> list[NodeInfo]:
        return [n for n in self._membership().nodes()
                if n.alive and self.config.admits_node(n.labels)
                and (include_draining or n.node_id not in self.config.draining)]

    def _records(self, timeout: float | None) -> list[Registration]:
        return self.registry.select(meta={records.SUP_META: self.name}, timeout=timeout)

    def _record(self, child_id: str, timeout: float | None) -> Registration:
        reg = self.registry.entry(child_id, fresh=True, timeout=timeout)
        if reg is None or reg.meta.get(records.SUP_META) != self.name:
            raise ChildNotFound(f"no child {child_id!r} under {self.name!r}")
        return reg

    @staticmethod
    def _loads(regs: Iterable[Registration]) -> dict[str, int]:
        loads: dict[str, int] = {}
        for reg in regs:
            loads[reg.meta["owner"]] = loads.get(reg.meta["owner"], 0) + 1
        return loads

    def _choose(self, child: ChildSpec, regs: list[Registration]) -> str:
        loads = self._loads(regs)
        members = [member_of(n, loads.get(n.node_id, 0)) for n in self._eligible_nodes()]
        return self.config.strategy().choose(child.id, members, requirements_of(child)).id

    def _check_running(self) -> None:
        reason = records.stopped_reason(self.name)
        if reason is not None:
            raise SupervisorStopped(f"dynamic supervisor {self.name!r} has stopped: {reason}")

    def _poke_members(self) -> None:
        for node in self._eligible_nodes(include_draining=True):
            handle = member_handle(self.name, node.node_id)
            if handle is not None:
                handle.reconcile_now.remote()
