"""Validation of everything a caller hands to the registry (pydantic v2 where it fits).

Every check raises :class:`RegistryInputError` naming the field and the bad value, in the
caller's process, before anything reaches the registry actor -- so bad input never changes the
registry.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from ray.actor import ActorHandle

from herd.platform.validation import format_loc
from herd.registry.errors import RegistryInputError
from herd.registry.meta import check_meta
from herd.registry.records import AbsentOr, Expected, KeyMode, MetaMatch, OnHolderDeath

MAX_KEY_BYTES = 1024
MAX_SHARDS = 64
CHANGE_FIELDS = ("handle", "meta", "meta_update", "meta_increment", "on_holder_death")

T = TypeVar("T")


def _key_size(key: str) -> str:
    if not key:
        raise ValueError("key must not be empty")
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise ValueError(f"key is {size} bytes, at most {MAX_KEY_BYTES} allowed")
    return key


Key = Annotated[StrictStr, AfterValidator(_key_size)]
RegistryName = Annotated[StrictStr,
                         Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Prefix = Annotated[StrictStr, Field(max_length=MAX_KEY_BYTES)]
MethodName = Annotated[StrictStr,
                       Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class RegistryOptions(BaseModel):
    """Arguments of ``Registry.start``; stored as the registry's config in the GCS KV store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RegistryName = "default"
    keys: KeyMode = "unique"
    shards: int = Field(default=1, ge=1, le=MAX_SHARDS, strict=True)


_KEY = TypeAdapter(Key)
_NAME = TypeAdapter(RegistryName)
_PREFIX = TypeAdapter(Prefix)
_METHOD = TypeAdapter(MethodName)
_ON_DEATH = TypeAdapter(OnHolderDeath)


def _validate(adapter: TypeAdapter[T], value: Any, field: str) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _input_error(exc, field, value) from None


def _input_error(exc: ValidationError, field: str, value: Any) -> RegistryInputError:
    first = exc.errors()[0]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = format_loc(tuple(first.get("loc", ())))
    return RegistryInputError(message, field=f"{field}.{loc}" if loc else field, value=value)


def options(**values: Any) -> RegistryOptions:
    try:
        return RegistryOptions(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = format_loc(tuple(first.get("loc", ())))
        raise RegistryInputError(str(first.get("msg", "invalid value")), field=loc or "options",
                                 value=first.get("input")) from None


def check_name(name: Any) -> str:
    return _validate(_NAME, name, "registry")


def check_key(key: Any) -> str:
    return _validate(_KEY, key, "key")


def check_prefix(prefix: Any) -> str:
    return _validate(_PREFIX, "" if prefix is None else prefix, "prefix")


def check_method(method: Any) -> str:
    return _validate(_METHOD, method, "method")


def check_on_holder_death(value: Any) -> OnHolderDeath:
    return _validate(_ON_DEATH, value, "on_holder_death")


def check_handle(handle: Any, field: str = "handle") -> ActorHandle:
    if not isinstance(handle, ActorHandle):
        raise RegistryInputError(f"must be a Ray actor handle, got {type(handle).__name__}",
                                 field=field, value=handle)
    return handle


def actor_id(handle: ActorHandle) -> str:
    """The hex id of the actor behind ``handle``: how the registry identifies a holder."""
    return handle._actor_id.hex()


def check_epoch(expected: Any, field: str = "expected_epoch") -> int:
    """``None`` and 0 both mean "the key must be absent"."""
    if expected is None:
        return 0
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise RegistryInputError("must be an int >= 0 or None", field=field, value=expected)
    return expected


def check_increment(increment: Any) -> dict[str, int]:
    if not isinstance(increment, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in increment.items()):
        raise RegistryInputError("must be a dict of str -> int", field="meta_increment",
                                 value=increment)
    return dict(increment)


def check_expected(expected: Any, field: str = "expected_epoch") -> Expected:
    """An epoch (``check_epoch``), a :class:`MetaMatch` with at least one value (checked
    as a meta: JSON values) or an :class:`AbsentOr` with a positive epoch."""
    if isinstance(expected, AbsentOr):
        epoch = expected.epoch
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= 0:
            raise RegistryInputError("must be an int > 0", field=f"{field}.epoch", value=epoch)
        return AbsentOr(epoch)
    if not isinstance(expected, MetaMatch):
        return check_epoch(expected, field)
    values = expected.values
    if not isinstance(values, dict) or not values:
        raise RegistryInputError("must be a non-empty dict of meta values",
                                 field=f"{field}.values", value=values)
    return MetaMatch(check_meta(values, field=f"{field}.values"))


def check_timeout(timeout: Any, default: float) -> float:
    if timeout is None:
        return default
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or timeout <= 0):
        raise RegistryInputError("must be a finite number of seconds > 0", field="timeout",
                                 value=timeout)
    return float(timeout)


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The ``**changes`` of ``compare_and_set``: ``handle`` (an actor handle or None), ``meta``
    (replaces the whole meta) or ``meta_update`` (top-level keys set, the others kept) and
    ``meta_increment`` (a dict of ints added to those meta keys, absent ones counting as 0),
    and ``on_holder_death``."""
    unknown = sorted(set(changes) - set(CHANGE_FIELDS))
    if unknown:
        raise RegistryInputError(f"unknown change; allowed: {', '.join(CHANGE_FIELDS)}",
                                 field=unknown[0], value=changes[unknown[0]])
    partial = sorted({"meta_update", "meta_increment"} & set(changes))
    if "meta" in changes and partial:
        raise RegistryInputError("give meta (a replacement) or meta_update/meta_increment, "
                                 "not both", field=partial[0], value=changes[partial[0]])
    checked: dict[str, Any] = {}
    if "meta_update" in changes:
        checked["meta_update"] = check_meta(changes["meta_update"], field="meta_update")
    if "meta_increment" in changes:
        checked["meta_increment"] = check_increment(changes["meta_increment"])
    if "handle" in changes:
        handle = changes["handle"]
        checked["handle"] = None if handle is None else check_handle(handle)
    if "meta" in changes:
        checked["meta"] = check_meta(changes["meta"])
    if "on_holder_death" in changes:
        checked["on_holder_death"] = check_on_holder_death(changes["on_holder_death"])
    return checked
