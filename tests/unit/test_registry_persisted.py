"""Registry state pickling: a handle Ray cannot restore loads as LostHandle, the rest intact."""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest

from herd.registry import persisted


def _class_gone() -> None:
    # what Ray raises when the creating job's function table lost the handle's class
    raise AssertionError("Expected str or bytes, got <class 'NoneType'>")


def _outage() -> None:
    raise ConnectionError("GCS unreachable")


class _Unrestorable:
    def __init__(self, fail: Any) -> None:
        self.fail = fail

    def __reduce__(self) -> Any:
        return (self.fail, ())


def _stored(value: Any) -> bytes:
    """``value`` pickled with ``_Unrestorable`` objects written the way ``persisted.dumps``
    writes actor handles."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out)
    pickler.dispatch_table = {_Unrestorable: persisted.reduce_handle}
    pickler.dump(value)
    return out.getvalue()


def test_plain_values_round_trip() -> None:
    value = {"chunk": [1, 2, {"meta": "x"}], "counter": 7}
    assert persisted.loads(persisted.dumps(value)) == value


def test_a_handle_whose_class_is_gone_loads_as_lost_and_keeps_its_siblings() -> None:
    raw = _stored({"a": ("key-a", _Unrestorable(_class_gone)), "b": ("key-b", None)})
    loaded = persisted.loads(raw)
    key, handle = loaded["a"]
    assert key == "key-a" and isinstance(handle, persisted.LostHandle)
    assert "Expected str or bytes" in handle.error
    assert loaded["b"] == ("key-b", None)


def test_an_outage_while_loading_is_not_mistaken_for_a_lost_holder() -> None:
    with pytest.raises(ConnectionError):
        persisted.loads(_stored([_Unrestorable(_outage)]))
