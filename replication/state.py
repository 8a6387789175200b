"""The replicated state of one store: named parts, each a map-shaped delta CRDT.

``kind="lww_map"`` has one part, ``map`` (an AWLWWMap: JSON values, last writer wins by HLC,
add-wins against a concurrent delete). ``kind="ormap"`` holds typed values in three parts:
``registers`` (AWLWWMap), ``sets`` (ORMap of ORSet: add-wins sets) and ``counters`` (ORMap of
AWLWWMap: each writer lineage keeps its own running total under its id, the counter is their
sum; deleting the key resets the totals it has observed, a concurrent increment survives).

A state or delta travels as ``{"parts": {name: crdt.to_dict()}}``; a delta names only the
parts it touches. Digests hash the entries (``[key, encoded store]``) of every part per bucket
of ``hash(part, key)``; a *partial state* is the parts restricted to some buckets, with their
full causal contexts, and is joined with :meth:`ReplicaState.merge_partial` (join on the
listed buckets only, contexts joined; see ``protocol.py`` for why that is safe).

The CRDT calls are kept here, in the helpers at the bottom, and nowhere else in the package.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from herd.platform.crdt import CRDT, AWLWWMap, ORMap, ORSet, load
from herd.platform.errors import ConfigError

KINDS = ("lww_map", "ormap")
_PARTS = {"lww_map": ("map",), "ormap": ("registers", "sets", "counters")}
Payload = Mapping[str, Any]


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def bucket_of(part: str, key: Any, bucket_count: int) -> int:
    """The digest bucket of ``key`` in ``part`` (stable across processes and versions)."""
    digest = hashlib.blake2b(f"{part}\x00{json.dumps(key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (bucket_count - 1)


def _entries(encoded: Mapping[str, Any]) -> list[list[Any]]:
    store = encoded.get("store")
    if not isinstance(store, list):
        raise ConfigError("a map state's store must be a list", source="replication",
                          field="store", value=type(store).__name__)
    return store


class ReplicaState:
    """The state of one replica: the parts of its store's kind, plus the writer id and clock
    its parts are bound to (a fresh writer id per replica incarnation, so a replica that lost
    its state never mints a dot twice)."""

    def __init__(self, kind: str, writer: str) -> None:
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}", source="replication",
                              field="kind", value=kind)
        self.kind = kind
        self.writer = writer
        self.parts: dict[str, CRDT] = {name: _empty(name, writer) for name in _PARTS[kind]}

    # ---------------------------------------------------------------- payloads and merging

    def payload(self) -> dict[str, Any]:
        """The full state, JSON-safe."""
        return {"parts": {name: crdt.to_dict() for name, crdt in self.parts.items()}}

    def _load_parts(self, payload: Payload) -> dict[str, CRDT]:
        parts = payload.get("parts")
        if not isinstance(parts, dict):
            raise ConfigError("payload needs a 'parts' object", source="replication",
                              field="parts", value=type(parts).__name__)
        loaded = {}
        for name, data in parts.items():
            if name not in self.parts:
                raise ConfigError(f"unknown part for kind {self.kind!r}", source="replication",
                                  field="parts", value=name)
            crdt = load(data)
            if type(crdt) is not type(self.parts[name]) or crdt.to_dict().get(
                    "value_type") != self.parts[name].to_dict().get("value_type"):
                raise ConfigError("part has the wrong CRDT type", source="replication",
                                  field=f"parts.{name}", value=data.get("type"))
            loaded[name] = crdt
        return loaded

    def check(self, payload: Payload) -> dict[str, CRDT]:
        """Validate a peer's payload (ConfigError when it is not a state of this kind)."""
        return self._load_parts(payload)

    def merge(self, payload: Payload) -> None:
        """Join a delta or a full state (validated first; nothing changes when invalid)."""
        for name, crdt in self._load_parts(payload).items():
            self.parts[name].merge(crdt)

    def merge_partial(self, payload: Payload, buckets: Sequence[int], bucket_count: int) -> None:
        """Join a partial state: entries in ``buckets`` are joined, the others kept as they
        are; causal contexts are joined."""
        chosen = set(buckets)
        for name, theirs in self._load_parts(payload).items():
            mine = self.parts[name].to_dict()
            inside = [e for e in _entries(mine) if bucket_of(name, e[0], bucket_count) in chosen]
            outside = [e for e in _entries(mine) if bucket_of(name, e[0], bucket_count)
                       not in chosen]
            joined = load({**mine, "store": inside}).merge(theirs).to_dict()
            entries = {json.dumps(e[0]): e for e in outside}
            entries.update((json.dumps(e[0]), e) for e in _entries(joined))
            ordered = sorted(entries.values(), key=lambda e: (isinstance(e[0], str), e[0]))
            self.parts[name] = load({**joined, "store": ordered}, self.writer)

    def partial(self, buckets: Sequence[int], bucket_count: int) -> dict[str, Any]:
        """The parts restricted to the keys in ``buckets``, with their full contexts."""
        chosen = set(buckets)
        parts = {}
        for name, crdt in self.parts.items():
            data = crdt.to_dict()
            data["store"] = [e for e in _entries(data)
                             if bucket_of(name, e[0], bucket_count) in chosen]
            parts[name] = data
        return {"parts": parts}

    def partial_key(self, key: Any) -> dict[str, Any]:
        """The parts restricted to ``key``, with their full contexts (joinable)."""
        parts = {}
        for name, crdt in self.parts.items():
            data = crdt.to_dict()
            data["store"] = [e for e in _entries(data) if e[0] == key]
            parts[name] = data
        return {"parts": parts}

    # ---------------------------------------------------------------- digests

    def key_count(self) -> int:
        return sum(len(_entries(crdt.to_dict())) for crdt in self.parts.values())

    def bucket_hashes(self, bucket_count: int) -> tuple[list[str], str]:
        """Per-bucket hashes of the entries, and the hash of the whole state."""
        buckets: list[list[bytes]] = [[] for _ in range(bucket_count)]
        whole = hashlib.blake2b(digest_size=8)
        for name, crdt in self.parts.items():
            data = crdt.to_dict()
            for entry in _entries(data):
                text = json.dumps([name, entry], separators=(",", ":")).encode()
                buckets[bucket_of(name, entry[0], bucket_count)].append(text)
            whole.update(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return [_hash(b"\n".join(items)) for items in buckets], whole.hexdigest()

    # ---------------------------------------------------------------- reads

    def get(self, key: Any) -> Any:
        """The value of ``key`` (None when absent). In an ormap a key written concurrently
        as two types is read as a register first, then a set, then a counter."""
        for name, crdt in self.parts.items():
            found, value = _read(name, crdt, key)
            if found:
                return value
        return None

    def items(self) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        for name in reversed(tuple(self.parts)):
            merged.update(_read_all(name, self.parts[name]))
        return merged

    def keys(self) -> Iterator[Any]:
        return iter(self.items())

    # ---------------------------------------------------------------- mutators (deltas)

    def put(self, key: Any, value: Any) -> dict[str, Any]:
        part = "map" if self.kind == "lww_map" else "registers"
        crdt = self.parts[part]
        assert isinstance(crdt, AWLWWMap)
        return {"parts": {part: crdt.put(key, value).to_dict()}}

    def delete(self, key: Any) -> dict[str, Any]:
        parts = {}
        for name, crdt in self.parts.items():
            assert isinstance(crdt, (AWLWWMap, ORMap))
            delta = crdt.remove(key)
            if _entries(delta.to_dict()) or delta.to_dict()["context"] != _EMPTY_CONTEXT:
                parts[name] = delta.to_dict()
        return {"parts": parts}

    def incr(self, key: Any, by: int) -> dict[str, Any]:
        counters = self._ormap("counters")
        writer = self.writer
        current = counters.get(key)
        total = (current.get(writer, 0) if current is not None else 0) + by
        delta = counters.update(key, lambda totals: totals.put(writer, total))
        return {"parts": {"counters": delta.to_dict()}}

    def add(self, key: Any, element: Any) -> dict[str, Any]:
        delta = self._ormap("sets").update(key, lambda s: s.add(element))
        return {"parts": {"sets": delta.to_dict()}}

    def discard(self, key: Any, element: Any) -> dict[str, Any]:
        delta = self._ormap("sets").update(key, lambda s: s.remove(element))
        return {"parts": {"sets": delta.to_dict()}}

    def _ormap(self, name: str) -> ORMap:
        if name not in self.parts:
            raise ConfigError(f"{name} need kind='ormap'", source="replication", field="kind",
                              value=self.kind)
        crdt = self.parts[name]
        assert isinstance(crdt, ORMap)
        return crdt


_EMPTY_CONTEXT = {"vv": {}, "cloud": []}


def _empty(part: str, writer: str) -> CRDT:
    if part in ("map", "registers"):
        return AWLWWMap(writer)
    if part == "sets":
        return ORMap(ORSet, writer)
    return ORMap(AWLWWMap, writer)


def _read(part: str, crdt: CRDT, key: Any) -> tuple[bool, Any]:
    if isinstance(crdt, AWLWWMap):
        return crdt.contains(key), crdt.get(key)
    assert isinstance(crdt, ORMap)
    nested = crdt.get(key)
    if nested is None:
        return False, None
    return True, _nested_value(part, nested.value())


def _read_all(part: str, crdt: CRDT) -> dict[Any, Any]:
    if isinstance(crdt, AWLWWMap):
        return dict(crdt.value())
    return {key: _nested_value(part, value) for key, value in crdt.value().items()}


def _nested_value(part: str, value: Any) -> Any:
    if part == "sets":
        return set(value)
    return sum(v for v in value.values() if isinstance(v, int))
