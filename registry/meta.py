"""Validation of a record's meta: a JSON object of at most ``MAX_META_BYTES`` as JSON.

The check returns a private copy, normalised as a JSON round trip would (tuples become lists),
with its strings interned. A batch of 10 000 claims checks 10 000 metas in the caller's
process, so the common case -- plain dicts, lists, strings and numbers, far below the size
limit -- is one walk that copies and bounds the size from above, with no JSON text made
(10 000 child-record metas: 44 ms, against 151 ms for ``json.dumps`` + ``json.loads``;
measured). Anything else (keys that are not strings, subclasses of the JSON types, a bound
above the limit) takes the exact path: a JSON round trip, whose errors and size are the rule.

Interning: the metas of thousands of records then share their strings, which pickle writes once
per message (a memo reference after the first), so a batch or a ``select`` of 10 000 records
pickles ~4x and unpickles ~7x faster, 40% smaller (measured), at every hop: client, registry,
KV store, readers.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from herd.registry.errors import RegistryInputError

MAX_META_BYTES = 64 * 1024

_REPR_FACTOR = 12
#: Bytes a JSON scalar can take at most (``repr`` of a float or a 64-bit int, ``false``).
_NUMBER_BOUND = 24


class _NotPlain(Exception):
    """The value needs the exact path."""


def check_meta(meta: Any, field: str = "meta") -> dict[str, Any]:
    """``meta`` checked and copied (``None`` is the empty object); ``RegistryInputError``
    naming ``field`` if it is not a JSON object or is over ``MAX_META_BYTES`` as JSON."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise RegistryInputError(f"must be a dict (a JSON object), got {type(meta).__name__}",
                                 field=field, value=meta)
    try:
        copy, bound = _plain(meta)
    except (_NotPlain, RecursionError):
        return _exact(meta, field)
    if bound > MAX_META_BYTES:
        return _exact(meta, field)
    return copy  # type: ignore[no-any-return]


def updated(meta: dict[str, Any], update: dict[str, Any],
            increment: dict[str, int]) -> dict[str, Any] | str:
    """A new meta: ``meta`` with ``update``'s keys set and ``increment``'s ints added (a value
    absent or not an int counts as 0), all three already checked; a string saying why not
    when the result would be over ``MAX_META_BYTES`` as JSON."""
    merged = {**meta, **update}
    for key, step in increment.items():
        value = merged.get(key, 0)
        merged[key] = (value if type(value) is int else 0) + step
    return within_limit(merged) or merged


def within_limit(meta: dict[str, Any]) -> str | None:
    """For a meta built from checked parts (e.g. a stored meta and a checked patch): None if it
    is at most ``MAX_META_BYTES`` as JSON, else why not. Bounds the size without copying it,
    first at C speed -- ``json.dumps`` writes at most 12 characters for each character of the
    value's ``repr`` (12 for a character outside the BMP, and no more than ``repr`` for
    numbers, literals and separators) -- and measures it exactly only when both bounds are
    over the limit."""
    if _REPR_FACTOR * len(repr(meta)) <= MAX_META_BYTES or _bound(meta) <= MAX_META_BYTES:
        return None
    size = len(json.dumps(meta, separators=(",", ":")).encode("utf-8"))
    return None if size <= MAX_META_BYTES else \
        f"{size} bytes as JSON, at most {MAX_META_BYTES} allowed"


def _bound(value: Any) -> int:
    """``_plain``'s size bound, for a value known to be plain JSON."""
    kind = type(value)
    if kind is str:
        return (len(value) if value.isascii() else 2 * len(value)) * 6 + 2
    if kind is dict:
        return 2 + sum((len(k) if k.isascii() else 2 * len(k)) * 6 + 4 + _bound(v)
                       for k, v in value.items())
    if kind is list:
        return 2 + sum(_bound(item) + 1 for item in value)
    return _NUMBER_BOUND if kind is not int or -2**63 <= value < 2**63 else len(str(value))


def _plain(value: Any) -> tuple[Any, int]:
    """A copy of a plain JSON value with interned strings, and an upper bound of its size as
    JSON (``json.dumps`` escapes a character to at most 12 bytes)."""
    kind = type(value)
    if kind is str:
        return sys.intern(value), (len(value) if value.isascii() else 2 * len(value)) * 6 + 2
    if kind is int or kind is bool or value is None:
        return value, _NUMBER_BOUND if kind is not int or -2**63 <= value < 2**63 \
            else len(str(value))
    if kind is float:
        if not math.isfinite(value):
            raise _NotPlain
        return value, _NUMBER_BOUND
    if kind is dict:
        copied: dict[str, Any] = {}
        size = 2
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            copied_item, item_size = _plain(item)
            copied[sys.intern(key)] = copied_item
            size += (len(key) if key.isascii() else 2 * len(key)) * 6 + 4 + item_size
        return copied, size
    if kind is list or kind is tuple:
        items = [_plain(item) for item in value]
        return [item for item, _ in items], 2 + sum(size + 1 for _, size in items)
    raise _NotPlain


def _exact(meta: dict[str, Any], field: str) -> dict[str, Any]:
    try:
        text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise RegistryInputError(f"is not JSON-serialisable: {exc}", field=field,
                                 value=meta) from None
    size = len(text.encode("utf-8"))
    if size > MAX_META_BYTES:
        raise RegistryInputError(f"is {size} bytes as JSON, at most {MAX_META_BYTES} allowed",
                                 field=field, value=f"<{size} bytes>")
    copy, _ = _plain(json.loads(text))
    return copy  # type: ignore[no-any-return]
