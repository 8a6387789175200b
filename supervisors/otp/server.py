"""The supervisor as one async Ray actor: a thin shell that runs :class:`SupervisorCore`.

Every request and every child exit is one operation on the core, run one at a time (an
``asyncio.Lock`` plays the gen_server mailbox). Children are created by this actor, so they are
owned by it: when its process dies, Ray kills them (OTP's links).

A supervisor is itself a herd child (monitor method, stop method), so it can be nested under
another supervisor: ``init`` starts its children and doubles as its ready call. When it stops
(intensity exceeded, auto_shutdown, ``stop``) it terminates its children in reverse order and its
monitor calls return the reason; its parent then ends its process.

A root supervisor is ``durable``: detached, named ``herd/sup/<name>``, ``max_restarts=-1``, and its
spec (flags and the current child specs) is written through to the GCS KV store. When Ray restarts
its process (the process or its node died), it reads the spec back and starts its children again.
When it stops on purpose it deletes the spec, records why it stopped (``stopped_key``: read by
``Supervisor.stopped_reason`` after the actor is gone, cleared when the name is started afresh)
and exits, so Ray does not restart it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from typing import Any

import ray
from ray import cloudpickle

from herd.platform import kv
from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_GROUP, MONITOR_METHOD
from herd.supervisors.errors import SupervisorRestarting, SupervisorStopped
from herd.supervisors.otp import metrics as static_metrics
from herd.supervisors.otp.core import Child, Stop, SupervisorCore
from herd.supervisors.otp.exit import SHUTDOWN, ExitSignal
from herd.supervisors.otp.harness import READY_METHOD, STOP_METHOD, ready_info
from herd.supervisors.otp.info import ChildInfo
from herd.supervisors.otp.lifecycle import (
    Incarnation,
    adopt,
    child_options,
    near_supervisor,
    spawn,
)
from herd.supervisors.otp.naming import ChildNames
from herd.supervisors.otp.runner import RayRunner
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec

__all__ = ["SupervisorActor", "root_actor_name", "spec_key", "stopped_key"]

log = get_logger("herd.supervisors.actor")

ROOT_PREFIX = "herd/sup/"
SPEC_PREFIX = "supervisors/otp/"
STOPPED_PREFIX = "supervisors/otp-stopped/"
NESTED_CALL_TIMEOUT_S = 30.0
#: A root that stopped stays this long before its process exits, so that the replies of its
#: monitor calls (the exit reason) reach the watchers before the process is gone.
EXIT_LINGER_S = 0.5


def root_actor_name(name: str) -> str:
    return f"{ROOT_PREFIX}{name}"


def spec_key(name: str) -> str:
    return f"{SPEC_PREFIX}{name}"


def stopped_key(name: str) -> str:
    """KV key of why the root supervisor ``name`` stopped (absent while it runs)."""
    return f"{STOPPED_PREFIX}{name}"


class SupervisorServer:
    """One supervisor (root or nested); ``SupervisorActor`` is its Ray actor class."""

    def __init__(self, name: str, durable: bool) -> None:
        self.name = name
        self.durable = durable
        self.signal = ExitSignal()
        self.stopped: str | None = None
        """Why it stopped, for people: the exit reason and what happened."""
        self.mailbox = asyncio.Lock()
        self.core: SupervisorCore[Incarnation] | None = None
        self.runner = RayRunner(self)
        self.names = ChildNames(name, None)
        self._spec: SupervisorSpec | None = None
        self._saved_ids: tuple[str, ...] | None = None
        self._log = log.bind(supervisor=name)
        self._reboot_due = durable and _was_restarted()
        if self._reboot_due:
            ray.get_runtime_context().current_actor.reboot.remote()

    # ------------------------------------------------------------------ lifecycle
    async def init(self, spec: SupervisorSpec) -> dict[str, Any]:
        """Start the children of ``spec`` (raises ``StartChildError``, leaving none running)."""
        async with self.mailbox:
            await self._init(spec)
        return ready_info()

    async def reboot(self) -> None:
        """After Ray restarted this root: start the saved spec's children, once (sent by
        ``__init__``; or by the first API call, as a fast poller starves that self-call)."""
        if not self._reboot_due:
            return
        self._reboot_due = False
        raw = kv.get(spec_key(self.name))
        if raw is None:
            self._log.warning("reboot_without_spec")
            await self._exit_process()
            return
        spec: SupervisorSpec = cloudpickle.loads(raw)
        self._log.info("reboot", children=[c.id for c in spec.children])
        async with self.mailbox:
            try:
                await self._init(spec, rebooting=True)
            except HerdError as exc:
                self._log.error("reboot_failed", error=str(exc))
                await self._exit(Stop(SHUTDOWN, f"restarted by Ray, it could not start its "
                                                f"children again: {exc}"))

    async def _init(self, spec: SupervisorSpec, rebooting: bool = False) -> None:
        self.names = ChildNames(self.name, spec.registry)
        if rebooting:
            await self.names.clear(c.id for c in spec.children)
        self.core = SupervisorCore(self.name, spec, self.runner)
        self._spec = spec
        await self.core.init(spec.children)
        self._save()
        self.runner.warm(c.spec for c in self.core.children)

    async def stop(self, reason: str) -> str:
        """Terminate all children in reverse start order and exit with ``reason``."""
        async with self.mailbox:
            if self.signal.reason is None:
                await self._exit(reason)
        return self.signal.reason or reason

    async def stopped_reason(self) -> str | None:
        """None while it runs; once it has stopped, why (see ``SupervisorStopped``)."""
        return self.stopped

    async def exit_process(self) -> None:
        """End this actor's process on purpose (Ray does not restart it). Internal."""
        ray.actor.exit_actor()

    # ------------------------------------------------------------------ API
    async def which_children(self, recursive: bool = False) -> list[ChildInfo]:
        async with self.mailbox:
            infos = [self._info(child) for child in self._core().children]
        if not recursive:
            return infos
        return list(await asyncio.gather(*(self._subtree(info) for info in infos)))

    async def count_children(self) -> dict[str, int]:
        async with self.mailbox:
            return self._core().count_children()

    async def start_child(self, spec: ChildSpec) -> ChildInfo:
        async with self.mailbox:
            child = await self._core().start_child(spec)
            self._save()
            self.runner.warm(c.spec for c in self._core().children)
            return self._info(child)

    async def terminate_child(self, child_id: str) -> None:
        await self._operate(lambda core: core.terminate_child(child_id))

    async def restart_child(self, child_id: str) -> ChildInfo:
        async with self.mailbox:
            return self._info(await self._core().restart_child(child_id))

    async def delete_child(self, child_id: str) -> None:
        await self._operate(lambda core: core.delete_child(child_id))

    # ------------------------------------------------------------------ exits and retries
    def post_exit(self, child_id: str, incarnation: Incarnation, reason: str) -> None:
        """A child's incarnation exited: queue the operation that handles it."""
        static_metrics.of(self.name).exited(reason)
        spawn(self._child_exited(child_id, incarnation, reason))

    async def start_nested(self, spec: ChildSpec) -> Incarnation:
        """Start a supervisor child (a ``SupervisorActor`` near this one) and its subtree."""
        handle = SupervisorActor.options(**near_supervisor(child_options(spec))).remote(
            f"{self.name}/{spec.id}", False)
        return await adopt(handle, spec.id, handle.init.remote(spec.supervisor),
                           spec.start_deadline_s(),
                           {**SupervisorActor._default_options, **child_options(spec)})

    async def _child_exited(self, child_id: str, incarnation: Incarnation, reason: str) -> None:
        if incarnation.lightweight is not None:
            await self._operate(
                lambda core: self._lightweight_exited(core, child_id, incarnation, reason),
                internal=True)
            return
        self.runner.hand_over(child_id, incarnation)
        try:
            await self._operate(lambda core: core.child_exited(incarnation, reason),
                                internal=True)
        finally:
            await self.runner.release(child_id, incarnation)

    async def _lightweight_exited(self, core: SupervisorCore[Incarnation], child_id: str,
                                  incarnation: Incarnation, reason: str) -> Stop | None:
        """Like an actor child's exit, except that its name stays registered while it is
        restarted on the same host (one registry write fewer on the restart path)."""
        if incarnation.link is None or not incarnation.link.alive:
            await self.runner.unregister(child_id, incarnation)
        outcome = await core.child_exited(incarnation, reason)
        child = next((c for c in core.children if c.id == child_id), None)
        if child is None or child.running is None:
            await self.runner.unregister(child_id, incarnation)
        return outcome

    async def warm_status(self) -> dict[str, Any] | None:
        """Its pool of standby shells (``WarmPool.stats``); None without ``warm``."""
        return self.runner.pool.stats() if self.runner.pool is not None else None

    async def lightweight_status(self) -> dict[str, Any]:
        """The host of this supervisor's lightweight children: per child calls and estimated
        memory, loop lag, RSS (``{"host": None}`` before the first lightweight child)."""
        if self.runner.link is None:
            return {"host": None, "last_failure": None}
        return await self.runner.link.status()

    async def _try_again(self, child_id: str) -> None:
        await self._operate(lambda core: core.try_again(child_id), internal=True)

    async def _operate(self, operation: Any, internal: bool = False) -> None:
        """Run one core operation; stop the supervisor if it says so; queue restart retries."""
        async with self.mailbox:
            if self.signal.reason is not None:
                if internal:
                    return
                raise self._stopped_error()
            core = self._core()
            try:
                outcome = await operation(core)
            finally:
                self._save()
                for child_id in core.take_retries():
                    spawn(self._try_again(child_id))
            if outcome is not None:
                await self._exit(outcome)

    async def _exit(self, why: str | Stop) -> None:
        """Terminate all children (reverse order), then end with the exit reason ``why`` (a
        :class:`Stop` when the core decided it). Holds the mailbox."""
        reason = why.reason if isinstance(why, Stop) else why
        self.stopped = str(why)
        self._log.info("supervisor_exit", reason=reason, why=self.stopped)
        if self.core is not None:
            await self.core.terminate_all()
        self.runner.close()
        if self.durable:
            kv.put(stopped_key(self.name), self.stopped.encode())
            kv.delete(spec_key(self.name))
        self.signal.set(reason)
        if self.durable:
            spawn(self._exit_process(EXIT_LINGER_S))

    async def _exit_process(self, linger_s: float = 0.0) -> None:
        """Ask this actor to exit, after ``linger_s`` so monitor calls can deliver the reason."""
        await asyncio.sleep(linger_s)
        ray.get_runtime_context().current_actor.exit_process.remote()

    # ------------------------------------------------------------------ helpers
    @property
    def spec(self) -> SupervisorSpec | None:
        return self._spec

    def _stopped_error(self) -> SupervisorStopped:
        return SupervisorStopped(f"supervisor {self.name!r} has stopped: {self.stopped}")

    def _core(self) -> SupervisorCore[Incarnation]:
        if self.signal.reason is not None:
            raise self._stopped_error()
        if self.core is None:
            if self._reboot_due:
                spawn(self.reboot())
            raise SupervisorRestarting(f"supervisor {self.name!r} has not started its children yet")
        return self.core

    def _save(self) -> None:
        """Write the current child specs through to the GCS KV store (root supervisors)."""
        if self.core is not None:
            static_metrics.of(self.name).observe(self.core)
        if (not self.durable or self.core is None or self._spec is None
                or self.signal.reason is not None):
            return
        ids = tuple(c.id for c in self.core.children)
        if ids == self._saved_ids:
            return
        spec = self._spec.model_copy(update={"children": [c.spec for c in self.core.children]})
        kv.put(spec_key(self.name), cloudpickle.dumps(spec))
        self._saved_ids = ids

    @staticmethod
    def _info(child: Child[Incarnation]) -> ChildInfo:
        running = child.running
        return ChildInfo(id=child.id, status=child.status, type=child.spec.type,
                         restart=child.spec.restart, significant=child.spec.significant,
                         handle=running.public if running else None,
                         pid=running.pid if running else None,
                         node_id=running.node_id if running else None)

    async def _subtree(self, info: ChildInfo) -> ChildInfo:
        if info.type != "supervisor" or info.handle is None:
            return info
        try:
            ref = info.handle.which_children.remote(True)
            children = await asyncio.wait_for(_await(ref), NESTED_CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, asyncio.TimeoutError):
            return info  # stopping or busy: its subtree is left out
        return dataclasses.replace(info, children=children)


async def _await(ref: Any) -> Any:
    return await ref


def _was_restarted() -> bool:
    """True when Ray restarted this actor's process (Ray's property warns of a deprecated
    attribute it reads internally)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


# A supervisor is a herd child too: the same monitor, ready and stop methods as the harness adds.
@ray.method(concurrency_group=MONITOR_GROUP)
async def _monitor(self: SupervisorServer) -> str:
    return await self.signal.wait_async()


@ray.method(concurrency_group=MONITOR_GROUP)
async def _ready(self: SupervisorServer) -> dict[str, Any]:
    return ready_info()


async def _stop_as_child(self: SupervisorServer, reason: str) -> str:
    return await self.stop(reason)


setattr(SupervisorServer, MONITOR_METHOD, _monitor)
setattr(SupervisorServer, READY_METHOD, _ready)
setattr(SupervisorServer, STOP_METHOD, _stop_as_child)
SupervisorActor = ray.remote(num_cpus=0, concurrency_groups={MONITOR_GROUP: 1000})(SupervisorServer)
