"""``Supervisor``: the caller's handle on a supervisor actor, every call with a deadline.

Errors raised by the supervisor (``ChildNotFound``, ``StartChildError``, ``ChildRunning``, ...)
are re-raised here as themselves, never wrapped in Ray's ``RayTaskError``; every call on a
supervisor that has stopped raises ``SupervisorStopped`` saying why it stopped, which
``stopped_reason()`` also returns (after its actor is gone too).

Example::

    sup = Supervisor.start("app", [ChildSpec(id="db", actor=Db), ChildSpec(id="web", actor=Web)],
                           strategy="rest_for_one", max_restarts=3, max_seconds=5)
    sup.which_children()                # [ChildInfo(id="db", status="running", ...), ...]
    sup.terminate_child("web"); sup.restart_child("web")
    print(sup.render_tree())
    sup.stop()
    sup.stopped_reason()                # "normal"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayTaskError

from herd.platform import kv, rpc
from herd.platform.control_plane import (
    HERD_NAMESPACE,
    get_named,
    off_head_options,
    require_ray,
)
from herd.platform.errors import HerdError
from herd.platform.waiting import wait_until
from herd.supervisors.errors import StartChildError, SupervisorError, SupervisorStopped
from herd.supervisors.otp.exit import KILLED, NORMAL
from herd.supervisors.otp.harness import watch_child
from herd.supervisors.otp.info import ChildInfo, render_tree
from herd.supervisors.otp.server import SupervisorActor, root_actor_name, stopped_key
from herd.supervisors.otp.spec import (
    AutoShutdown,
    ChildSpec,
    LightweightHosts,
    Strategy,
    SupervisorSpec,
    validate_name,
)
from herd.supervisors.otp.start_failure import describe
from herd.supervisors.warm.spec import WarmPoolSpec

__all__ = ["Supervisor"]

#: How long a stopped root supervisor may take to leave Ray's actor table.
ROOT_GONE_S = 10.0
#: Added to computed deadlines for the caller's wait (creating the supervisor actor itself,
#: registry calls; actor creation takes seconds on a loaded machine).
CALL_MARGIN_S = 30.0


class Supervisor:
    """A running supervisor: a root started with :meth:`start`, or a nested one."""

    def __init__(self, handle: ActorHandle, name: str, root: bool = False) -> None:
        self.handle = handle
        self.name = name
        self.root = root

    def __repr__(self) -> str:
        return f"Supervisor({self.name!r})"

    # ------------------------------------------------------------------ start / find
    @classmethod
    def start(cls, name: str, children: Iterable[ChildSpec | Mapping[str, Any]] = (), *,
              strategy: Strategy = "one_for_one", max_restarts: int = 3,
              max_seconds: float = 5.0, auto_shutdown: AutoShutdown = "never",
              registry: str | None = "default", timeout: float | None = None,
              lightweight: LightweightHosts | Mapping[str, Any] | None = None,
              warm: WarmPoolSpec | Mapping[str, Any] | None = None) -> Supervisor:
        """Start a root supervisor named ``name`` and its children, in order.

        Raises ``ConfigError`` for an invalid spec, ``SupervisorError`` if a supervisor of that
        name is running, and ``StartChildError`` if a child fails to start (then nothing is left
        running). ``timeout`` defaults to the children's start timeouts plus a margin.
        ``warm``: standby shells for its actor children (``{"standby": 2}``, see
        ``herd.supervisors.warm``), so a crashed child restarts without a process start.
        """
        require_ray()
        validate_name(name, "supervisor name")
        spec = SupervisorSpec(strategy=strategy, max_restarts=max_restarts,
                              max_seconds=max_seconds, auto_shutdown=auto_shutdown,
                              children=list(children), registry=registry,
                              warm=warm,
                              **({"lightweight": lightweight} if lightweight is not None else {}))
        actor_name = root_actor_name(name)
        if get_named(actor_name) is not None:
            raise SupervisorError(f"a supervisor named {name!r} is already running")
        kv.delete(stopped_key(name))  # a fresh start: forget why an earlier one stopped
        try:
            # Off the head where workers exist: its children fate-share with it, so on the head
            # a head restart would restart them all.
            handle = SupervisorActor.options(
                name=actor_name, namespace=HERD_NAMESPACE, lifetime="detached", max_restarts=-1,
                max_task_retries=0, **off_head_options()).remote(name, True)
        except ValueError as exc:  # created concurrently by another caller
            raise SupervisorError(f"cannot create supervisor {name!r}: {exc}") from None
        deadline = timeout or sum(c.start_deadline_s() for c in spec.children) + CALL_MARGIN_S
        supervisor = cls(handle, name, root=True)
        try:
            supervisor._call("init", spec, timeout=deadline)
        except BaseException:
            ray.kill(handle, no_restart=True)
            raise
        return supervisor

    @classmethod
    def get(cls, name: str) -> Supervisor:
        """The running root supervisor ``name`` (``SupervisorStopped`` if there is none)."""
        handle = get_named(root_actor_name(name))
        if handle is None:
            reason = _recorded_reason(name)
            if reason is not None:
                raise SupervisorStopped(f"supervisor {name!r} has stopped: {reason}")
            raise SupervisorStopped(f"no supervisor named {name!r} is running")
        return cls(handle, name, root=True)

    def supervisor(self, child_id: str, timeout: float | None = None) -> Supervisor:
        """The handle of the running supervisor child ``child_id`` of this supervisor."""
        for child in self.which_children(timeout=timeout):
            if child.id == child_id and child.type == "supervisor" and child.handle is not None:
                return Supervisor(child.handle, f"{self.name}/{child_id}")
        raise SupervisorError(f"{child_id!r} is not a running supervisor child of {self.name!r}")

    # ------------------------------------------------------------------ OTP API
    def which_children(self, recursive: bool = False,
                       timeout: float | None = None) -> list[ChildInfo]:
        """The children in start order; ``recursive`` fills in the children of supervisors."""
        return self._call("which_children", recursive, timeout=timeout)

    def count_children(self, timeout: float | None = None) -> dict[str, int]:
        """``specs``, ``active``, ``supervisors`` and ``workers``, as OTP counts them."""
        return self._call("count_children", timeout=timeout)

    def start_child(self, spec: ChildSpec | Mapping[str, Any],
                    timeout: float | None = None) -> ChildInfo:
        spec = spec if isinstance(spec, ChildSpec) else ChildSpec(**spec)
        return self._call("start_child", spec,
                          timeout=timeout or spec.start_deadline_s() + CALL_MARGIN_S)

    def terminate_child(self, child_id: str, timeout: float | None = None) -> None:
        """Stop a child per its shutdown; its spec is kept unless it is temporary."""
        self._call("terminate_child", child_id, timeout=timeout)

    def restart_child(self, child_id: str, timeout: float | None = None) -> ChildInfo:
        """Start again a child that was terminated (``ChildRunning`` if it runs)."""
        return self._call("restart_child", child_id, timeout=timeout)

    def delete_child(self, child_id: str, timeout: float | None = None) -> None:
        """Forget the spec of a stopped child."""
        self._call("delete_child", child_id, timeout=timeout)

    def stop(self, reason: str = NORMAL, timeout: float | None = None) -> str:
        """Terminate all children in reverse start order and stop the supervisor. A root
        supervisor is gone (its name free again) when this returns."""
        result = self._call("stop", reason, timeout=timeout)
        if self.root:
            ray.kill(self.handle, no_restart=True)
            actor_name = root_actor_name(self.name)
            wait_until(lambda: get_named(actor_name) is None, ROOT_GONE_S,
                       what=f"supervisor {self.name!r} gone")
        return result

    def stopped_reason(self, timeout: float | None = None) -> str | None:
        """None while the supervisor runs; once it has stopped, why: its exit reason and what
        happened, e.g. ``"shutdown: reached_max_restart_intensity (child 'db' exited with
        reason 'killed'; 4 restarts within 5 s, max_restarts=3)"``, or ``"normal"`` after
        :meth:`stop`. A root's reason stays readable after its actor is gone, until a
        supervisor of the same name is started again."""
        try:
            return rpc.get(self.handle.stopped_reason.remote(), timeout=timeout,
                           what=f"supervisor {self.name!r} stopped_reason")
        except RayActorError:
            return self._gone_reason()

    def monitor(self, timeout: float | None = None) -> ray.ObjectRef:
        """A call that returns the supervisor's exit reason once it stops (the monitor contract
        of ``herd.platform.monitor``). When this returns, the call has reached the supervisor,
        so it will see the reason even if the supervisor stops right away."""
        return watch_child(self.handle, timeout=timeout, what=f"supervisor {self.name!r}")

    def lightweight_status(self, timeout: float | None = None) -> dict[str, Any]:
        """The host of the lightweight children: per child calls and estimated memory
        (``by_child``), loop lag, RSS, and why the last host failed (``last_failure``)."""
        return self._call("lightweight_status", timeout=timeout)

    def warm_status(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Its standby shells (``warm``): ``ready`` pids per shape, shells ``taken`` by
        starts, starts that ``missed`` (cold); None without ``warm``."""
        return self._call("warm_status", timeout=timeout)

    def render_tree(self, timeout: float | None = None) -> str:
        """The whole supervision tree below this supervisor, as indented text."""
        return render_tree(self.name, self.which_children(recursive=True, timeout=timeout))

    # ------------------------------------------------------------------ calls
    def _call(self, method: str, *args: Any, timeout: float | None) -> Any:
        ref = getattr(self.handle, method).remote(*args)
        try:
            return rpc.get(ref, timeout=timeout, what=f"supervisor {self.name!r} {method}")
        except RayTaskError as exc:
            if isinstance(exc.cause, HerdError):
                raise exc.cause from exc.cause.__cause__
            # Ray failed the call before the supervisor ran it, e.g. it could not deserialize a
            # child's args there (a class its process cannot import).
            why = f"supervisor {self.name!r} could not run {method}: {describe(exc)[0]}"
            if method in ("init", "start_child"):
                raise StartChildError(why) from None
            raise SupervisorError(why) from None
        except RayActorError:
            reason = self._gone_reason()
            if reason is None:
                raise SupervisorStopped(f"supervisor {self.name!r} is not reachable (Ray is "
                                        f"restarting it); try again") from None
            raise SupervisorStopped(f"supervisor {self.name!r} has stopped: {reason}") from None

    def _gone_reason(self) -> str | None:
        """Why the supervisor whose actor cannot be reached stopped; None if a root of that
        name is up (Ray is restarting it, or it was started again)."""
        if self.root:
            reason = _recorded_reason(self.name)
            if reason is not None:
                return reason
            if get_named(root_actor_name(self.name)) is not None:
                return None
        return f"{KILLED} (its process is gone and gave no reason)"


def _recorded_reason(name: str) -> str | None:
    raw = kv.get(stopped_key(name))
    return None if raw is None else raw.decode()
