"""herd.registry.models and layout: input validation and naming (no Ray)."""

from __future__ import annotations

import enum
import json
import math

import pytest

from herd.platform.errors import ConfigError
from herd.registry.errors import RegistryError, RegistryInputError
from herd.registry.layout import actor_name, shard_of
from herd.registry.meta import MAX_META_BYTES, check_meta, within_limit
from herd.registry.models import (
    MAX_KEY_BYTES,
    check_changes,
    check_epoch,
    check_expected,
    check_handle,
    check_key,
    check_method,
    check_name,
    check_timeout,
    options,
)
from herd.registry.records import AbsentOr, MetaMatch


@pytest.mark.parametrize("key", ["", 7, None, b"bytes", "x" * (MAX_KEY_BYTES + 1),
                                 "é" * (MAX_KEY_BYTES // 2 + 1)])
def test_bad_keys(key: object) -> None:
    with pytest.raises(RegistryInputError) as info:
        check_key(key)
    assert info.value.field == "key"
    assert isinstance(info.value, RegistryError) and isinstance(info.value, ConfigError)


class Colour(enum.IntEnum):
    RED = 1


def test_good_keys() -> None:
    assert check_key("a") == "a"
    assert check_key("x" * MAX_KEY_BYTES) == "x" * MAX_KEY_BYTES


@pytest.mark.parametrize("meta", [[1, 2], "text", {"f": object()}, {"n": math.nan},
                                  {"s": {1, 2}}, {"big": "x" * MAX_META_BYTES}])
def test_bad_meta(meta: object) -> None:
    with pytest.raises(RegistryInputError) as info:
        check_meta(meta)
    assert info.value.field == "meta"


def test_meta_is_normalised_copy() -> None:
    original = {"t": (1, 2), "nested": {"a": None}}
    checked = check_meta(original)
    assert checked == {"t": [1, 2], "nested": {"a": None}} and checked is not original
    assert check_meta(None) == {}


def _as_json(meta: dict[str, object]) -> int | None:
    """The meta's size as JSON, None if JSON refuses it (the rule ``check_meta`` follows)."""
    try:
        return len(json.dumps(meta, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("meta", [
    {"k": "x" * (MAX_META_BYTES - 8)},          # exactly at the limit: accepted
    {"k": "x" * (MAX_META_BYTES - 7)},          # one byte over
    {"k": "\u00e9" * (MAX_META_BYTES // 6 - 2)},  # escaped to 6 bytes a character
    {"k": "\U0001f600" * (MAX_META_BYTES // 12)},  # 12 bytes a character
    {"k": "\n\"" * (MAX_META_BYTES // 4)},       # escapes in ASCII text
    {1: "int key", None: [1.5, True, None, (2, "t")]},  # keys JSON turns into strings
    {"n": 2**70, "f": -1.2345678901234567e-308, "nested": {"a": [[], {}]}},
    {"e": Colour.RED, "inf": math.inf},
])
def test_meta_check_follows_json(meta: dict[str, object]) -> None:
    size = _as_json(meta)
    if size is None or size > MAX_META_BYTES:
        with pytest.raises(RegistryInputError):
            check_meta(meta)
    else:
        assert check_meta(meta) == json.loads(json.dumps(meta))


def test_meta_strings_are_interned() -> None:
    one = check_meta({"owner": "".join(["node-", "abc"])})
    two = check_meta({"owner": "".join(["node-", "abc"])})
    assert one["owner"] is two["owner"]


def test_partial_meta_changes_are_checked() -> None:
    checked = check_changes({"meta_update": {"t": (1,)}, "meta_increment": {"n": 1}})
    assert checked == {"meta_update": {"t": [1]}, "meta_increment": {"n": 1}}
    for bad, field in [({"meta": {}, "meta_update": {}}, "meta_update"),
                       ({"meta_update": [1]}, "meta_update"),
                       ({"meta_increment": {"n": 1.5}}, "meta_increment"),
                       ({"meta_increment": {"n": True}}, "meta_increment")]:
        with pytest.raises(RegistryInputError) as info:
            check_changes(bad)
        assert info.value.field == field


def test_expected_is_an_epoch_or_a_meta_match() -> None:
    assert check_expected(7) == 7 and check_expected(None) == 0
    assert check_expected(MetaMatch({"owner": "n", "n": (1,)})) == MetaMatch(
        {"owner": "n", "n": [1]})
    assert check_expected(AbsentOr(4)) == AbsentOr(4)
    for bad, field in [(MetaMatch({}), "items[3].expected_epoch.values"),
                       (MetaMatch({"f": object()}), "items[3].expected_epoch.values"),
                       (AbsentOr(0), "items[3].expected_epoch.epoch"),
                       (AbsentOr(True), "items[3].expected_epoch.epoch"),
                       ("3", "items[3].expected_epoch")]:
        with pytest.raises(RegistryInputError) as info:
            check_expected(bad, "items[3].expected_epoch")
        assert info.value.field == field


def test_handle_epoch_timeout_method_name_checks() -> None:
    for bad in [object(), "actor", None]:
        with pytest.raises(RegistryInputError, match="actor handle"):
            check_handle(bad)
    assert check_epoch(None) == 0 and check_epoch(3) == 3
    for bad_epoch in [-1, 1.5, True, "3"]:
        with pytest.raises(RegistryInputError):
            check_epoch(bad_epoch)
    assert check_timeout(None, 5.0) == 5.0 and check_timeout(2, 5.0) == 2.0
    for bad_timeout in [0, -1, math.inf, "1", True]:
        with pytest.raises(RegistryInputError):
            check_timeout(bad_timeout, 5.0)
    for bad_method in ["", "1abc", "a b", None]:
        with pytest.raises(RegistryInputError):
            check_method(bad_method)
    for bad_name in ["", "a/b", 3, "x" * 65]:
        with pytest.raises(RegistryInputError):
            check_name(bad_name)


def test_changes_and_options() -> None:
    with pytest.raises(RegistryInputError, match="unknown change") as info:
        check_changes({"owner": "n1"})
    assert info.value.field == "owner"
    assert check_changes({"handle": None, "meta": {"a": 1}}) == {"handle": None, "meta": {"a": 1}}
    with pytest.raises(RegistryInputError):
        check_changes({"on_holder_death": "explode"})
    assert options(name="r", keys="duplicate", shards=4).shards == 4
    for bad in [{"keys": "many"}, {"shards": 0}, {"shards": "2"}, {"name": "a b"}, {"extra": 1}]:
        with pytest.raises(RegistryInputError):
            options(**bad)


def test_layout() -> None:
    assert actor_name("default", 0, 1) == "herd/registry/default"
    assert actor_name("r", 3, 4) == "herd/registry/r/3"
    assert shard_of("anything", 1) == 0
    spread = {shard_of(f"key-{i}", 4) for i in range(100)}
    assert spread == {0, 1, 2, 3}
    assert shard_of("stable", 8) == shard_of("stable", 8)


@pytest.mark.parametrize("meta", [
    {"k": "x" * (MAX_META_BYTES - 8)}, {"k": "x" * (MAX_META_BYTES - 7)},
    {"k": "\U0001f600" * (MAX_META_BYTES // 12)}, {"k": "\U0001f600" * (MAX_META_BYTES // 12 + 1)},
    {"n": [1.5e300, -2**70, None, True, {"d": ""}] * 2000}, {"small": {"a": [1, "b"]}},
])
def test_within_limit_agrees_with_json(meta: dict[str, object]) -> None:
    size = _as_json(meta)
    assert size is not None
    assert (within_limit(meta) is None) == (size <= MAX_META_BYTES)
