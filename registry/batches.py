"""Batched writes: ``register_many``, ``compare_and_set_many``, ``remove_many`` (both faces).

A batch is checked whole in the caller's process (a bad item raises ``RegistryInputError``
naming ``items[i].<field>`` and nothing is sent), split by shard, and sent as one actor call per
shard; each shard applies its part as one write (one KV put, ``herd.registry.commit``). A batch
is not all-or-nothing: each item succeeds or fails on its own, as if the items had been sent
one after another in order (a key twice in one batch: the second sees the first), and the
result lists, in the items' order, the record or the error (``AlreadyRegistered``,
``EpochConflict``, ``HolderDead``, ...) -- returned, not raised. All-or-nothing would make one
contested name fail thousands of claims that do not conflict, and a supervisor that claims the
children of a dead node wants every claim it can get. Retried after a registry restart, items
already committed return their committed result (each item has its own operation id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from herd.registry import models
from herd.registry.cache import LookupCache
from herd.registry.errors import RegistryInputError
from herd.registry.layout import shard_of
from herd.registry.operations import (
    Layout,
    Operation,
    ShardCall,
    deadline_of,
    own_node,
    ready_s,
    rejection_error,
    require,
)
from herd.registry.records import (
    ClaimItem,
    OnHolderDeath,
    RegisterItem,
    Registration,
    Rejection,
    RemoveItem,
    Written,
)

MAX_BATCH = 100_000


def register_many(registry: Layout, entries: Any, on_holder_death: Any,
                  timeout: float | None) -> Operation:
    """``entries``: ``(key, handle)`` or ``(key, handle, meta)`` tuples."""
    items = _items(entries, "entries")
    on_death: OnHolderDeath = models.check_on_holder_death(on_holder_death)
    if on_death == "clear":
        require(registry, "unique", 'on_holder_death="clear"')
    op, nodes = uuid.uuid4().hex, _Nodes()
    checked = []
    for i, item in enumerate(items):
        key, handle, meta = _fields(item, f"entries[{i}]", 2, 3)
        field = f"entries[{i}]"
        key, handle = _checked(models.check_key, key, f"{field}.key"), _handle(handle, field)
        meta = _checked(models.check_meta, meta, f"{field}.meta")
        holder_id, node = nodes.of(handle)
        checked.append(RegisterItem(key, handle, holder_id, node, meta, on_death, f"{op}/{i}"))
    deadline = deadline_of(timeout)
    return _by_shard(registry, "register_many", checked, lambda part: (part, ready_s(deadline)),
                     deadline)


def compare_and_set_many(registry: Layout, items: Any, timeout: float | None,
                         full: bool = True) -> Operation:
    """``items``: ``(key, expected_epoch)`` or ``(key, expected_epoch, changes)`` tuples,
    ``changes`` a dict of what ``compare_and_set`` takes as keyword arguments. ``full=False``:
    a written item answers :class:`Written` (new epoch and entry id), not the whole record."""
    listed = _items(items, "items")
    require(registry, "unique", "compare_and_set_many")
    op, nodes = uuid.uuid4().hex, _Nodes()
    # Items may share one changes dict (e.g. thousands of claims with one patch): it is
    # checked once and sent once (pickle writes a shared object once).
    shared: dict[int, tuple[dict[str, Any], str | None, str | None]] = {}
    checked = []
    for i, item in enumerate(listed):
        key, expected, changes = _fields(item, f"items[{i}]", 2, 3)
        field = f"items[{i}]"
        key = _checked(models.check_key, key, f"{field}.key")
        expected = models.check_expected(expected, f"{field}.expected_epoch")
        if changes is not None and not isinstance(changes, dict):
            raise RegistryInputError("must be a dict of changes", field=f"{field}.changes",
                                     value=changes)
        known = shared.get(id(changes))
        if known is None:
            valid = _checked(models.check_changes, changes or {}, f"{field}.changes")
            handle = valid.get("handle")
            holder_id, node = nodes.of(handle) if handle is not None else (None, None)
            known = shared[id(changes)] = (valid, holder_id, node)
        checked.append(ClaimItem(key, expected, known[0], known[1], known[2], f"{op}/{i}"))
    deadline = deadline_of(timeout)
    return _by_shard(registry, "compare_and_set_many", checked,
                     lambda part: (part, ready_s(deadline), bool(full)), deadline,
                     None if full else _as_written)


def remove_many(registry: Layout, items: Any, timeout: float | None) -> Operation:
    """``items``: keys, or ``(key, epoch)`` tuples (remove only if the record still has that
    epoch; unique registries)."""
    checked = []
    for i, item in enumerate(_items(items, "items")):
        key, epoch = (item, None) if isinstance(item, str) else _fields(item, f"items[{i}]", 2, 2)
        key = _checked(models.check_key, key, f"items[{i}].key")
        if epoch is not None:
            require(registry, "unique", "remove_many with epochs")
            epoch = _checked(models.check_epoch, epoch, f"items[{i}].epoch")
        checked.append(RemoveItem(key, epoch))
    return _by_shard(registry, "remove_many", checked, lambda part: (part,), deadline_of(timeout))


# ---------------------------------------------------------------------------- internals
class _Nodes:
    """A holder's id and ``own_node`` once per distinct handle."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[str, str | None]] = {}
        self._handles: list[Any] = []  # alive while the batch is checked, so ids stay unique

    def of(self, handle: Any) -> tuple[str, str | None]:
        known = self._known.get(id(handle))
        if known is None:
            known = self._known[id(handle)] = (models.actor_id(handle), own_node(handle))
            self._handles.append(handle)
        return known


def _items(items: Any, field: str) -> list[Any]:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise RegistryInputError("must be a list of items", field=field, value=items)
    listed = list(items)
    if len(listed) > MAX_BATCH:
        raise RegistryInputError(f"has {len(listed)} items, at most {MAX_BATCH} allowed",
                                 field=field, value=f"<{len(listed)} items>")
    return listed


def _fields(item: Any, field: str, least: int, most: int) -> tuple[Any, ...]:
    """The item's fields, padded with None to ``most``."""
    if not isinstance(item, tuple | list) or not least <= len(item) <= most:
        size = f"{least}" if least == most else f"{least} to {most}"
        raise RegistryInputError(f"must be a tuple of {size} fields", field=field, value=item)
    return (*item, *([None] * (most - len(item))))


def _checked(check: Callable[[Any], Any], value: Any, field: str) -> Any:
    """``check(value)``, its error naming the item's field."""
    try:
        return check(value)
    except RegistryInputError as exc:
        inner = exc.field
        prefix = ": ".join(p for p in (exc.source, inner) if p)
        message = str(exc)[len(prefix) + 2:] if prefix else str(exc)
        nested = inner not in (None, "key", "meta", "expected_epoch")
        raise RegistryInputError(message, field=f"{field}.{inner}" if nested else field,
                                 value=value) from None


def _handle(handle: Any, field: str) -> Any:
    return models.check_handle(handle, f"{field}.handle")


def _as_written(item: ClaimItem, answer: tuple[int, int]) -> Written:
    return Written(item.key, *answer)


def _by_shard(registry: Layout, method: str, items: list[Any],
              args: Callable[[list[Any]], tuple[Any, ...]], deadline: float,
              convert: Callable[[Any, Any], Any] | None = None) -> Operation:
    """One call per shard with the shard's items; the answers put back in the items' order,
    refusals turned into (returned) errors, others passed through ``convert(item, answer)``
    when given."""
    parts: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        parts.setdefault(shard_of(item.key, registry.shards), []).append(index)
    shards = sorted(parts)
    calls = tuple(ShardCall(shard, method, args([items[i] for i in parts[shard]]))
                  for shard in shards)

    def combine(answers: list[Any]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        for shard, answer in zip(shards, answers, strict=True):
            for index, result in zip(parts[shard], answer, strict=True):
                results[index] = rejection_error(result) if isinstance(result, Rejection) \
                    else result if convert is None else convert(items[index], result)
        return results

    return Operation(calls, deadline, combine)


def entries(registry: Layout, keys: Any, timeout: float | None,
            cache: LookupCache | None = None) -> Operation:
    """The records of each of ``keys`` (a list per key, in order), one call per shard; each
    answer is offered to ``cache`` if given."""
    listed = [models.check_key(key) for key in _items(keys, "keys")]
    by_shard: dict[int, list[int]] = {}
    for index, key in enumerate(listed):
        by_shard.setdefault(shard_of(key, registry.shards), []).append(index)
    shards = sorted(by_shard)
    calls = tuple(ShardCall(shard, "entries", ([listed[i] for i in by_shard[shard]],))
                  for shard in shards)

    def combine(answers: list[Any]) -> list[list[Registration]]:
        found: list[list[Registration]] = [[] for _ in listed]
        for shard, (seq, answer) in zip(shards, answers, strict=True):
            for index, regs in zip(by_shard[shard], answer, strict=True):
                found[index] = regs
                if cache is not None:
                    cache.offer(listed[index], shard, seq, regs)
        return found

    return Operation(calls, deadline_of(timeout), combine)
