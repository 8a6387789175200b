"""``ReplicatedStore``: the driver-side handle of a replicated CRDT store (one replica per
region, each a child of that region's dynamic supervisor, named in the registry).

    store = ReplicatedStore.start("sessions", regions=["us-east", "us-west"], kind="lww_map")
    store.put("user-1", {"cart": 3}, consistency="quorum")
    store.get("user-1", consistency="quorum")

Every call has a timeout; errors are ``HerdError`` subclasses (``herd.replication.errors``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from herd.platform import kv, rpc
from herd.platform.crdt.base import canonical, check_key
from herd.platform.errors import ConfigError, HerdError
from herd.platform.logging import get_logger
from herd.platform.quorum import (
    QuorumNotAchieved,
    QuorumNotReached,
    QuorumTimeout,
    ReplicaQuorum,
    quorum_read,
)
from herd.platform.waiting import deadline_in, time_left
from herd.registry import Registry
from herd.registry.connection import named
from herd.registry.errors import NotRegistered
from herd.replication.errors import (
    ConsistencyUnavailable,
    InvalidValue,
    ReplicaUnavailable,
    StoreExists,
    StoreNotFound,
    UnknownRegion,
    ValueTooLarge,
)
from herd.replication.models import CONSISTENCY, StoreSettings, replica_name
from herd.replication.state import ReplicaState
from herd.replication.supervision import ensure_replicas, stop_replicas

log = get_logger("herd.replication.store")
DEFAULT_TIMEOUT_S = 10.0


def _settings_key(name: str) -> str:
    return f"herd/replication-stores/{name}"


def _cause(exc: RayTaskError) -> Exception:
    cause = exc.cause
    return cause if isinstance(cause, HerdError) else exc


class ReplicatedStore:
    """Handle of a running store (picklable: it is its settings)."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.name = settings.name

    def __reduce__(self) -> tuple[Any, tuple[StoreSettings]]:
        return ReplicatedStore, (self.settings,)

    def __repr__(self) -> str:
        return f"ReplicatedStore({self.name!r}, regions={list(self.settings.regions)})"

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def start(cls, name: str, regions: list[str], kind: str = "lww_map",
              sync_interval_ms: int = 1000, durability: str = "kv", *,
              timeout: float = 60.0, **options: Any) -> ReplicatedStore:
        """Start the store's replicas in every region served here (or return the running
        store when its settings are the same; ``StoreExists`` when they differ)."""
        settings = StoreSettings.build(name=name, regions=tuple(regions), kind=kind,
                                       sync_interval_ms=sync_interval_ms,
                                       durability=durability, **options)
        raw = kv.get(_settings_key(name))
        if raw is not None:
            existing = StoreSettings.model_validate_json(raw)
            if existing != settings:
                changed = sorted(k for k, v in settings.model_dump().items()
                                 if existing.model_dump()[k] != v)
                raise StoreExists(f"store {name!r} is running with other settings "
                                  f"(differs in: {', '.join(changed)}); stop it first")
        else:
            kv.put(_settings_key(name), settings.model_dump_json().encode())
        ensure_replicas(settings, timeout)
        log.info("replicated_store_started", store=name, regions=list(settings.regions),
                 kind=kind, durability=durability)
        return cls(settings)

    @classmethod
    def lookup(cls, name: str) -> ReplicatedStore:
        """The running store ``name`` (also spelled ``ReplicatedStore.get(name)``)."""
        raw = kv.get(_settings_key(name))
        if raw is None:
            raise StoreNotFound(f"no replicated store named {name!r}")
        return cls(StoreSettings.model_validate_json(raw))

    def stop(self, timeout: float = 30.0, forget_data: bool = False) -> None:
        """Stop every local replica; ``forget_data`` also deletes their durable state."""
        stop_replicas(self.settings, timeout, forget_data)
        kv.delete(_settings_key(self.name))

    # ---------------------------------------------------------------- routing

    def _region(self, region: str | None) -> str:
        local = self.settings.local_regions
        if region is None:
            labels = ray.get_runtime_context().get_node_labels()
            mine = labels.get("region")
            return mine if mine in local else local[0]
        if region not in self.settings.regions:
            raise UnknownRegion(f"region {region!r} is not one of store {self.name!r}'s "
                                f"regions {list(self.settings.regions)}")
        if region not in local:
            raise UnknownRegion(f"region {region!r} of store {self.name!r} is served by "
                                f"another cluster; use a region of this one {list(local)}")
        return region

    def _replica(self, region: str, deadline: float) -> Any:
        registry = Registry.start("default")
        name = replica_name(self.name, region)
        handle = registry.lookup(name, timeout=time_left(deadline))
        if handle is None:
            handle = registry.wait_for(name, timeout=time_left(deadline)).handle
        return handle

    def _call(self, region: str, method: str, *args: Any, timeout: float) -> Any:
        """Call the region's replica. Reads (everything but ``write``) are retried once on
        the replica's successor when it died; a write is not (it may have been applied)."""
        deadline = deadline_in(timeout)
        handle = self._replica(region, deadline)
        what = f"{self.name}@{region}.{method}"
        try:
            return rpc.get(getattr(handle, method).remote(*args), timeout=time_left(deadline),
                           what=what)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError as exc:
            named("default").invalidate(replica_name(self.name, region), handle)
            if method == "write":
                raise ReplicaUnavailable(f"{what}: the replica died during the write ({exc}); "
                                         f"it may have been applied") from None
        try:
            successor = Registry.start("default").wait_for(
                replica_name(self.name, region), exclude=handle,
                timeout=time_left(deadline)).handle
            return rpc.get(getattr(successor, method).remote(*args),
                           timeout=time_left(deadline), what=what)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except (RayActorError, NotRegistered) as exc:
            raise ReplicaUnavailable(f"{what}: no live replica ({type(exc).__name__})") from None

    def _replicas(self, consistency: str) -> int:
        n = len(self.settings.regions)
        if consistency == "local":
            return 1
        if consistency == "quorum":
            return ReplicaQuorum.majority(n).w
        if consistency == "all":
            return n
        raise ConsistencyUnavailable(f"consistency must be one of {CONSISTENCY}, "
                                     f"got {consistency!r}")

    def _checked(self, key: Any, value: Any = None) -> None:
        try:
            check_key(key)
            size = len(canonical(value)) + len(json.dumps(key))
        except ConfigError as exc:
            raise InvalidValue(str(exc)) from None
        if size > self.settings.max_value_bytes:
            raise ValueTooLarge(f"key and value take {size} bytes encoded; store "
                                f"{self.name!r} allows {self.settings.max_value_bytes}")

    # ---------------------------------------------------------------- writes

    def _write(self, op: str, args: list[Any], consistency: str, timeout: float | None,
               region: str | None) -> dict[str, Any]:
        replicas = self._replicas(consistency)
        target = self._region(region)
        wait_s = timeout or DEFAULT_TIMEOUT_S
        result: dict[str, Any] = self._call(target, "write", op, args, replicas, wait_s,
                                            timeout=wait_s + 2.0)
        return result

    def put(self, key: Any, value: Any, consistency: str = "local",
            timeout: float | None = None, region: str | None = None) -> dict[str, Any]:
        """Write ``key = value`` (a register in an ormap) and acknowledge per ``consistency``:
        ``local`` once durable in ``region``'s replica, ``quorum`` once durable in a majority
        of the regions' replicas, ``all`` in every one."""
        self._checked(key, value)
        return self._write("put", [key, value], consistency, timeout, region)

    def delete(self, key: Any, consistency: str = "local", timeout: float | None = None,
               region: str | None = None) -> dict[str, Any]:
        self._checked(key)
        return self._write("delete", [key], consistency, timeout, region)

    def incr(self, key: Any, by: int = 1, consistency: str = "local",
             timeout: float | None = None, region: str | None = None) -> dict[str, Any]:
        """ormap: add ``by`` (may be negative) to the counter ``key``."""
        if isinstance(by, bool) or not isinstance(by, int):
            raise InvalidValue(f"incr needs an integer, got {by!r}")
        self._checked(key, by)
        return self._write("incr", [key, by], consistency, timeout, region)

    def add(self, key: Any, element: Any, consistency: str = "local",
            timeout: float | None = None, region: str | None = None) -> dict[str, Any]:
        """ormap: add ``element`` (a string or integer) to the set ``key`` (add wins)."""
        self._checked(key, element)
        self._checked(element)
        return self._write("add", [key, element], consistency, timeout, region)

    def remove(self, key: Any, element: Any, consistency: str = "local",
               timeout: float | None = None, region: str | None = None) -> dict[str, Any]:
        """ormap: remove ``element`` from the set ``key`` as observed in that replica."""
        self._checked(key, element)
        return self._write("discard", [key, element], consistency, timeout, region)

    # ---------------------------------------------------------------- reads

    def read(self, key: Any, consistency: str = "local", timeout: float | None = None,
            region: str | None = None) -> Any:
        """The value of ``key`` (None when absent). ``quorum``/``all`` join the replies of
        that many replicas, so the value includes every write acknowledged at ``quorum``."""
        self._checked(key)
        wait_s = timeout or DEFAULT_TIMEOUT_S
        needed = self._replicas(consistency)
        if needed == 1:
            return self._call(self._region(region), "get", key, timeout=wait_s)
        local = self.settings.local_regions
        if needed > len(local):
            raise ConsistencyUnavailable(
                f"a {consistency} read needs {needed} replicas; only {len(local)} run in this "
                f"cluster (reads across clusters answer at 'local')")
        deadline = deadline_in(wait_s)
        refs = []
        for r in local:
            try:
                refs.append(self._replica(r, deadline).read.remote(key))
            except HerdError:
                refs.append(_failed.remote(f"no replica in {r}"))
        rq = ReplicaQuorum(n=len(local), r=needed, w=len(local) - needed + 1)
        try:
            read = quorum_read(refs, rq, time_left(deadline), resolve=self._join_key(key),
                               what=f"{consistency} read of {self.name!r}")
        except (QuorumNotReached, QuorumTimeout) as exc:
            raise QuorumNotAchieved({}, needed, {"replicas": str(exc)},
                                    what=f"read from store {self.name!r}") from None
        return read.value

    def _join_key(self, key: Any) -> Any:
        def join(replies: list[dict[str, Any]]) -> Any:
            joined = ReplicaState(self.settings.kind, "reader")
            for payload in replies:
                joined.merge(payload)
            return joined.get(key)
        return join

    def items(self, region: str | None = None, timeout: float | None = None) -> dict[Any, Any]:
        """Every key and value, as ``region``'s replica has them."""
        return self._call(self._region(region), "items", timeout=timeout or DEFAULT_TIMEOUT_S)

    # ---------------------------------------------------------------- changes

    def watch(self, region: str | None = None, timeout: float | None = None,
              poll_s: float = 5.0) -> Iterator[dict[str, Any]]:
        """Change events of ``region``'s replica from now on (each ``{"n", "region",
        "source", "changes": {key: new value or None}}``); ends after ``timeout`` seconds
        (None: never), each wait bounded by ``poll_s``."""
        target = self._region(region)
        end = None if timeout is None else time.monotonic() + timeout
        after = self._call(target, "changes", -1, 0.0, timeout=DEFAULT_TIMEOUT_S)["next"]
        while end is None or time.monotonic() < end:
            wait = poll_s if end is None else max(0.0, min(poll_s, end - time.monotonic()))
            batch = self._call(target, "changes", after, wait, timeout=wait + DEFAULT_TIMEOUT_S)
            yield from batch["events"]
            after = batch["next"]

    def subscribe(self, actor: Any, method: str, region: str | None = None) -> None:
        """Call ``actor.method(event)`` for every change seen by ``region``'s replica."""
        self._call(self._region(region), "subscribe", actor, method, timeout=DEFAULT_TIMEOUT_S)

    def unsubscribe(self, actor: Any, method: str, region: str | None = None) -> None:
        self._call(self._region(region), "unsubscribe", actor, method,
                   timeout=DEFAULT_TIMEOUT_S)

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        """Per local region: the replica's version vector, per-peer lag and traffic, rejected
        messages by reason (or ``{"error": ...}`` when it did not answer)."""
        result: dict[str, Any] = {}
        for region in self.settings.local_regions:
            try:
                result[region] = self._call(region, "status", timeout=timeout or 5.0)
            except HerdError as exc:
                result[region] = {"error": str(exc)}
        return result


class _StoreOrKey:
    """``ReplicatedStore.get(name)`` finds a store; ``store.get(key, ...)`` reads a key."""

    def __get__(self, store: ReplicatedStore | None, owner: type[ReplicatedStore]) -> Any:
        return owner.lookup if store is None else store.read


ReplicatedStore.get = _StoreOrKey()  # type: ignore[attr-defined]


@ray.remote(num_cpus=0)
def _failed(reason: str) -> None:
    raise UnknownRegion(reason)
