"""Starting children of a dynamic supervisor from the driver: one (``start_child``) or many
(``start_children``), and reading its records.

A start places the child with the distribution strategy, creates its record (epoch 0 -> 1,
naming the member chosen, ``start_by`` = the deadline: before it only this start may start the
child) and asks that member to start it. ``start_children`` creates every record with one
``compare_and_set_many`` and makes one call per member (``start_owned_many``), which saves the
specs together and starts the lightweight children in one call on its host.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ray.exceptions import ActorUnschedulableError, RayActorError, RayTaskError

from herd.platform import rpc
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.logging import get_logger
from herd.platform.waiting import time_left
from herd.registry import Registration, Registry
from herd.registry.errors import EpochConflict, NotRegistered
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.child_record import ChildRecord, child_name
from herd.supervisors.dynamic.handles import MemberHandles
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec, check_child_spec
from herd.supervisors.errors import (
    ChildAlreadyStarted,
    ChildNotFound,
    StartChildError,
    SupervisorError,
)
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.start_failure import describe
from herd.supervisors.strategies import DistributionStrategy, member_of, requirements_of

log = get_logger("herd.dynamic")

#: Extra time the driver waits for ``start_owned`` beyond the child's own ``start_timeout``.
START_MARGIN_S = 10.0
#: ``start_children``: extra seconds per thousand children (specs saved, records written).
BULK_S_PER_1000 = 5.0


class ChildStarter:
    """The driver's side of starting children; ``check_running`` raises ``SupervisorStopped``
    once the supervisor has stopped."""

    def __init__(self, name: str, config: Callable[[], DynamicSupervisorSpec],
                 strategy: DistributionStrategy, registry: Registry, handles: MemberHandles,
                 check_running: Callable[[], None]) -> None:
        self.name = name
        self.config = config
        self.strategy = strategy
        self.registry = registry
        self.handles = handles
        self.check_running = check_running

    # ------------------------------------------------------------------------- records
    def records(self, timeout: float | None) -> list[Registration]:
        regs = self.registry.select(**records.select_filter(self.name), timeout=timeout)
        return [reg for reg in regs if ChildRecord.is_record_of(reg, self.name)]

    def record(self, child_id: str, timeout: float | None) -> ChildRecord:
        reg = self.registry.entry(child_name(self.name, child_id), fresh=True, timeout=timeout)
        if reg is None or not ChildRecord.is_record_of(reg, self.name):
            raise ChildNotFound(f"no child {child_id!r} under {self.name!r}")
        return ChildRecord.from_registration(reg)

    def abandon(self, record: ChildRecord) -> bool:
        """Remove a record this driver created, unless it changed since; and the spec."""
        try:
            self.registry.remove(record.name, epoch=record.epoch)
        except EpochConflict:
            return False
        records.delete_spec(self.name, record.child_id)
        return True

    # --------------------------------------------------------------------------- one
    def start_child(self, spec: ChildSpec | dict[str, Any],
                    timeout: float | None) -> DynamicChildInfo:
        child = check_child_spec(spec)
        wait_s = timeout or (child.start_timeout + START_MARGIN_S)
        deadline = time.monotonic() + wait_s
        self.check_running()
        (record,) = self._placed([child], wait_s)
        try:
            reg = self.registry.compare_and_set(record.name, 0, meta=record.to_meta(),
                                                on_holder_death="clear",
                                                timeout=time_left(deadline))
        except EpochConflict:
            raise ChildAlreadyStarted(child.id) from None
        record = ChildRecord.from_registration(reg)
        records.save_spec(self.name, child)
        log.info("child_placed", supervisor=self.name, child_id=child.id,
                 node_id=record.owner[:12], kind=child.kind)
        try:
            return rpc.get(self.handles.get(record.owner).start_owned.remote(record, child),
                           timeout=time_left(deadline), what=f"start_child {child.id!r}")
        except RayTaskError as exc:
            if not isinstance(exc.cause, HerdError):  # e.g. args the member cannot unpickle
                self.abandon(record)
                raise StartChildError(f"child {child.id!r} failed to start: "
                                      f"{describe(exc)[0]}") from None
            raise exc.cause from exc.cause.__cause__  # the member removed the record
        except (RayActorError, ActorUnschedulableError):  # its member is gone: stopped, or
            return self._member_gone(record, deadline)  # its node died (it waits there)
        except HerdTimeoutError:
            return self._timed_out(record, wait_s)

    # --------------------------------------------------------------------------- many
    def start_children(self, specs: Iterable[ChildSpec | dict[str, Any]],
                       timeout: float | None) -> list[DynamicChildInfo | HerdError]:
        children = [check_child_spec(spec) for spec in specs]
        taken = [c for c, n in Counter(c.id for c in children).items() if n > 1]
        if taken:
            raise ConfigError("child ids must be unique in one start_children call",
                              field="specs", value=taken[:5])
        if not children:
            return []
        wait_s = timeout or (max(c.start_timeout for c in children) + START_MARGIN_S
                             + BULK_S_PER_1000 * len(children) / 1000)
        deadline = time.monotonic() + wait_s
        self.check_running()
        placed = self._placed(children, wait_s)
        answers = self.registry.compare_and_set_many(
            [(r.name, 0, {"meta": r.to_meta(), "on_holder_death": "clear"}) for r in placed],
            timeout=time_left(deadline))
        results: list[DynamicChildInfo | HerdError | None] = [None] * len(children)
        by_owner: dict[str, list[int]] = {}
        created: list[ChildRecord | None] = [None] * len(children)
        for i, answer in enumerate(answers):
            if isinstance(answer, Registration):
                created[i] = ChildRecord.from_registration(answer)
                by_owner.setdefault(placed[i].owner, []).append(i)
            elif isinstance(answer, EpochConflict):
                results[i] = ChildAlreadyStarted(children[i].id)
            else:
                results[i] = answer
        refs = {owner: self.handles.get(owner).start_owned_many.remote(
            [created[i] for i in indexes], [children[i] for i in indexes])
            for owner, indexes in by_owner.items()}
        log.info("children_placed", supervisor=self.name, count=len(placed),
                 members=len(refs))
        for owner, ref in refs.items():
            indexes = by_owner[owner]
            for i, outcome in zip(indexes, self._outcomes(ref, owner, [
                    r for i in indexes if (r := created[i]) is not None], deadline),
                    strict=True):
                results[i] = outcome
        return [r if r is not None else StartChildError(f"child {children[i].id!r} was "
                                                        f"superseded while starting")
                for i, r in enumerate(results)]

    def _outcomes(self, ref: Any, owner: str, owned: Sequence[ChildRecord],
                  deadline: float) -> list[DynamicChildInfo | HerdError | None]:
        try:
            return list(rpc.get(ref, timeout=time_left(deadline),
                                what=f"start_children on {owner[:12]}"))
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, HerdError):  # SupervisorStopped: the member removed them
                return [cause] * len(owned)
            error = StartChildError(f"children failed to start: {describe(exc)[0]}")
            return [error if self.abandon(r) else records.info_from(self._reg(r))
                    for r in owned]
        except (RayActorError, ActorUnschedulableError):
            return [self._member_gone(r, deadline, raising=False) for r in owned]
        except HerdTimeoutError:
            return [self._timed_out(r, time_left(deadline), raising=False) for r in owned]

    # ---------------------------------------------------------------------- internals
    def _placed(self, children: Sequence[ChildSpec], wait_s: float) -> list[ChildRecord]:
        """The new records of ``children``, each placed with the strategy (loads counted as
        they are placed, for load-aware strategies)."""
        config = self.config()
        regs = (self.records(wait_s)
                if config.max_children is not None or self.strategy.load_aware else [])
        if config.max_children is not None and len(regs) + len(children) > config.max_children:
            raise SupervisorError(f"{self.name!r} would have more than max_children="
                                  f"{config.max_children} children")
        loads = Counter(ChildRecord.from_registration(reg).owner for reg in regs)
        nodes = config.eligible(self.handles.nodes())
        start_by = time.time() + wait_s
        placed = []
        for child in children:
            members = [member_of(n, loads.get(n.node_id, 0)) for n in nodes]
            owner = self.strategy.choose(child.id, members, requirements_of(child)).id
            loads[owner] += 1
            placed.append(ChildRecord(sup=self.name, child_id=child.id, owner=owner,
                                      restart=child.restart, start_by=start_by,
                                      requirements=requirements_of(child), kind=child.kind))
        return placed

    def _reg(self, record: ChildRecord) -> Registration:
        reg = self.registry.entry(record.name, fresh=True)
        if reg is None or isinstance(reg, list):
            raise ChildNotFound(f"no child {record.child_id!r} under {self.name!r}")
        return reg

    def _member_gone(self, record: ChildRecord, deadline: float,
                     raising: bool = True) -> Any:
        """Its member is gone (stopped, or its node died): a survivor fails the child over."""
        self.handles.forget(record.owner)
        try:
            self.check_running()
        except HerdError:
            self.abandon(record)
            if raising:
                raise
            return StartChildError(f"child {record.child_id!r}: the supervisor stopped")
        try:
            reg = self.registry.wait_for(record.name, timeout=time_left(deadline))
        except NotRegistered:
            error = StartChildError(f"child {record.child_id!r} did not start in time: its node "
                                    f"died and no survivor started it")
            if raising:
                raise error from None
            return error
        return records.info_from(reg)

    def _timed_out(self, record: ChildRecord, wait_s: float, raising: bool = True) -> Any:
        """Its member did not answer in time. Remove the record unless the child got
        registered meanwhile; a start still in flight then finds it gone and stops."""
        if not self.abandon(record):  # it changed: started (or failed over) after all
            return records.info_from(self._reg(record))
        error = StartChildError(f"child {record.child_id!r} did not start within "
                                f"{wait_s:.1f} s")
        if raising:
            raise error
        return error
