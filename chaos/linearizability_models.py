"""Sequential specifications for the linearizability checker: a model is a pure step function
``step(state, input, output) -> (legal, next_state)`` over hashable states, and a partition
function that splits a history into independent sub-histories (P-compositionality: a KV history
is linearizable iff each key's is). ``output`` is ``UNKNOWN`` for an operation whose outcome was
never learned: the model accepts any output, and the checker may also leave it out."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["KV_MODEL", "LOCK_MODEL", "UNKNOWN", "KVModel", "LockModel", "Model"]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


class Model(Protocol):
    name: str

    def initial(self) -> Hashable: ...

    def partition(self, input: Any) -> Hashable: ...

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]: ...

    def describe(self, input: Any, output: Any) -> str: ...


@dataclass(frozen=True)
class KVModel:
    """One register per key; state ``(value, version)`` (version 0: absent, each write adds
    one, as ``herd.consensus.KV`` counts). Inputs: ``("get", k)`` -> value or None,
    ``("put", k, v)``, ``("delete", k)``, ``("cas", k, expected, new)`` -> bool (on the value;
    expected None: absent), ``("vcas", k, version, new)`` -> bool (on the version)."""

    name: str = "kv"

    def initial(self) -> Hashable:
        return (None, 0)

    def partition(self, input: Any) -> Hashable:
        key: Hashable = input[1]
        return key

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        assert isinstance(state, tuple)
        value: Any = state[0]
        version: int = state[1]
        kind = input[0]
        if kind == "get":
            return (output is UNKNOWN or output == value), state
        if kind == "put":
            return True, (input[2], version + 1)
        if kind == "delete":
            return True, (None, 0)
        if kind in ("cas", "vcas"):
            applies = (value if kind == "cas" else version) == input[2]
            after = (input[3], version + 1) if applies else state
            return (output is UNKNOWN or bool(output) == applies), after
        raise ValueError(f"unknown kv operation {kind!r}")

    def describe(self, input: Any, output: Any) -> str:
        return f"{input[0]}({', '.join(map(repr, input[1:]))}) -> {output!r}"


@dataclass(frozen=True)
class LockModel:
    """A lock with fencing tokens; state ``(holder, last token)``. Inputs:
    ``("acquire", lock, client)`` -> ``(granted, token, displaced)`` where ``displaced`` is the
    holder whose lease had expired (or None), the same token when the holder renews;
    ``("release", lock, client)`` -> ``"released"``, ``"not_holder"`` or ``"expired"`` (the
    client held it, but its lease ran out: the lock is free)."""

    name: str = "lock"

    def initial(self) -> Hashable:
        return (None, 0)

    def partition(self, input: Any) -> Hashable:
        key: Hashable = input[1]
        return key

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        assert isinstance(state, tuple)
        holder: Any = state[0]
        token: int = state[1]
        kind, client = input[0], input[2]
        if kind == "acquire":
            if output is UNKNOWN:
                return True, (client, token + 1) if holder is None else state
            granted, new_token, displaced = output
            if not granted:
                return holder is not None and holder != client, state
            if holder == client:  # a renewal keeps the token; after its lease ran out, a new one
                legal = new_token == token or (new_token > token and displaced == client)
                return legal, (client, new_token)
            legal = (holder is None or holder == displaced) and new_token > token
            return legal, (client, new_token)
        if kind == "release":
            if output is UNKNOWN:
                return True, (None, token) if holder == client else state
            if output == "not_holder":
                return holder != client, state
            return holder == client, (None, token)
        raise ValueError(f"unknown lock operation {kind!r}")

    def describe(self, input: Any, output: Any) -> str:
        return f"{input[0]}({input[1]!r}, by {input[2]!r}) -> {output!r}"


KV_MODEL = KVModel()
LOCK_MODEL = LockModel()
