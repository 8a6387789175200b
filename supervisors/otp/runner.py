"""The side effects of a supervisor's core on Ray (``herd.supervisors.otp.core.Runner``):
starting and stopping its children, naming them in the registry, reporting their exits to the
supervisor, and the hosts its children run in: the host of its lightweight children and, when
its spec has ``warm``, the pool of standby shells for its actor children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

import ray

from herd.platform.errors import HerdError
from herd.supervisors.errors import StartChildError
from herd.supervisors.lightweight.link import HostLink
from herd.supervisors.otp.lifecycle import (
    Incarnation,
    Naming,
    fail_start,
    near_supervisor,
    shutdown,
    start_lightweight,
    start_worker,
)
from herd.supervisors.otp.naming import ChildNames
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec
from herd.supervisors.warm.pool import WarmPool

__all__ = ["RayRunner", "RunnerOwner"]


class RunnerOwner(Protocol):
    """What the runner needs of its supervisor (``SupervisorServer``)."""

    name: str
    names: ChildNames
    mailbox: asyncio.Lock

    @property
    def spec(self) -> SupervisorSpec | None: ...

    def post_exit(self, child_id: str, incarnation: Incarnation, reason: str) -> None: ...

    async def start_nested(self, spec: ChildSpec) -> Incarnation: ...


class RayRunner:
    """The core's side effects on Ray: start/stop children, name them, report their exits."""

    def __init__(self, owner: RunnerOwner) -> None:
        self.owner = owner
        self.link: HostLink | None = None
        """The host of the lightweight children (created with the first one)."""
        self.named_on: dict[str, Any] = {}
        """Lightweight child id -> the host holding its registry name. A lightweight child that
        crashed and is restarted on the same host keeps its name (and callers' cached lookups):
        calls arriving meanwhile wait on the host for the new incarnation."""
        self.pool: WarmPool | None = None
        """Standby shells for its actor children (when its spec has ``warm``)."""
        self.handover: dict[str, Incarnation] = {}
        """Actor child id -> its incarnation that exited and still holds its name: the next
        start of that child takes the record over (one registry write on the restart path, not
        an unregister and a register); ``release`` unregisters it if no start took it."""

    def warm(self, children: Iterable[ChildSpec]) -> None:
        """Keep standby shells for the shapes of ``children`` (refilled while no operation
        runs), if the supervisor's spec asks for them."""
        config = self.owner.spec.warm if self.owner.spec is not None else None
        if config is None:
            return
        if self.pool is None:
            self.pool = WarmPool(self.owner.name, config, place=near_supervisor,
                                 quiet=lambda: not self.owner.mailbox.locked())
        specs = list(children)
        # "auto": a one_for_all restart needs a shell for every child of a shape at once
        self.pool.want(specs, takeover_sets=[{spec.id for spec in specs}])

    async def start(self, spec: ChildSpec) -> Incarnation:
        previous = self.handover.pop(spec.id, None)
        try:
            incarnation = await self._create(spec, previous)
        except Exception as exc:
            if previous is not None:  # its name was not taken over: release unregisters it
                self.handover[spec.id] = previous
            if isinstance(exc, StartChildError):
                raise
            fail_start(spec.id, exc)  # OTP catches whatever the start function throws
        if not incarnation.named and self.named_on.get(spec.id) is not incarnation.holder:
            try:
                incarnation.name = await self.owner.names.register(
                    spec.id, incarnation.holder, incarnation.info,
                    previous.name if previous is not None else None)
            except (HerdError, ray.exceptions.RayError) as exc:
                await shutdown(incarnation, spec.model_copy(update={"shutdown": "brutal_kill"}))
                raise StartChildError(f"child {spec.id!r} could not be registered: "
                                      f"{exc}") from None
            if incarnation.lightweight is not None:
                self.named_on[spec.id] = incarnation.holder
        incarnation.exited.add_done_callback(
            lambda done: self.owner.post_exit(spec.id, incarnation, done.result()))
        return incarnation

    async def stop(self, spec: ChildSpec, running: Incarnation) -> str:
        reason = await shutdown(running, spec)
        await self.unregister(spec.id, running)
        return reason

    def hand_over(self, child_id: str, exited: Incarnation) -> None:
        """``exited`` (an actor child's incarnation whose process is gone) keeps its name until
        the child's next start takes it over, or ``release``."""
        if exited.name is not None:
            self.handover[child_id] = exited
        else:
            self.handover.pop(child_id, None)

    async def release(self, child_id: str, exited: Incarnation) -> None:
        """Unregister ``exited`` unless a start of its child took its name over."""
        if self.handover.get(child_id) is not exited:
            return
        del self.handover[child_id]
        await self.owner.names.unregister(child_id, exited.handle)

    async def unregister(self, child_id: str, running: Incarnation) -> None:
        if running.lightweight is not None:
            if self.named_on.get(child_id) is not running.holder:
                return
            del self.named_on[child_id]
        await self.owner.names.unregister(child_id, running.holder)

    def close(self) -> None:
        """The supervisor stopped: end the host of its lightweight children."""
        if self.link is not None:
            self.link.close()
        if self.pool is not None:
            self.pool.close()

    async def _create(self, spec: ChildSpec, previous: Incarnation | None) -> Incarnation:
        if spec.kind == "lightweight":
            if self.link is None:
                config = (self.owner.spec.lightweight if self.owner.spec is not None
                          else SupervisorSpec().lightweight)
                self.link = HostLink(self.owner.name, config)
            return await start_lightweight(self.link, spec, self.owner.names.key(spec.id))
        if spec.supervisor is None:
            names = self.owner.names
            taken_over = previous.name if previous is not None else None
            naming = Naming(
                register=lambda holder, meta: names.register(spec.id, holder, meta, taken_over),
                unregister=lambda holder: names.unregister(spec.id, holder))
            return await start_worker(spec, self.pool, naming)
        return await self.owner.start_nested(spec)
