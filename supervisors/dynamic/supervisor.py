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
from ray.exceptions import ActorUnschedulableError, RayActorError, RayError, RayTaskError

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import HerdError, HerdTimeoutError, NoQuorum
from herd.platform.gcs import NodeInfo
from herd.platform.logging import get_logger
from herd.platform.waiting import time_left
from herd.registry import Registration, Registry
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.handles import MemberHandles
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec
from herd.supervisors.dynamic.starting import ChildStarter
from herd.supervisors.errors import (
    PlacementError,
    SupervisorError,
    SupervisorStopped,
)
from herd.supervisors.otp.spec import ChildSpec, LightweightHosts
from herd.supervisors.otp.start_failure import describe
from herd.supervisors.strategies import member_of
from herd.supervisors.warm.spec import WarmPoolSpec

log = get_logger("herd.dynamic")

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
        self._starter = ChildStarter(config.name, lambda: self.config, self.strategy,
                                     self.registry, self._handles, self._check_running)

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
              reconcile_interval_s: float = 1.0, timeout: float | None = None,
              lightweight: LightweightHosts | dict[str, Any] | None = None,
              warm: WarmPoolSpec | dict[str, Any] | None = None) -> DynamicSupervisor:
        """Start (or get, when one with the same settings runs) the supervisor ``name`` with
        one member on every node ``members`` admits. A supervisor of that name that has
        stopped (e.g. escalated) is cleared away first: its members, records and state.
        ``lightweight``: the hosts of ``kind="lightweight"`` children (``LightweightHosts``:
        ``max_children_per_host``, ``lag_threshold_s``, ``kill_grace_s``), one per member.
        ``warm``: standby shells on each member's node for its actor children
        (``{"standby": 2}`` per child shape, see ``herd.supervisors.warm``)."""
        config = DynamicSupervisorSpec.build(
            name=name, members=members, distribution=distribution,
            redistribution=redistribution, max_restarts=max_restarts, max_seconds=max_seconds,
            max_children=max_children, on_exhausted=on_exhausted,
            distribution_options=distribution_options or {}, registry=registry,
            reconcile_interval_s=reconcile_interval_s,
            lightweight=lightweight if lightweight is not None else LightweightHosts(),
            warm=warm)
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
        it is registered as ``<supervisor>/<id>`` (``DynamicChildInfo.name``). A child of
        ``kind="lightweight"`` runs in the host actor of that member's node.

        Raises ``PlacementError`` at once when no member satisfies its labels/resources,
        ``NoQuorum`` without quorum, ``ChildAlreadyStarted`` for a taken id,
        ``SupervisorStopped`` after the supervisor stopped, and ``StartChildError`` when its
        constructor fails or it does not start in time (no record is left behind then)."""
        return self._starter.start_child(spec, timeout)

    def start_children(self, specs: Iterable[ChildSpec | dict[str, Any]],
                       timeout: float | None = None) -> list[DynamicChildInfo | HerdError]:
        """Start many children at once: records created in one registry batch, one call per
        member, lightweight children started in one call on each member's host. Per spec, in
        order, its ``DynamicChildInfo`` or the error ``start_child`` would have raised
        (returned, not raised: each child starts or fails on its own, and a failed one leaves
        no record). Bad specs and ids given twice raise ``ConfigError`` before anything
        starts; ``SupervisorStopped`` / ``PlacementError`` / ``NoQuorum`` as for
        ``start_child``."""
        return self._starter.start_children(specs, timeout)

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
            except (RayActorError, ActorUnschedulableError):  # restarting on a dead node
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
        except (RayActorError, ActorUnschedulableError):
            raise SupervisorError(f"the owner of {child_id!r} is not running; it will be "
                                  f"failed over") from None
        if info is None:
            raise SupervisorError(f"child {child_id!r} changed owner while restarting")
        return info

    def which_children(self, timeout: float | None = None) -> list[DynamicChildInfo]:
        """Every child as its record says; lightweight ones with their calls and estimated
        memory, as their hosts report them."""
        self._check_running()
        live = self._handles.live_ids(timeout)
        regs = self._records(timeout)
        stats = (self._lightweight_stats(live, timeout)
                 if any(ChildRecord.is_lightweight(reg) for reg in regs) else {})
        return [records.info_from(reg, live, stats.get(reg.key)) for reg in regs]

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
            self.registry.remove_many([reg.key for reg in self._records(timeout)],
                                      timeout=timeout)

    def _lightweight_stats(self, live: set[str], timeout: float | None
                           ) -> dict[str, dict[str, Any]]:
        """Child name -> its entry in its host's status, from every member's host."""
        refs = [self._handles.get(node_id).lightweight_status.remote()
                for node_id in live if member_handle(self.name, node_id) is not None]
        stats: dict[str, dict[str, Any]] = {}
        for ref in refs:
            try:
                status = rpc.get(ref, timeout=timeout, what="lightweight status")
            except (RayActorError, ActorUnschedulableError) as exc:  # its node just died
                log.debug("lightweight_status_unavailable", supervisor=self.name,
                          error=repr(exc))
                continue
            except (HerdError, RayError) as exc:  # reported without stats
                log.warning("lightweight_status_unavailable", supervisor=self.name,
                            error=repr(exc))
                continue
            stats.update({child["key"]: child for child in status.get("by_child", ())})
        return stats

    def _eligible_nodes(self, include_draining: bool = False) -> list[NodeInfo]:
        return self.config.eligible(self._handles.nodes(), include_draining)

    def _records(self, timeout: float | None) -> list[Registration]:
        return self._starter.records(timeout)

    def _record(self, child_id: str, timeout: float | None) -> ChildRecord:
        return self._starter.record(child_id, timeout)

    @staticmethod
    def _loads(regs: Iterable[Registration]) -> dict[str, int]:
        return dict(Counter(_owner(reg) for reg in regs))

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
