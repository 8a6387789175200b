"""Fencing for supervised children: "am I still the one?" before every side effect.

Ray does not fence. A child on a node that hung (SIGSTOP, a long GC pause, a cut-off link) keeps
running after the GCS declared its node dead and a survivor started its replacement; when the
node comes back, the old incarnation may run a few more instructions before herd (or its raylet)
kills it. Anything it writes then would interleave with the replacement's writes.

The registry record of a dynamic supervisor's child names its current holder, and its epoch
grows on every change (a new incarnation always has a higher epoch). Guard side effects with it::

    from herd.supervisors.fencing import Superseded, check

    class Account:
        def deposit(self, amount):
            epoch = check("account-7")          # raises Superseded in an old incarnation
            self.db.write(balance + amount, fencing_token=epoch)

``check`` alone narrows the window to one registry round trip; passing the epoch to the resource
as a fencing token (the resource rejects tokens lower than the highest it has seen) closes it:
the replacement's first write carries a higher epoch, so a stale incarnation's later write is
refused even if its ``check`` passed just before it was superseded.
"""

from __future__ import annotations

import ray

from herd.platform.errors import HerdError
from herd.registry import AsyncRegistry, Registration, Registry
from herd.registry.errors import NotRegistered
from herd.supervisors.errors import SupervisorError

__all__ = ["DEFAULT_CHECK_TIMEOUT_S", "Superseded", "acheck", "check"]

#: How long ``check`` waits for a record without holder (a child that has just started is
#: registered by its supervisor right after its constructor returns) before deciding.
DEFAULT_CHECK_TIMEOUT_S = 5.0


class Superseded(HerdError):
    """This actor is no longer (or is not) the registry holder of ``key``: another incarnation
    replaced it, or the child was removed. Stop; make no more side effects."""

    def __init__(self, key: str, epoch: int | None, detail: str) -> None:
        self.key = key
        self.epoch = epoch
        self.detail = detail
        super().__init__(f"superseded as holder of {key!r} (record epoch {epoch}): {detail}")

    def __reduce__(self) -> tuple[type, tuple[str, int | None, str]]:
        return (Superseded, (self.key, self.epoch, self.detail))


def check(key: str, registry: str = "default", timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> int:
    """The current epoch of ``key`` if the calling actor is its registry holder; else raise
    ``Superseded``. Call it inside the child (an actor), before each side effect; in an asyncio
    actor ``await acheck(...)`` instead, which does not block the event loop.

    Asks the registry itself (one round trip, not the lookup cache: a cache would need a
    background thread in the child). A record without holder (a new incarnation is being
    started, or this one has just started and is not registered yet) is waited for, up to
    ``timeout`` seconds; if none appears (or the record is gone), the caller cannot prove it is
    current and ``Superseded`` is raised."""
    me = _caller()
    try:
        reg = Registry.get(registry).wait_for(key, timeout=timeout)
    except NotRegistered:
        raise _no_holder(key, timeout) from None
    return _epoch_if_holder(key, reg, me)


async def acheck(key: str, registry: str = "default",
                 timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> int:
    """``check`` for asyncio actors."""
    me = _caller()
    try:
        reg = await (await AsyncRegistry.get(registry)).wait_for(key, timeout=timeout)
    except NotRegistered:
        raise _no_holder(key, timeout) from None
    return _epoch_if_holder(key, reg, me)


def _caller() -> str:
    me = ray.get_runtime_context().get_actor_id()
    if me is None:
        raise SupervisorError("fencing.check() must be called inside an actor")
    return me


def _no_holder(key: str, timeout: float) -> Superseded:
    return Superseded(key, None, f"no holder of the record within {timeout:.1f} s "
                                 f"(it is gone, or another incarnation is starting)")


def _epoch_if_holder(key: str, reg: Registration, me: str) -> int:
    if reg.holder_id != me:
        raise Superseded(key, reg.epoch, f"the holder is now actor {reg.holder_id}")
    return reg.epoch
