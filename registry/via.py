"""``via(key)``: call whoever holds ``key`` now, like an actor handle.

    ref = via("counter-1").incr.remote(1)     # resolve (cached) and submit; returns an ObjectRef
    value = via("counter-1").incr.call(1)     # resolve, wait for the result, retry once

Both resolve through the registry's per-process cache. They differ in waiting, as Ray's
``.remote()`` never waits:

* ``.remote()`` does not wait for a holder: if the key has none now it raises
  ``NotRegistered(key)`` at once (a cache hit costs no remote call; a miss costs one lookup).
  It submits exactly once and returns the ObjectRef (an ObjectRef cannot be retried after it
  is handed out).
* ``.call()`` waits for a holder, then for the result, all within the via's ``timeout``
  (default 10 s), and raises ``NotRegistered(key)`` if no holder appears in time. If the call
  fails with
``ActorDiedError`` because the holder died, it waits (within the timeout) for a *different*
holder to be registered -- e.g. the replacement a supervisor starts -- and calls that one once.
If it fails with ``ActorUnavailableError`` (the holder's node or process stopped answering, and
Ray has not yet decided whether it is dead), it waits for a different holder in the same way,
probing the old one between waits; if the old one answers again it is called once more instead.
Use ``.call()`` only for methods that are safe to run twice (idempotent reads, ``set``-style
writes, requests deduplicated by an id): the holder may have died after running the method and
before answering. Any other failure (the method raised, a timeout) is not retried.

A record whose meta has ``"route": M`` (and ``"route_key": K``) names something the holder runs
for others (e.g. a lightweight child in its host actor): ``via(key).f.remote(*a, **kw)`` then
calls ``holder.M.remote(K, "f", a, kw)``.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

from herd.platform import rpc
from herd.platform.waiting import time_left
from herd.registry import models
from herd.registry.client import Registry
from herd.registry.connection import named
from herd.registry.errors import KeyModeError, NotRegistered
from herd.registry.records import Registration

DEFAULT_VIA_TIMEOUT_S = 10.0
UNAVAILABLE_PROBE_S = 2.0  # how long to wait for a successor before probing the old holder


class Via:
    """A handle-like proxy for the holder of ``key`` in a unique registry. Its own attributes
    start with ``_``, so every public method name reaches the holder."""

    def __init__(self, key: str, registry: str = "default", timeout: float | None = None) -> None:
        self._key = models.check_key(key)
        self._registry_name = models.check_name(registry)
        self._timeout = models.check_timeout(timeout, DEFAULT_VIA_TIMEOUT_S)

    def __getattr__(self, method: str) -> ViaMethod:
        if method.startswith("_"):  # keep private and protocol probes away from the holder
            raise AttributeError(method)
        return ViaMethod(self, method)

    def __repr__(self) -> str:
        return f"via({self._key!r}, registry={self._registry_name!r})"

    def _holder(self, deadline: float) -> Registration:
        """The current record; ``NotRegistered`` at once if it has no holder."""
        record = self._registry().entry(self._key, timeout=time_left(deadline))
        if not isinstance(record, Registration) or record.handle is None:
            raise NotRegistered(self._key, "no holder now (.call() waits for one)")
        return record

    def _resolve(self, deadline: float) -> Registration:
        """The current record, waiting for one with a holder until the deadline."""
        registry = self._registry()
        record = registry.entry(self._key, timeout=time_left(deadline))
        if not isinstance(record, Registration) or record.handle is None:
            record = registry.wait_for(self._key, timeout=time_left(deadline))
        return record

    def _forget(self, handle: ActorHandle) -> None:
        """Drop a cached record naming ``handle``: the caller saw it dead or unresponsive."""
        named(self._registry_name).invalidate(self._key, handle)

    def _registry(self) -> Registry:
        registry = Registry.get(self._registry_name)
        if registry.keys != "unique":
            raise KeyModeError(f"via needs a unique registry; {self._registry_name!r} has "
                               f"keys={registry.keys!r}")
        return registry


class ViaMethod:
    def __init__(self, target: Via, method: str) -> None:
        self._target = target
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit to the current holder once and return the ObjectRef, without waiting:
        ``NotRegistered`` at once if the key has no holder now (use ``.call()`` to wait)."""
        deadline = time.monotonic() + self._target._timeout
        return self._submit(self._target._holder(deadline), args, kwargs)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Wait (within the via's timeout) for a holder, submit, wait for the result, and on
        holder death retry once on the next holder; ``NotRegistered`` if no holder appears."""
        target = self._target
        deadline = time.monotonic() + target._timeout
        record = target._resolve(deadline)
        what = f"{target!r}.{self._method}"
        try:
            return rpc.get(self._submit(record, args, kwargs), timeout=time_left(deadline),
                           what=what)
        except ActorDiedError:
            successor = self._successor(record.handle, deadline)
        except ActorUnavailableError:
            successor = self._successor_or_revived(record, deadline)
        return rpc.get(self._submit(successor, args, kwargs), timeout=time_left(deadline),
                       what=what)

    def _submit(self, record: Registration, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        """Call the method on the record's holder (through its ``route``, if it names one)."""
        route = record.meta.get("route")
        if route is None:
            return getattr(record.handle, self._method).remote(*args, **kwargs)
        return getattr(record.handle, route).remote(record.meta.get("route_key"), self._method,
                                                    args, kwargs)

    def _successor(self, handle: ActorHandle, deadline: float) -> Registration:
        """The next holder after ``handle`` died, waiting for it until the deadline."""
        self._target._forget(handle)
        return self._target._registry().wait_for(self._target._key, exclude=handle,
                                                 timeout=time_left(deadline))

    def _successor_or_revived(self, record: Registration, deadline: float) -> Registration:
        """After the holder stopped answering: a different holder once one is registered, or
        the same record if its holder answers a probe again (a transient outage)."""
        handle = record.handle
        registry = self._target._registry()
        self._target._forget(handle)
        while True:
            slice_s = min(UNAVAILABLE_PROBE_S, time_left(deadline))
            try:
                return registry.wait_for(self._target._key, exclude=handle, timeout=slice_s)
            except NotRegistered:
                if time_left(deadline) <= slice_s:
                    raise
            try:
                ray.get(handle.__ray_ready__.remote(), timeout=min(slice_s, time_left(deadline)))
                return record
            except ActorDiedError:
                return self._successor(handle, deadline)
            except (ActorUnavailableError, GetTimeoutError):
                continue


def via(key: str, registry: str = "default", timeout: float | None = None) -> Via:
    """A proxy for the holder of ``key`` in the unique registry ``registry``."""
    return Via(key, registry, timeout)

