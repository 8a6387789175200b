"""Where a dynamic supervisor keeps its durable state, with a blocking face (the driver) and an
asyncio face (the member actors, which never block their event loop).

* One registry record per child (``herd.supervisors.dynamic.child_record``), under the child's
  name ``<supervisor>/<id>``, registered with ``on_holder_death="clear"``: when the child's
  process dies the record stays, without holder, so survivors can find and claim it.
  ``ChildRecords`` reads and writes them for a member; every write is a compare-and-set (or a
  removal) at an epoch it read, retried by ``ChildRecords.retry`` while the record still says
  what the operation expects.
* The child's spec (which may hold a class object, not JSON) and any handoff state live in the
  GCS KV store under ``dsup/<supervisor>/...``; so do the supervisor's configuration, the
  children given up and, once it stopped, why. A spec is written only after its record was
  created, so a taken id never overwrites a running child's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from ray import cloudpickle

from herd.platform import kv
from herd.registry import AsyncRegistry, MetaMatch, Registration, Written
from herd.registry.errors import EpochConflict
from herd.supervisors.dynamic.child_record import SUP_META, ChildRecord
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec
from herd.supervisors.errors import SupervisorError
from herd.supervisors.lightweight.handle import LightweightHandle
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.warm.handle import WarmHandle

T = TypeVar("T")

#: Compare-and-set conflicts in a row after which an operation gives up (each conflict means the
#: record changed without changing what the operation expects, e.g. its holder was cleared).
CAS_RETRIES = 5
#: KV reads or writes a member has in flight at once when it handles many children together.
KV_CONCURRENCY = 500
#: Above this many records, reading them again is one ``select`` rather than a read each.
FRESH_ONE_BY_ONE = 16


# ------------------------------------------------------------------------------- keys
def config_key(name: str) -> str:
    return f"dsup/{name}/config"


def _spec_key(name: str, child_id: str) -> str:
    return f"dsup/{name}/spec/{child_id}"


def _handoff_key(name: str, child_id: str) -> str:
    return f"dsup/{name}/handoff/{child_id}"


def _given_up_key(name: str, child_id: str) -> str:
    return f"dsup/{name}/given_up/{child_id}"


def _stopped_key(name: str) -> str:
    return f"dsup/{name}/stopped"


# ------------------------------------------------------------------- blocking (driver)
def save_config(spec: DynamicSupervisorSpec) -> None:
    kv.put_object(config_key(spec.name), spec.model_dump())


def load_config(name: str) -> DynamicSupervisorSpec | None:
    data = kv.get_object(config_key(name))
    return None if data is None else DynamicSupervisorSpec(**data)


def save_spec(name: str, spec: ChildSpec) -> None:
    kv.put(_spec_key(name, spec.id), cloudpickle.dumps(spec))


def delete_spec(name: str, child_id: str) -> None:
    kv.delete(_spec_key(name, child_id))
    kv.delete(_handoff_key(name, child_id))


def given_up(name: str) -> dict[str, dict[str, Any]]:
    prefix = f"dsup/{name}/given_up/"
    return {key[len(prefix):]: kv.get_object(key) for key in kv.keys(prefix)}


def mark_stopped(name: str, reason: str) -> None:
    kv.put_object(_stopped_key(name), {"reason": reason, "at": time.time()})


def load_state(name: str) -> tuple[DynamicSupervisorSpec | None, str | None]:
    """The configuration and the stop reason (None while running), read together."""
    stopped = kv.get_object(_stopped_key(name))
    return load_config(name), None if stopped is None else stopped["reason"]


def forget(name: str) -> None:
    """Delete every KV key of the supervisor (after ``stop``)."""
    for key in kv.keys(f"dsup/{name}/"):
        kv.delete(key)


# --------------------------------------------------------------------- asyncio (member)
async def aload_state(name: str) -> tuple[DynamicSupervisorSpec | None, str | None]:
    data = await kv.aget_object(config_key(name))
    stopped = await kv.aget_object(_stopped_key(name))
    return (None if data is None else DynamicSupervisorSpec(**data),
            None if stopped is None else stopped["reason"])


async def aload_spec(name: str, child_id: str) -> ChildSpec | None:
    raw = await kv.aget(_spec_key(name, child_id))
    return None if raw is None else cloudpickle.loads(raw)


async def aload_specs(name: str, child_ids: Iterable[str]) -> dict[str, ChildSpec | None]:
    """``aload_spec`` for many children (``KV_CONCURRENCY`` reads in flight)."""
    ids = list(child_ids)
    found: dict[str, ChildSpec | None] = {}
    for first in range(0, len(ids), KV_CONCURRENCY):
        part = ids[first:first + KV_CONCURRENCY]
        for child_id, spec in zip(part, await asyncio.gather(
                *(aload_spec(name, c) for c in part)), strict=True):
            found[child_id] = spec
    return found


async def asave_specs(name: str, specs: Sequence[ChildSpec]) -> None:
    for first in range(0, len(specs), KV_CONCURRENCY):
        await asyncio.gather(*(kv.aput(_spec_key(name, spec.id), cloudpickle.dumps(spec))
                               for spec in specs[first:first + KV_CONCURRENCY]))


async def adelete_specs(name: str, child_ids: Sequence[str]) -> None:
    for first in range(0, len(child_ids), KV_CONCURRENCY):
        await asyncio.gather(*(adelete_spec(name, c)
                               for c in child_ids[first:first + KV_CONCURRENCY]))


async def adelete_spec(name: str, child_id: str) -> None:
    await kv.adelete(_spec_key(name, child_id))
    await kv.adelete(_handoff_key(name, child_id))


async def asave_handoff(name: str, child_id: str, state: Any) -> None:
    await kv.aput(_handoff_key(name, child_id), cloudpickle.dumps(state))


async def atake_handoff(name: str, child_id: str) -> tuple[bool, Any]:
    """The state a moved child handed off, if any (kept until ``adrop_handoff``)."""
    raw = await kv.aget(_handoff_key(name, child_id))
    return (False, None) if raw is None else (True, cloudpickle.loads(raw))


async def adrop_handoff(name: str, child_id: str) -> None:
    await kv.adelete(_handoff_key(name, child_id))


async def arecord_gave_up(name: str, child_id: str, reason: str) -> None:
    await kv.aput_object(_given_up_key(name, child_id), {"reason": reason, "at": time.time()})


async def amark_stopped(name: str, reason: str) -> None:
    await kv.aput_object(_stopped_key(name), {"reason": reason, "at": time.time()})


# ------------------------------------------------------------------------- the records
def info_of(record: ChildRecord, handle: Any, live_nodes: set[str] | None = None,
            stats: dict[str, Any] | None = None) -> DynamicChildInfo:
    """What ``which_children`` reports about a record whose holder is ``handle``; with
    ``live_nodes``, a record whose owner is not among them is ``orphaned``; ``stats``: a
    lightweight child's entry in its host's status (calls, memory)."""
    status: str = record.state
    if record.lightweight and handle is not None:  # the host: calls go through it
        handle = LightweightHandle(handle, record.name)
    elif record.warm and handle is not None:  # its shell: calls go through it
        handle = WarmHandle(handle)
    if live_nodes is not None and record.owner not in live_nodes:
        status = "orphaned"
    elif status == "running" and handle is None:
        status = "restarting"
    return DynamicChildInfo(
        id=record.child_id, name=record.name, node_id=record.owner, region=record.region,
        epoch=record.epoch, incarnation=record.incarnation, restarts=record.restarts,
        failovers=record.failovers, status=status, handle=handle, restart=record.restart,
        started_at=record.started_at, kind=record.kind,
        calls=None if stats is None else stats.get("calls"),
        memory_bytes=None if stats is None else stats.get("memory_bytes"))


def info_from(reg: Registration, live_nodes: set[str] | None = None,
              stats: dict[str, Any] | None = None) -> DynamicChildInfo:
    return info_of(ChildRecord.from_registration(reg), reg.handle, live_nodes, stats)


def select_filter(sup: str) -> dict[str, Any]:
    """The ``select`` arguments that find every child record of ``sup``."""
    return {"prefix": f"{sup}/", "meta": {SUP_META: sup}}


class ChildRecords:
    """The child records of one supervisor, for a member (asyncio, never blocking)."""

    def __init__(self, sup: str, registry: AsyncRegistry) -> None:
        self.sup = sup
        self.registry = registry

    async def all(self) -> list[ChildRecord]:
        regs = await self.registry.select(**select_filter(self.sup), handles=False)
        return [ChildRecord.from_registration(r) for r in regs
                if ChildRecord.is_record_of(r, self.sup)]

    async def fresh(self, child_id: str) -> ChildRecord | None:
        """The record as the registry has it now; None when absent (or not this
        supervisor's)."""
        reg = await self.registry.entry(self.name(child_id), fresh=True)
        if reg is None or not ChildRecord.is_record_of(reg, self.sup):
            return None
        return ChildRecord.from_registration(reg)

    def name(self, child_id: str) -> str:
        return ChildRecord(self.sup, child_id, "").name

    async def write(self, current: ChildRecord, new: ChildRecord, handle: Any = None,
                    **changes: Any) -> Registration:
        """Compare-and-set the record from ``current`` (its epoch) to ``new``'s meta and
        ``handle`` (None: no holder). ``EpochConflict`` if it changed meanwhile."""
        reg: Registration = await self.registry.compare_and_set(
            current.name, current.epoch, handle=handle, meta=new.to_meta(), **changes)
        return reg

    async def remove(self, current: ChildRecord) -> bool:
        """Remove the record if it still has ``current``'s epoch (``EpochConflict`` else)."""
        await self.registry.remove(current.name, epoch=current.epoch)
        return True

    async def current(self, child_ids: Sequence[str]) -> dict[str, ChildRecord | None]:
        """The records of ``child_ids`` as the registry has them now (None: absent)."""
        if len(child_ids) <= FRESH_ONE_BY_ONE:
            found = await asyncio.gather(*(self.fresh(c) for c in child_ids))
            return dict(zip(child_ids, found, strict=True))
        every = {r.child_id: r for r in await self.all()}
        return {c: every.get(c) for c in child_ids}

    async def write_many(self, items: Sequence[tuple[ChildRecord, ChildRecord, dict[str, Any]]]
                         ) -> list[Registration | Exception]:
        """``write`` for many records in one ``compare_and_set_many``: per item ``(current,
        new, changes)``, in order, the new registration or the error (returned)."""
        answers = await self.registry.compare_and_set_many(
            [(cur.name, cur.epoch, {"meta": new.to_meta(), **changes})
             for cur, new, changes in items])
        return cast(list[Registration | Exception], answers)  # full=True: no Written

    async def claim_many(self, currents: Sequence[ChildRecord], owner: str,
                         region: str | None, at: float, holder: Any, *, failover: bool,
                         restarted: bool) -> list[ChildRecord | Exception | None]:
        """Claim the next incarnation of each record for ``owner``, running under ``holder``
        (registered with ``on_holder_death="clear"``), if it still names the owner and
        incarnation read, whatever else changed (``MetaMatch``: the registry clearing a dead
        holder, which bumps the epoch, does not make the claim conflict). Every item carries
        the same changes (``ChildRecord.claim_patch``), checked and sent once. Per record, in
        order: its ``claimed_running`` record as written (new epoch and entry id), None when
        the record names another owner or incarnation or is gone (lost to someone else), or
        the error. The registry sends back only the epochs (``full=False``)."""
        changes = {**ChildRecord.claim_patch(owner, region, at, failover=failover,
                                             restarted=restarted),
                   "handle": holder, "on_holder_death": "clear"}
        answers = await self.registry.compare_and_set_many(
            [(cur.name, MetaMatch({"owner": cur.owner, "incarnation": cur.incarnation}),
              changes) for cur in currents], full=False)
        return [replace(cur.claimed_running(owner, region, at, failover=failover,
                                            restarted=restarted),
                        epoch=answer.epoch, entry_id=answer.entry_id,
                        has_holder=holder is not None, holder=holder)
                if isinstance(answer, Written) else
                None if isinstance(answer, EpochConflict) else answer
                for cur, answer in zip(currents, answers, strict=True)]

    async def remove_many(self, records: Sequence[ChildRecord]) -> list[Any]:
        """``remove`` for many records in one ``remove_many`` (errors returned)."""
        return await self.registry.remove_many([(r.name, r.epoch) for r in records])

    async def retry_many(self, firsts: Sequence[ChildRecord], still: Callable[[ChildRecord], bool],
                         write: Callable[[list[ChildRecord]], Awaitable[list[Any]]]
                         ) -> dict[str, Any]:
        """``retry`` for many records, each write of a round one batch: per child id the
        result of its write, None when its record is gone or no longer satisfies ``still``,
        or ``SupervisorError`` after ``CAS_RETRIES`` conflicts. Results other than
        ``EpochConflict`` (e.g. ``HolderDead``) are returned as they are."""
        pending: dict[str, ChildRecord | None] = {r.child_id: r for r in firsts}
        results: dict[str, Any] = {}
        for _ in range(CAS_RETRIES):
            ready = [r for r in pending.values() if r is not None and still(r)]
            results.update({c: None for c, r in pending.items() if r is None or not still(r)})
            if not ready:
                return results
            conflicted = []
            for record, answer in zip(ready, await write(ready), strict=True):
                if isinstance(answer, EpochConflict):
                    conflicted.append(record.child_id)
                else:
                    results[record.child_id] = answer
            if not conflicted:
                return results
            pending = await self.current(conflicted)
        for child_id in pending:
            results[child_id] = SupervisorError(
                f"the record of child {child_id!r} of {self.sup!r} kept changing "
                f"({CAS_RETRIES} conflicts in a row)")
        return results

    async def retry(self, child_id: str, first: ChildRecord | None,
                    still: Callable[[ChildRecord], bool],
                    write: Callable[[ChildRecord], Awaitable[T]]) -> T | None:
        """The one compare-and-set loop of the member: ``write`` (a compare-and-set or a
        removal at the record's epoch) the current record -- ``first``, or a fresh read --
        while ``still(record)`` holds, reading it again after each ``EpochConflict``.

        None when the record is gone or no longer satisfies ``still`` (another member, or a
        terminate, got there first); ``SupervisorError`` after ``CAS_RETRIES`` conflicts."""
        current = first if first is not None else await self.fresh(child_id)
        for _ in range(CAS_RETRIES):
            if current is None or not still(current):
                return None
            try:
                return await write(current)
            except EpochConflict:
                current = await self.fresh(child_id)
        raise SupervisorError(f"the record of child {child_id!r} of {self.sup!r} kept changing "
                              f"({CAS_RETRIES} conflicts in a row)")
