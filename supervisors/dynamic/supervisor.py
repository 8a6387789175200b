"""The distributed dynamic supervisor (Horde-like), driver side.

    sup = DynamicSupervisor.start("workers", distribution="hash_ring")
    info = sup.start_child(ChildSpec(id="counter-1", actor=Counter, args=(0,)))
    via(info.name).incr.call()             # the child's registry name: "workers/counter-1"

One member actor per eligible node (``herd.supervisors.dynamic.member``) owns the children placed
there; the registry record of each child is the single source of truth for its owner and its
epoch. Every operation here has a timeout. Differences from Horde, on purpose: each child has its
own restart budget; claims are compare-and-set on the registry (no duplicates after a partition
heals, since within a Ray cluster the GCS declares a cut-off node dead and its children are
superseded); quorum is counted over a static member list; specs live once in the GCS KV store,
not in a full-mesh CRDT on every node.

``start_child`` is safe to call from several threads at once (the spawn benchmark does).

Once the supervisor has stopped -- ``stop()``, or a child exceeded its restart budget with
``on_exhausted="escalate"`` -- every call on it (and ``DynamicSupervisor.get``) raises
``SupervisorStopped`` with the reason; ``stopped_reason()`` says it without raising.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import HerdError, HerdTimeoutError, NoQuorum
from herd.platform.gcs import NodeInfo
from herd.platform.logging import get_logger
from herd.platform.waiting import time_left
from herd.registry import Registration, Registry
from herd.registry.errors import EpochConflict, NotRegistered
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.child_record import ChildRecord, child_name
from herd.supervisors.dynamic.handles import MemberHandles
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec, check_child_spec
from herd.supervisors.errors import (
    ChildAlreadyStarted,
    ChildNotFound,
    PlacementError,
    StartChildError,
    SupervisorError,
    SupervisorStopped,
)
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.start_failure import describe
from herd.supervisors.strategies import member_of, requirements_of

log = get_logger("herd.dynamic")

#: Extra time the driver waits for ``start_owned`` beyond the child's own ``start_timeout``.
START_MARGIN_S = 10.0
QUORUM_POLL_S = 0.1
DRAIN_POLL_S = 0.1


class DynamicSupervisor:
    """Handle of a dynamic supervisor (picklable: it is just the name)."""

    def __init__(self, config: DynamicSupervisorSpec) -> None:
        self.name = config.name
        self.config = config
        self.strategy = config.strategy()
        self.registry = Registry.start(config.registry)
        self._handles = MemberHandles(config.name)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_handle_named, (self.name,))

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
        one member on every node ``members`` admits. A supervisor of that name that has
        stopped (e.g. escalated) is cleared away first: its members, records and state."""
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
        supervisor = cls(config)
        nodes = supervisor._handles.nodes(timeout=time_left(deadline))
        if not config.eligible(nodes):
            raise PlacementError(f"no live node matches members={config.members!r}")
        if config is not existing:
            # Whatever an earlier supervisor of this name left (members, records, state).
            cls(existing or config)._clear(time_left(deadline))
            records.forget(name)
            records.save_config(config)
        refs = [supervisor._handles.get(n.node_id).start.remote() for n in config.hosts(nodes)]
        rpc.get(refs, timeout=max(1.0, time_left(deadline)),
                what=f"members of {name!r} starting")
        log.info("dynamic_supervisor_started", supervisor=name, members=len(refs),
                 distribution=config.distribution)
        return supervisor

    @classmethod
    def get(cls, name: str, *, include_stopped: bool = False) -> DynamicSupervisor:
        """The supervisor ``name``. ``SupervisorStopped`` (with the reason) if it has stopped
        after an escalation, unless ``include_stopped`` (to ``stop()`` it and clear it away);
        ``SupervisorError`` if there is none."""
        require_ray()
        config, stopped = records.load_state(name)
        if config is None:
            raise SupervisorError(f"no dynamic supervisor named {name!r} is running")
        if stopped is not None and not include_stopped:
            raise SupervisorStopped(f"dynamic supervisor {name!r} has stopped: {stopped}")
        return cls(config)

    def stopped_reason(self) -> str | None:
        """Why the supervisor stopped (e.g. which child exceeded which restart intensity), or
        None while it runs."""
        config, stopped = records.load_state(self.name)
        if stopped is None and config is None:
            return "stopped"
        if config is not None:
            self.config = config
        return stopped

    # ---------------------------------------------------------------------------- children
    def start_child(self, spec: ChildSpec | dict[str, Any],
                    timeout: float | None = None) -> DynamicChildInfo:
        """Place the child with the distribution strategy and start it on that member's node;
        it is registered as ``<supervisor>/<id>`` (``DynamicChildInfo.name``).

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
        owner = self._choose(child, regs)
        record = ChildRecord(sup=self.name, child_id=child.id, owner=owner,
                             restart=child.restart, start_by=time.time() + wait_s,
                             requirements=requirements_of(child))
        try:
            reg = self.registry.compare_and_set(record.name, 0, meta=record.to_meta(),
                                                on_holder_death="clear",
                                                timeout=time_left(deadline))
        except EpochConflict:
            raise ChildAlreadyStarted(child.id) from None
        record = ChildRecord.from_registration(reg)
        records.save_spec(self.name, child)
        log.info("child_placed", supervisor=self.name, child_id=child.id, node_id=owner[:12])
        try:
            return rpc.get(self._handles.get(owner).start_owned.remote(record, child),
                           timeout=time_left(deadline), what=f"start_child {child.id!r}")
        except RayTaskError as exc:
            if not isinstance(exc.cause, HerdError):  # e.g. args the member cannot unpickle
                self._abandon(record)
                raise StartChildError(f"child {child.id!r} failed to start: "
                                      f"{describe(exc)[0]}") from None
            raise exc.cause from exc.cause.__cause__  # the member removed the record
        except RayActorError:  # its member is gone: stopped, or its node died meanwhile
            self._handles.forget(owner)
            if self.stopped_reason() is not None:
                self._abandon(record)
                self._check_running()
            return self._await_running(child.id, deadline)  # a survivor fails it over
        except HerdTimeoutError:
            # Its member did not answer in time. Remove the record unless the child got
            # registered meanwhile; a start still in flight then finds it gone and stops.
            if not self._abandon(record):  # it changed: started (or failed over) after all
                return records.info_from(self._record(child.id, None))
            raise StartChildError(f"child {child.id!r} did not start within {wait_s:.1f} s"
                                  ) from None

    def terminate_child(self, child_id: str, timeout: float | None = None) -> None:
        """Stop the child (its ``terminate`` hook within its shutdown time) and forget it."""
        self._check_running()
        record = self._record(child_id, timeout)
        if record.owner in self._handles.live_ids(timeout):
            try:
                rpc.get(self._handles.get(record.owner).terminate.remote(child_id), timeout=timeout,
                        what=f"terminate_child {child_id!r}")
                return
            except RayTaskError as exc:
                raise _cause(exc) from None
            except RayActorError:
                self._handles.forget(record.owner)
        # Its member is gone with its node: only the record is left.
        self.registry.remove(record.name, timeout=timeout)
        records.delete_spec(self.name, child_id)

    def restart_child(self, child_id: str, timeout: float | None = None) -> DynamicChildInfo:
        """Stop the child and start a new incarnation of it on its current node."""
        self._check_running()
        record = self._record(child_id, timeout)
        try:
            info = rpc.get(self._handles.get(record.owner).restart.remote(child_id),
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
        self._check_running()
        live = self._handles.live_ids(timeout)
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
        self._check_running()
        return records.given_up(self.name)

    # ----------------------------------------------------------------------------- members
    def members(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The members that own children (draining ones included, and marked)."""
        self._check_running()
        loads = self._loads(self._records(timeout))
        out = []
        for node in self._eligible_nodes(include_draining=True):
            out.append({"node_id": node.node_id, "region": node.region, "zone": node.zone,
                        "labels": dict(node.labels), "children": loads.get(node.node_id, 0),
                        "draining": node.node_id in self.config.draining,
                        "member": member_handle(self.name, node.node_id) is not None})
        return out

    def has_quorum(self) -> bool:
        self._check_running()
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
        self._check_running()
        if node_id not in {n.node_id for n in self._eligible_nodes(include_draining=True)}:
            raise SupervisorError(f"node {node_id[:12]} runs no member of {self.name!r}")
        moving = {r.key for r in self._records(timeout) if _owner(r) == node_id}
        if node_id not in self.config.draining:
            self.config = self.config.model_copy(
                update={"draining": (*self.config.draining, node_id)})
            records.save_config(self.config)
        self._poke_members()
        while True:
            current = {r.key: r for r in self._records(time_left(deadline))}
            left = sorted(key for key in moving if key in current and (
                _owner(current[key]) == node_id or current[key].handle is None))
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
        supervisor's records. Every later call on it raises ``SupervisorStopped``."""
        records.mark_stopped(self.name, "stopped")
        self._clear(timeout)
        records.forget(self.name)
        log.info("dynamic_supervisor_stopped", supervisor=self.name)

    # ---------------------------------------------------------------------------- internals
    def _check_running(self) -> None:
        """``SupervisorStopped`` with the reason once the supervisor has stopped."""
        reason = self.stopped_reason()
        if reason is not None:
            raise SupervisorStopped(f"dynamic supervisor {self.name!r} has stopped: {reason}")

    def _clear(self, timeout: float | None) -> None:
        """Stop the children and members of a supervisor marked stopped; drop its records."""
        handles = self._handles.running(timeout)
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
            self._handles.forget()
            for reg in self._records(timeout):
                self.registry.remove(reg.key, timeout=timeout)

    def _abandon(self, record: ChildRecord) -> bool:
        """Remove a record this driver created, unless it changed since; and the spec."""
        try:
            self.registry.remove(record.name, epoch=record.epoch)
        except EpochConflict:
            return False
        records.delete_spec(self.name, record.child_id)
        return True

    def _eligible_nodes(self, include_draining: bool = False) -> list[NodeInfo]:
        return self.config.eligible(self._handles.nodes(), include_draining)

    def _records(self, timeout: float | None) -> list[Registration]:
        regs = self.registry.select(**records.select_filter(self.name), timeout=timeout)
        return [reg for reg in regs if ChildRecord.is_record_of(reg, self.name)]

    def _record(self, child_id: str, timeout: float | None) -> ChildRecord:
        reg = self.registry.entry(child_name(self.name, child_id), fresh=True, timeout=timeout)
        if reg is None or not ChildRecord.is_record_of(reg, self.name):
            raise ChildNotFound(f"no child {child_id!r} under {self.name!r}")
        return ChildRecord.from_registration(reg)

    def _await_running(self, child_id: str, deadline: float) -> DynamicChildInfo:
        """The child once a member runs it (after its first owner died while starting it)."""
        try:
            reg = self.registry.wait_for(child_name(self.name, child_id),
                                         timeout=time_left(deadline))
        except NotRegistered:
            raise StartChildError(f"child {child_id!r} did not start in time: its node died "
                                  f"and no survivor started it") from None
        return records.info_from(reg)

    @staticmethod
    def _loads(regs: Iterable[Registration]) -> dict[str, int]:
        return dict(Counter(_owner(reg) for reg in regs))

    def _choose(self, child: ChildSpec, regs: list[Registration]) -> str:
        loads = self._loads(regs)
        members = [member_of(n, loads.get(n.node_id, 0)) for n in self._eligible_nodes()]
        return self.strategy.choose(child.id, members, requirements_of(child)).id

    def _poke_members(self) -> None:
        for node in self.config.hosts(self._handles.nodes()):
            self._handles.get(node.node_id).reconcile_now.remote()


def _handle_named(name: str) -> DynamicSupervisor:
    """Unpickling: the handle, even of a stopped supervisor (its calls then say so)."""
    return DynamicSupervisor.get(name, include_stopped=True)


def _owner(reg: Registration) -> str:
    return ChildRecord.from_registration(reg).owner


def _cause(exc: RayTaskError) -> HerdError:
    """The herd error a member raised (Ray wraps it); anything else as a SupervisorError."""
    cause = exc.cause
    if isinstance(cause, HerdError):
        return cause
    return SupervisorError(f"a member failed: {describe(exc)[0]}")
