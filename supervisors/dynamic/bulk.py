"""Many lightweight children of one member at once: claims, starts and exits in batches.

A node failover, the death of a host or a driver's ``start_children`` hands a member thousands
of lightweight children together. One at a time, each would cost two registry writes and a
host call; here a claim costs one ``compare_and_set_many`` (each item expects the owner and
incarnation read, ``ChildRecords.claim_many``; the write bumps the epoch, the fencing token,
as a single claim does) that already names the member's host -- which
runs before any failover -- as the holder, and one ``start_children`` call per
``START_CHUNK`` children on that host. The host is told first which names are about to start
there (``expect``), so a call routed to it between the claim and the start waits for the
child rather than failing. The driver's ``start_children`` keeps two writes per batch (records
created without holder, then named once started), so that a child that fails to start leaves
no record. Each item succeeds or fails on its own.

Exits of lightweight children are gathered for ``EXIT_BATCH_S`` and handled together: a host's
death ends all its children at the same moment.

Restart budgets and host death: a child killed because its host died (its process or node,
or a stuck sibling made the link restart it) is restarted without counting against its own
budget -- it did nothing wrong, and counting would let one misbehaving child exhaust the
budgets of every sibling it shares a host with, which the per-child budget exists to prevent.
The child the loop-lag watchdog blamed for the host's death is charged as for a crash, so a
child that keeps blocking the loop is given up (or escalates) like any crash loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ray.actor import ActorHandle

from herd.registry import HolderDead, Registration
from herd.supervisors.dynamic import handoff, records
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.executor_base import ExecutorBase
from herd.supervisors.dynamic.planner import Exhausted, Forget, Restart, on_exit, on_start_failure
from herd.supervisors.dynamic.running import SUPERSEDED, Running, stop_run
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.errors import StartChildError, SupervisorStopped
from herd.supervisors.lightweight.link import LightweightStart
from herd.supervisors.otp.exit import KILLED
from herd.supervisors.otp.lifecycle import Incarnation
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.start_failure import one_line

#: How long exits are gathered before they are handled together.
EXIT_BATCH_S = 0.005
#: Seconds added to the longest ``start_timeout`` of a batch for the host to start it.
BATCH_START_MARGIN_S = 10.0

Outcome = DynamicChildInfo | Exception | None


class BulkOps(ExecutorBase):
    """Batched operations on lightweight children (callers hold the children's locks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exits: list[tuple[str, Running, str]] = []

    # ------------------------------------------------------------------------ claims
    async def claim_and_start_many(self, wanted: Sequence[ChildRecord], failover: bool = False,
                                   restarted: bool = False) -> None:
        """Claim incarnation + 1 of each record (while it still names its owner and
        incarnation) and start the children on this member's host, in batches.

        One registry write per child: the claim names the host as holder already (the host
        runs before the claim; it is told to hold calls to these names until they start), so
        callers wait on the host for the start instead of on the registry for a second write.
        The claim expects the owner and incarnation read, not the epoch
        (``ChildRecords.claim_many``): it need not wait for the registry to clear the holders
        that died (a node or a host) nor read the records again after."""
        wanted = [r for r in wanted if r.child_id not in self.running]
        if self.halted or not wanted:
            return
        began = time.monotonic()
        specs = await self.specs_of(wanted)
        for record in wanted:
            if specs[record.child_id] is None and self.expired(record):  # it can never start
                await self.forget(record, record.owner, record.incarnation,
                                  "its spec is missing")
        ready = [r for r in wanted if specs[r.child_id] is not None]
        if not ready:
            return
        try:
            host = await self.link.ensure()
            await self.link.expect(host, [r.name for r in ready])
        except Exception as exc:  # no host now: a later reconcile round tries again
            self.log.warning("lightweight_host_unavailable", error=repr(exc))
            self.wake()
            return
        prepared_s = time.monotonic() - began
        down_at = {r.child_id: self.down_at(r.owner) for r in ready} if failover else {}
        region, now = self.region(), time.time()
        results = await self.store.claim_many(ready, self.node_id, region, now, host,
                                              failover=failover, restarted=restarted)
        claimed = [r for r in results if isinstance(r, ChildRecord)]
        errors = [repr(e) for e in results if isinstance(e, Exception)]
        if errors:  # e.g. the registry timed out: a later round claims what is still orphaned
            self.wake()
        self.log.info("children_claimed", count=len(claimed), failover=failover,
                      lost=results.count(None), errors=errors[:3],
                      prepare_s=round(prepared_s, 3),
                      claims_s=round(time.monotonic() - began - prepared_s, 3))
        ready_specs = {r.child_id: spec for r in claimed
                       if (spec := specs[r.child_id]) is not None}
        moved = {r.child_id for r in ready if r.state == "moving"}
        await self._start_claimed(claimed, ready_specs, down_at, host, moved)

    async def _start_claimed(self, claimed: Sequence[ChildRecord], specs: dict[str, ChildSpec],
                             down_at: dict[str, float | None], host: ActorHandle,
                             moved: set[str]) -> None:
        """Start the children whose claims named ``host`` as their holder, on it; those
        ``moved`` here (a drain or a rebalance) get the state their old incarnation handed
        off, as a child started alone does."""
        started, failed = await self._start_on_host(claimed, specs, host)
        if self.halted:
            await asyncio.gather(*(stop_run(run, SUPERSEDED, brutal=True) for _, run in started))
            return
        now = time.time()
        for record, run in started:
            self.running.add(record.child_id, run)
            self.watch_lightweight(record.child_id, run)
            at = down_at.get(record.child_id)
            if at is not None:
                self.metrics.failed_over(now - at)
        self.log.info("children_started", count=len(started), failed=len(failed),
                      host_pid=self.link.host_info.get("pid"))
        await asyncio.gather(*(handoff.restore(self.sup, record.child_id, run.incarnation.handle,
                                               self.log)
                               for record, run in started if record.child_id in moved))
        await self._failed_many(failed, first=False)

    # ------------------------------------------------------------------------ starts
    async def launch_many(self, claimed: Sequence[ChildRecord], specs: dict[str, ChildSpec],
                          first: bool,
                          down_at: dict[str, float | None] | None = None
                          ) -> dict[str, Outcome]:
        """Start the lightweight children of records this member has claimed, in one host
        call, and name the host as their holder in one batch. Per child id: its info, or
        (``first``: the driver's start; the record is then removed) the error."""
        if not claimed:
            return {}
        began = time.monotonic()
        started, failed = await self._start_on_host(claimed, specs)
        outcomes: dict[str, Outcome] = {}
        if self.halted:
            await asyncio.gather(*(stop_run(run, SUPERSEDED, brutal=True) for _, run in started))
            if first:
                await self.forget_many([r for r, _ in started] + [r for r, _ in failed],
                                       "supervisor stopped")
                stopped = SupervisorStopped(f"dynamic supervisor {self.sup!r} has stopped")
                return {r.child_id: stopped for r in claimed}
            return {}
        for record, run in started:
            self.running.add(record.child_id, run)
            self.watch_lightweight(record.child_id, run)
        self.log.info("children_launched", count=len(started), failed=len(failed),
                      host_s=round(time.monotonic() - began, 3))
        outcomes.update(await self._name_holder(started, first, down_at or {}))
        outcomes.update(await self._failed_many(failed, first))
        return outcomes

    async def _start_on_host(self, claimed: Sequence[ChildRecord], specs: dict[str, ChildSpec],
                             on: ActorHandle | None = None
                             ) -> tuple[list[tuple[ChildRecord, Running]],
                                        list[tuple[ChildRecord, StartChildError]]]:
        """Start the children of ``claimed`` on the host in one batch (``on``: only on that
        host, the one their records name): those started (not yet watched) and those that
        failed, with why."""
        if not claimed:
            return [], []
        items = [(r.name, specs[r.child_id]) for r in claimed]
        timeout = max(s.start_timeout for _, s in items) + BATCH_START_MARGIN_S
        try:
            answers: list[LightweightStart | str] = await self.link.start_many(items, timeout,
                                                                               on)
        except Exception as exc:  # the host died, or did not answer in time
            answers = [f"its host failed: {one_line(repr(exc))}"] * len(items)
            # A host that did not answer may have started some: end it so that none of them
            # runs unsupervised (a new host is made for the retry).
            await self.link.restart_host(f"a batched start failed: {one_line(repr(exc))}")
        started: list[tuple[ChildRecord, Running]] = []
        failed: list[tuple[ChildRecord, StartChildError]] = []
        for record, answer in zip(claimed, answers, strict=True):
            spec = specs[record.child_id]
            if isinstance(answer, str):
                failed.append((record, StartChildError(
                    f"child {record.child_id!r} failed to start: {answer}")))
                continue
            incarnation = Incarnation(handle=answer.handle, info=answer.info,
                                      reported=answer.reported, exited=answer.exited,
                                      link=self.link, lightweight=answer)
            started.append((record, Running(spec=spec, incarnation=incarnation,
                                            number=record.incarnation)))
        return started, failed

    async def _name_holder(self, started: list[tuple[ChildRecord, Running]], first: bool,
                           down_at: dict[str, float | None]) -> dict[str, Outcome]:
        if not started:
            return {}
        now, region = time.time(), self.region()
        host = started[0][1].incarnation.holder
        answers = await self.store.write_many(
            [(r, r.started(region, now), {"handle": host, "on_holder_death": "clear"})
             for r, _ in started])
        outcomes: dict[str, Outcome] = {}
        died: list[ChildRecord] = []
        for (record, run), answer in zip(started, answers, strict=True):
            child_id = record.child_id
            if isinstance(answer, Registration):
                outcomes[child_id] = records.info_from(answer)
                at = down_at.get(child_id)
                if at is not None:
                    self.metrics.failed_over(now - at)
            elif isinstance(answer, HolderDead):  # the host died meanwhile
                if first:
                    run.stopping = True
                    self.running.discard(child_id, run)
                    died.append(record)
                    outcomes[child_id] = StartChildError(f"child {child_id!r} died right "
                                                         f"after starting")
            else:  # EpochConflict: removed or superseded while starting
                self.log.warning("claim_lost_while_starting", child_id=child_id,
                                 error=repr(answer))
                await self.running.stop(child_id, SUPERSEDED, brutal=True)
                outcomes[child_id] = (StartChildError(f"child {child_id!r} was removed while "
                                                      f"starting") if first else None)
        await self.forget_many(died, "died while starting")
        self.log.info("children_started", count=sum(isinstance(o, DynamicChildInfo)
                                                     for o in outcomes.values()),
                      of=len(started), host_pid=self.link.host_info.get("pid"))
        return outcomes

    async def _failed_many(self, failed: list[tuple[ChildRecord, StartChildError]],
                           first: bool) -> dict[str, Outcome]:
        if not failed:
            return {}
        self.log.warning("children_start_failed", count=len(failed), error=str(failed[0][1]))
        if first:
            await self.forget_many([r for r, _ in failed], "start failed")
            return {r.child_id: exc for r, exc in failed}
        on_exhausted = self.config().on_exhausted
        for record, exc in failed:
            decision = on_start_failure(record.child_id, str(exc), self.budget(record.child_id),
                                        on_exhausted)
            if isinstance(decision, Exhausted):
                await self.exhausted_child(record, decision)
        return {}  # else a later reconcile round tries again (the records name this member)

    # ------------------------------------------------------------------------- exits
    def watch_lightweight(self, child_id: str, run: Running) -> None:
        """Handle the child's exit (with the others of the same moment) when it comes."""
        run.incarnation.exited.add_done_callback(
            lambda done: self._exit_seen(child_id, run, done.result()))

    def _exit_seen(self, child_id: str, run: Running, reason: str) -> None:
        if run.stopping or self.running.get(child_id) is not run:
            return
        if not self._exits:
            asyncio.get_running_loop().call_later(EXIT_BATCH_S, self._flush_exits)
        self._exits.append((child_id, run, reason))

    def _flush_exits(self) -> None:
        exits, self._exits = self._exits, []
        self.tasks.spawn_many([child_id for child_id, _, _ in exits],
                              lambda: self.exited_many(exits))

    async def exited_many(self, exits: list[tuple[str, Running, str]]) -> None:
        """Handle the exits of lightweight children this member runs, together."""
        live = [(c, run, why) for c, run, why in exits
                if not run.stopping and self.running.get(c) is run]
        for child_id, run, _ in live:
            self.running.discard(child_id, run)
        if not live:
            return
        current = await self.store.current([c for c, _, _ in live])
        on_exhausted = self.config().on_exhausted
        restart: list[ChildRecord] = []
        forget: list[ChildRecord] = []
        hosts_died = False
        for child_id, run, reason in live:
            record = current.get(child_id)
            if record is None or not record.names(self.node_id, run.number):
                continue
            host_died = reason == KILLED and run.incarnation.holder is not self.link.host
            hosts_died = hosts_died or host_died
            if host_died and self.link.culprit != record.name:
                decision: Any = (Forget(f"exited: {reason}") if run.spec.restart == "temporary"
                                 else Restart())  # not the child's fault: no budget counted
            else:
                decision = on_exit(child_id, run.spec.restart, reason, self.budget(child_id),
                                   on_exhausted)
            if isinstance(decision, Forget):
                forget.append(record)
            elif isinstance(decision, Exhausted):
                await self.exhausted_child(record, decision)
            else:
                restart.append(record)
        self.log.warning("children_exited", count=len(live), restart=len(restart),
                         forget=len(forget), reason=live[0][2],
                         host_failure=self.link.last_failure)
        await self.forget_many(forget, "exited")
        if restart and not self.halted:
            self.metrics.restarted(live[0][2], count=len(restart))
            await self.claim_and_start_many(restart, restarted=True)
