"""What both faces of the registry client share: checking an operation's arguments, addressing
it to shards, and turning the registry's answers (or refusals) into results (or typed errors).

Each public operation is built here as an :class:`Operation` -- the shard calls it needs, its
deadline, and how to combine the answers. ``Registry`` (blocking, ``herd.registry.client``) and
``AsyncRegistry`` (asyncio, ``herd.registry.aio``) only carry the calls out, with the same
retries (:class:`Attempts`), deadlines and errors.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from herd.platform import rpc
from herd.platform.errors import HerdTimeoutError
from herd.platform.logging import get_logger
from herd.registry import models
from herd.registry.cache import LookupCache
from herd.registry.errors import (
    AlreadyRegistered,
    EpochConflict,
    HolderDead,
    KeyModeError,
    NotRegistered,
    RegistryInputError,
)
from herd.registry.layout import shard_of
from herd.registry.records import KeyMode, Registration, Rejection

RETRY_PAUSE_S = 0.05
READY_MARGIN_S = 0.25
LONG_POLL_S = 10.0
WAIT_GRACE_S = 0.2
MISS = object()  # a lookup the cache cannot answer

log = get_logger("herd.registry")


class Layout(Protocol):
    """What an operation needs to know about its registry."""

    name: str
    keys: KeyMode
    shards: int


@dataclass(frozen=True)
class ShardCall:
    shard: int
    method: str
    args: tuple[Any, ...] = ()


def _first(results: list[Any]) -> Any:
    return results[0]


@dataclass(frozen=True)
class Operation:
    """Calls to make (concurrently, if several), their common deadline, and the combination of
    their answers (in the order of ``calls``) that the operation returns."""

    calls: tuple[ShardCall, ...]
    deadline: float
    combine: Callable[[list[Any]], Any] = _first


# ------------------------------------------------------------------------------- helpers
def deadline_of(timeout: float | None) -> float:
    return time.monotonic() + models.check_timeout(timeout, rpc.DEFAULT_TIMEOUT_S)


def ready_s(deadline: float) -> float:
    """How long the registry may wait for a new holder to be placed."""
    return max(0.0, deadline - time.monotonic() - READY_MARGIN_S)


def own_node(handle: ActorHandle) -> str | None:
    """This process's node when ``handle`` is this very actor (no GCS query needed)."""
    context = ray.get_runtime_context()
    return context.get_node_id() if context.get_actor_id() == models.actor_id(handle) else None


def require(registry: Layout, mode: KeyMode, what: str) -> None:
    if registry.keys != mode:
        raise KeyModeError(f"{what} needs a {mode} registry; {registry.name!r} has "
                           f"keys={registry.keys!r}")


def _one(registry: Layout, key: str, method: str, args: tuple[Any, ...], deadline: float,
         combine: Callable[[list[Any]], Any] = _first) -> Operation:
    return Operation((ShardCall(shard_of(key, registry.shards), method, args),), deadline, combine)


def _each_shard(registry: Layout, method: str, args: tuple[Any, ...], deadline: float,
                combine: Callable[[list[Any]], Any]) -> Operation:
    calls = tuple(ShardCall(shard, method, args) for shard in range(registry.shards))
    return Operation(calls, deadline, combine)


# ------------------------------------------------------------------------------- writes
def register(registry: Layout, key: Any, handle: Any, meta: Any, on_holder_death: Any,
             timeout: float | None) -> Operation:
    key = models.check_key(key)
    models.check_handle(handle)
    meta = models.check_meta(meta)
    on_death = models.check_on_holder_death(on_holder_death)
    if on_death == "clear":
        require(registry, "unique", 'on_holder_death="clear"')
    deadline = deadline_of(timeout)
    return _one(registry, key, "register", (key, handle, meta, on_death, own_node(handle),
                                            uuid.uuid4().hex, ready_s(deadline)), deadline)


def unregister(registry: Layout, key: Any, handle: Any, epoch: Any,
               timeout: float | None) -> Operation:
    """Remove the records ``handle`` holds under ``key`` -- by default the calling actor's."""
    key = models.check_key(key)
    if handle is None:
        holder_id = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
        if holder_id is None:
            raise RegistryInputError(
                "unregister(key) removes the calling actor's own registration; outside an "
                "actor pass the holder's handle, or use remove(key) to remove the key whoever "
                "holds it", field="handle", value=None)
    else:
        holder_id = models.actor_id(models.check_handle(handle))
    return _removal(registry, key, holder_id, epoch, "unregister", timeout)


def remove(registry: Layout, key: Any, epoch: Any, timeout: float | None) -> Operation:
    """Remove the key's records whoever holds them (an administrative operation)."""
    return _removal(registry, models.check_key(key), None, epoch, "remove", timeout)


def _removal(registry: Layout, key: str, holder_id: str | None, epoch: Any, what: str,
             timeout: float | None) -> Operation:
    if epoch is not None:
        require(registry, "unique", f"{what}(epoch=...)")
        epoch = models.check_epoch(epoch)
    return _one(registry, key, "unregister", (key, holder_id, epoch), deadline_of(timeout))


def compare_and_set(registry: Layout, key: Any, expected_epoch: Any, changes: dict[str, Any],
                    timeout: float | None, holder_node: str | None = None) -> Operation:
    key = models.check_key(key)
    expected = models.check_expected(expected_epoch)
    checked = models.check_changes(changes)
    require(registry, "unique", "compare_and_set")
    handle = checked.get("handle")
    if holder_node is not None and (not isinstance(holder_node, str) or not holder_node):
        raise RegistryInputError("must be a node id (a non-empty str)", field="holder_node",
                                 value=holder_node)
    deadline = deadline_of(timeout)
    return _one(registry, key, "compare_and_set",
                (key, expected, checked,
                 (holder_node or own_node(handle)) if handle is not None else None,
                 uuid.uuid4().hex, ready_s(deadline)), deadline)


def update_meta(registry: Layout, key: Any, meta: Any, handle: Any,
                timeout: float | None) -> Operation:
    key = models.check_key(key)
    meta = models.check_meta(meta)
    if handle is None and registry.keys == "duplicate":
        raise RegistryInputError("is required for a duplicate registry", field="handle",
                                 value=None)
    holder_id = models.actor_id(models.check_handle(handle)) if handle is not None else None
    unique = registry.keys == "unique"
    return _one(registry, key, "update_meta", (key, meta, holder_id, uuid.uuid4().hex),
                deadline_of(timeout), lambda r: r[0][0] if unique else r[0])


# ------------------------------------------------------------------------------ queries
def cached(cache: LookupCache, key: Any) -> Any:
    """What ``lookup(key)`` returns from the cache, or ``MISS``."""
    slot = cache.slots.get(key) if isinstance(key, str) else None
    if slot is None:
        return MISS
    return list(slot.value) if cache.mode == "duplicate" else slot.value


def cached_entry(cache: LookupCache, key: Any) -> Any:
    """What ``entry(key)`` returns from the cache, or ``MISS``."""
    slot = cache.slots.get(key) if isinstance(key, str) else None
    return MISS if slot is None else entry_result(cache.mode, list(slot.regs.values()))


def lookup_result(mode: KeyMode, regs: list[Registration]) -> Any:
    if mode == "unique":
        return regs[0].handle if regs else None
    return [r.handle for r in regs if r.handle is not None]


def entry_result(mode: KeyMode, regs: list[Registration]) -> Any:
    if mode == "unique":
        return regs[0] if regs else None
    return regs


def fetch(registry: Layout, key: Any, timeout: float | None,
          cache: LookupCache | None) -> Operation:
    """Ask the registry for the key's records; offer the answer to ``cache`` if given."""
    key = models.check_key(key)
    shard = shard_of(key, registry.shards)

    def answer(results: list[Any]) -> list[Registration]:
        seq, regs = results[0]
        if cache is not None:
            cache.offer(key, shard, seq, regs)
        return regs

    return Operation((ShardCall(shard, "entry", (key,)),), deadline_of(timeout), answer)


def select(registry: Layout, prefix: Any, meta: Any, timeout: float | None,
           handles: bool = True) -> Operation:
    prefix = models.check_prefix(prefix)
    wanted = models.check_meta(meta, field="meta filter")
    return _each_shard(registry, "select", (prefix, wanted, bool(handles)), deadline_of(timeout),
                       lambda found: sorted((r for regs in found for r in regs),
                                            key=lambda r: (r.key, r.entry_id)))


def keys_of(registry: Layout, handle: Any, timeout: float | None) -> Operation:
    holder_id = models.actor_id(models.check_handle(handle))
    return _each_shard(registry, "keys_of", (holder_id,), deadline_of(timeout),
                       lambda found: sorted(k for keys in found for k in keys))


def count(registry: Layout, timeout: float | None) -> Operation:
    return _each_shard(registry, "count", (), deadline_of(timeout), sum)


def info(registry: Layout, timeout: float | None) -> Operation:
    return _each_shard(registry, "info", (), deadline_of(timeout), list)


def ping(registry: Layout, deadline: float) -> Operation:
    """Every shard answers (their actors exist and run)."""
    return _each_shard(registry, "count", (), deadline, lambda _: None)


def snapshot(shard: int, prefix: str, deadline: float) -> Operation:
    return Operation((ShardCall(shard, "snapshot", (prefix,)),), deadline)


class WaitFor:
    """``wait_for`` as a sequence of long polls of the key's shard, each within the deadline."""

    def __init__(self, registry: Layout, key: Any, exclude: Any, timeout: float | None) -> None:
        self.key = models.check_key(key)
        self.excluded = (models.actor_id(models.check_handle(exclude, "exclude"))
                         if exclude is not None else None)
        self.deadline = deadline_of(timeout)
        self.shard = shard_of(self.key, registry.shards)

    def next_poll(self) -> Operation:
        """The next long poll; ``NotRegistered`` when no time is left for one."""
        wait_s = min(self.deadline - time.monotonic() - WAIT_GRACE_S, LONG_POLL_S)
        if wait_s <= 0:
            raise NotRegistered(self.key, "no holder registered in time")
        call = ShardCall(self.shard, "wait_for", (self.key, self.excluded, wait_s))
        return Operation((call,), self.deadline)

    def timed_out(self, exc: HerdTimeoutError) -> NotRegistered:
        return NotRegistered(self.key, f"no holder registered in time ({exc})")


# ----------------------------------------------------------------------- watch/dispatch
def subscribe(registry: Layout, handle: Any, method: Any, prefix: Any,
              timeout: float | None) -> Operation:
    models.check_handle(handle)
    method = models.check_method(method)
    prefix = models.check_prefix(prefix)
    return _each_shard(registry, "subscribe", (handle, method, prefix), deadline_of(timeout),
                       lambda _: None)


def unsubscribe(registry: Layout, handle: Any, method: Any, timeout: float | None) -> Operation:
    holder_id = models.actor_id(models.check_handle(handle))
    if method is not None:
        method = models.check_method(method)
    return _each_shard(registry, "unsubscribe", (holder_id, method), deadline_of(timeout), sum)


def dispatch_method(registry: Layout, method: Any) -> str:
    require(registry, "duplicate", "dispatch")
    return models.check_method(method)


def dispatch(key: str, handles: Sequence[Any], method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> list[ray.ObjectRef]:
    """Call ``method`` on every member; one ObjectRef per member."""
    refs = []
    for handle in handles:
        try:
            bound = getattr(handle, method)
        except AttributeError:
            raise RegistryInputError(f"a member of {key!r} has no such actor method",
                                     field="method", value=method) from None
        refs.append(bound.remote(*args, **kwargs))
    return refs


# ------------------------------------------------------------------------------ config
def config_bytes(keys: KeyMode, shards: int) -> bytes:
    return json.dumps({"keys": keys, "shards": shards}).encode()


def parse_config(raw: bytes | None) -> dict[str, Any] | None:
    return None if raw is None else json.loads(raw)


def check_config(name: str, keys: KeyMode, shards: int, existing: dict[str, Any] | None) -> None:
    """``KeyModeError`` when the stored config of registry ``name`` differs from the wanted."""
    if existing is not None and existing != {"keys": keys, "shards": shards}:
        raise KeyModeError(f"registry {name!r} exists with keys={existing['keys']!r}, "
                           f"shards={existing['shards']}; asked for keys={keys!r}, "
                           f"shards={shards}")


# ------------------------------------------------------------------ answers and retries
class Attempts:
    """The retry bookkeeping of one shard call: the time left, the pause after a failure of the
    registry actor (it is restarting or being re-created), and the typed error of a refusal."""

    def __init__(self, registry: str, call: ShardCall, deadline: float) -> None:
        self.registry = registry
        self.call = call
        self.deadline = deadline
        self.what = f"registry {registry!r} {call.method}"

    def remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise HerdTimeoutError(f"{self.what} did not complete in time")
        return remaining

    def pause_after(self, exc: RayActorError) -> float:
        """Seconds to wait before retrying; ``HerdTimeoutError`` when no time is left."""
        if self.deadline - time.monotonic() <= RETRY_PAUSE_S:
            raise HerdTimeoutError(f"{self.what}: registry actor unavailable: {exc}") from exc
        log.debug("registry_retry", registry=self.registry, shard=self.call.shard,
                  method=self.call.method, error=type(exc).__name__)
        return RETRY_PAUSE_S

    @staticmethod
    def result(answer: Any) -> Any:
        if isinstance(answer, Rejection):
            raise rejection_error(answer)
        return answer


def rejection_error(rejection: Rejection) -> Exception:
    if rejection.kind == "already_registered":
        return AlreadyRegistered(rejection.key, rejection.holder)
    if rejection.kind == "epoch_conflict":
        return EpochConflict(rejection.key, rejection.expected or 0, rejection.actual)
    if rejection.kind == "not_registered":
        return NotRegistered(rejection.key, rejection.detail)
    if rejection.kind == "holder_dead":
        return HolderDead(rejection.key, rejection.holder)
    if rejection.kind == "meta_too_large":
        return RegistryInputError(f"the meta would be {rejection.detail}", field="meta_update",
                                  value=f"<changes of {rejection.key!r}>")
    return HerdTimeoutError(f"holder of {rejection.key!r} was not alive in time "
                            f"(state {rejection.detail})")
