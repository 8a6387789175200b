"""Exit reasons, and how a supervised child decides to end: ``herd.supervisors.otp.exit(reason)``.

Reasons are strings, as in the monitor contract (``herd.platform.monitor``):

* ``"normal"``, ``"shutdown"`` and ``"shutdown:<detail>"`` (OTP's ``{shutdown, Term}``) are normal
  exits: a ``transient`` child is not restarted after one.
* anything else is abnormal, e.g. ``exit("error: lost the database")``; ``"killed"`` is the reason
  herd reports for a child whose process died without giving one (SIGKILL, OOM, node death,
  ``brutal_kill``).

Each child process holds one :class:`ExitSignal`. ``exit()`` sets it; every outstanding monitor
call then returns the reason, and the supervisor ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable

from herd.platform.errors import ConfigError
from herd.supervisors.errors import SupervisorError

__all__ = ["KILLED", "NORMAL", "SHUTDOWN", "ExitSignal", "current_signal", "exit",
           "install_signal", "is_normal", "reset_child_signal", "use_child_signal"]

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILLED = "killed"


def is_normal(reason: str) -> bool:
    """True for ``normal``, ``shutdown`` and ``shutdown:<detail>`` (no restart of transients)."""
    return reason in (NORMAL, SHUTDOWN) or reason.startswith(SHUTDOWN + ":")


class ExitSignal:
    """A one-shot exit reason that sync threads and asyncio loops (any number, any thread) can
    wait for. The first ``set`` wins; later ones are ignored."""

    def __init__(self, on_set: Callable[[], None] | None = None) -> None:
        """``on_set`` runs once, in the thread that sets the reason, before any waiter wakes
        (the harness uses it to quiesce background threads before the process is ended)."""
        self._on_set = on_set
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._reason: str | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[str]]] = []

    @property
    def reason(self) -> str | None:
        return self._reason

    def set(self, reason: str) -> bool:
        """Record ``reason`` and wake every waiter; False if a reason was already set."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            waiters, self._waiters = self._waiters, []
        if self._on_set is not None:
            self._on_set()
        self._event.set()
        for loop, future in waiters:
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, reason)
        return True

    def wait(self) -> str:
        """Block this thread until a reason is set and return it (for sync actors)."""
        self._event.wait()
        assert self._reason is not None
        return self._reason

    async def wait_async(self) -> str:
        """Wait in the running event loop until a reason is set and return it."""
        with self._lock:
            if self._reason is not None:
                return self._reason
            loop = asyncio.get_running_loop()
            future: asyncio.Future[str] = loop.create_future()
            self._waiters.append((loop, future))
        return await future


def _resolve(future: asyncio.Future[str], reason: str) -> None:
    if not future.done():
        future.set_result(reason)


_current: ExitSignal | None = None
#: The signal of the lightweight child whose code runs in this context (its tasks set it); it
#: takes precedence over the process's signal, as many lightweight children share a process.
_child_signal: contextvars.ContextVar[ExitSignal | None] = contextvars.ContextVar(
    "herd_child_signal", default=None)


def install_signal(signal: ExitSignal) -> None:
    """Make ``signal`` the one ``exit()`` sets in this process (one supervised actor per
    process)."""
    global _current
    _current = signal


def use_child_signal(signal: ExitSignal | None) -> contextvars.Token[ExitSignal | None]:
    """Make ``signal`` the one ``exit()`` sets in the current context and the tasks it starts
    (a lightweight child's calls and loop); reset with ``reset_child_signal(token)``."""
    return _child_signal.set(signal)


def reset_child_signal(token: contextvars.Token[ExitSignal | None]) -> None:
    _child_signal.reset(token)


def current_signal() -> ExitSignal | None:
    return _child_signal.get() or _current


def exit(reason: str = NORMAL) -> None:  # noqa: A001 - the OTP name, used as herd.supervisors.otp.exit
    """End the supervised child this code runs in, with ``reason``.

    Call it from any method of the child (sync, threaded or async), or from its constructor.
    Every monitor call then returns ``reason`` and the child's supervisor ends the process
    within milliseconds. ``exit`` itself returns, but as when an Erlang process exits inside a
    ``gen_server:call``, the caller of the method that called it may see the child die
    (``ActorDiedError``) instead of a return value. Release resources before calling it: the
    ``terminate`` hook runs only when the supervisor stops a child. A second call does not
    change the reason.
    """
    if not isinstance(reason, str) or not reason:
        raise ConfigError("an exit reason must be a non-empty string", field="reason",
                          value=reason)
    signal = current_signal()
    if signal is None:
        raise SupervisorError("herd.supervisors.otp.exit() was called outside a supervised child")
    signal.set(reason)
