"""The replicated state of one store: named parts, each a map-shaped delta CRDT.

``kind="lww_map"`` has one part, ``map`` (an AWLWWMap: JSON values, last writer wins by HLC,
add-wins against a concurrent delete). ``kind="ormap"`` holds typed values in three parts:
``registers`` (AWLWWMap), ``sets`` (ORMap of ORSet: add-wins sets) and ``counters`` (ORMap of
AWLWWMap: each writer lineage keeps its own running total under its id, the counter is their
sum; deleting the key resets the totals it has observed, a concurrent increment survives).

A state or delta travels as ``{"parts": {name: crdt.to_dict()}}``; a delta names only the
parts it touches. A digest bucket holds the keys with ``hash(part, key) % bucket_count == b``;
its hash is the XOR of the hashes of its entries (``[part, key, encoded store]``), kept per
one of :data:`FINE_BUCKETS` fine buckets and updated from the keys each change touches, so a
digest of up to that many buckets costs O(changes since the last one + buckets), whatever the
store's size. A *partial state* is the parts restricted to some buckets, with their full
causal contexts, and is joined with :meth:`ReplicaState.merge_partial` (join on the listed
buckets only, contexts joined; see ``protocol.py`` for why that is safe). Local writes, deltas,
partial states and single-key reads cost O(keys involved + causal context), not O(store).

The CRDT calls are kept here, in the helpers at the bottom, and nowhere else in the package.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from herd.platform.crdt import AWLWWMap, Key, ORMap, ORSet, load
from herd.platform.errors import ConfigError

KINDS = ("lww_map", "ormap")
_PARTS = {"lww_map": ("map",), "ormap": ("registers", "sets", "counters")}
FINE_BUCKETS = 4096  # digests of at most this many buckets are maintained incrementally
Payload = Mapping[str, Any]
Part = AWLWWMap | ORMap


def _key_hash(part: str, key: Any) -> int:
    digest = hashlib.blake2b(f"{part}\x00{json.dumps(key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket_of(part: str, key: Any, bucket_count: int) -> int:
    """The digest bucket of ``key`` in ``part`` (stable across processes and versions)."""
    return _key_hash(part, key) & (bucket_count - 1)


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options builds one a call


def _entry_hash(part: str, key: Key, encoded: Any) -> int:
    text = _COMPACT.encode([part, key, encoded]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _hex(value: int) -> str:
    return f"{value:016x}"


class _PartIndex:
    """Derived data of one part, brought up to date from its changed keys: each key's entry
    hash, and the keys of each fine bucket."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hashes: dict[Key, int] = {}
        self.members: dict[int, set[Key]] = {}

    def refresh(self, crdt: Part, fine: list[int]) -> None:
        """Fold the keys changed since the last refresh into ``fine`` (XOR per fine bucket)."""
        for key in crdt.changed_keys():
            bucket = _key_hash(self.name, key) & (FINE_BUCKETS - 1)
            old = self.hashes.pop(key, None)
            if old is not None:
                fine[bucket] ^= old
            encoded = crdt.encode_key(key)
            if encoded is None:
                members = self.members.get(bucket)
                if members is not None:
                    members.discard(key)
                    if not members:
                        del self.members[bucket]
                continue
            new = _entry_hash(self.name, key, encoded)
            self.hashes[key] = new
            fine[bucket] ^= new
            self.members.setdefault(bucket, set()).add(key)

    def keys_in(self, chosen: set[int], bucket_count: int) -> Iterable[Key]:
        """The keys in the ``chosen`` buckets of ``bucket_count``."""
        if bucket_count > FINE_BUCKETS:
            return [k for k in self.hashes if bucket_of(self.name, k, bucket_count) in chosen]
        keys: list[Key] = []
        for bucket in chosen:
            for fine in range(bucket, FINE_BUCKETS, bucket_count):
                keys.extend(self.members.get(fine, ()))
        return keys


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
        self.parts: dict[str, Part] = {name: _empty(name, writer) for name in _PARTS[kind]}
        self._index = {name: _PartIndex(name) for name in self.parts}
        self._fine = [0] * FINE_BUCKETS
        for name, crdt in self.parts.items():
            self._index[name].refresh(crdt, self._fine)  # starts change tracking

    # ---------------------------------------------------------------- payloads and merging

    def payload(self) -> dict[str, Any]:
        """The full state, JSON-safe (O(store): for snapshots and full-state transfers)."""
        return {"parts": {name: crdt.to_dict() for name, crdt in self.parts.items()}}

    def _load_parts(self, payload: Payload) -> dict[str, Part]:
        parts = payload.get("parts")
        if not isinstance(parts, dict):
            raise ConfigError("payload needs a 'parts' object", source="replication",
                              field="parts", value=type(parts).__name__)
        loaded: dict[str, Part] = {}
        for name, data in parts.items():
            if name not in self.parts:
                raise ConfigError(f"unknown part for kind {self.kind!r}", source="replication",
                                  field="parts", value=name)
            crdt = load(data)
            mine = self.parts[name]
            if not isinstance(crdt, type(mine)) or (
                    isinstance(crdt, ORMap) and isinstance(mine, ORMap)
                    and crdt.value_type != mine.value_type):
                raise ConfigError("part has the wrong CRDT type", source="replication",
                                  field=f"parts.{name}", value=data.get("type"))
            loaded[name] = crdt
        return loaded

    def check(self, payload: Payload) -> dict[str, Part]:
        """Validate a peer's payload (ConfigError when it is not a state of this kind)."""
        return self._load_parts(payload)

    def merge(self, payload: Payload) -> None:
        """Join a delta or a full state (validated first; nothing changes when invalid)."""
        self.merge_parts(self._load_parts(payload))

    def merge_parts(self, parts: Mapping[str, Part]) -> None:
        """Join parts already validated by :meth:`check`."""
        for name, crdt in parts.items():
            self.parts[name].merge(crdt)

    def merge_partial(self, payload: Payload, buckets: Sequence[int], bucket_count: int) -> None:
        """Join a partial state: entries in ``buckets`` are joined, the others kept as they
        are; causal contexts are joined. O(keys in those buckets + the payload)."""
        self.merge_partial_parts(self._load_parts(payload), buckets, bucket_count)

    def merge_partial_parts(self, parts: Mapping[str, Part], buckets: Sequence[int],
                            bucket_count: int) -> None:
        """:meth:`merge_partial` of parts already validated by :meth:`check`."""
        chosen = set(buckets)
        self._refresh()
        for name, theirs in parts.items():
            keys = self._index[name].keys_in(chosen, bucket_count)
            self.parts[name].merge_slice(theirs, keys)

    def partial(self, buckets: Sequence[int], bucket_count: int) -> dict[str, Any]:
        """The parts restricted to the keys in ``buckets``, with their full contexts."""
        chosen = set(buckets)
        self._refresh()
        return {"parts": {name: crdt.slice(self._index[name].keys_in(chosen, bucket_count))
                          .to_dict() for name, crdt in self.parts.items()}}

    def partial_key(self, key: Any) -> dict[str, Any]:
        """The parts restricted to ``key``, with their full contexts (joinable)."""
        return {"parts": {name: crdt.slice([key]).to_dict()
                          for name, crdt in self.parts.items()}}

    # ---------------------------------------------------------------- digests

    def key_count(self) -> int:
        return sum(len(crdt) for crdt in self.parts.values())

    def _refresh(self) -> None:
        for name, crdt in self.parts.items():
            self._index[name].refresh(crdt, self._fine)

    def bucket_hashes(self, bucket_count: int) -> tuple[list[str], str]:
        """Per-bucket hashes of the entries, and the hash of the whole state (entries and
        causal contexts)."""
        self._refresh()
        if bucket_count > FINE_BUCKETS:
            hashes = [0] * bucket_count
            for name, index in self._index.items():
                for key, value in index.hashes.items():
                    hashes[bucket_of(name, key, bucket_count)] ^= value
        else:
            hashes = self._fine
            while len(hashes) > bucket_count:
                half = len(hashes) // 2
                hashes = [a ^ b for a, b in zip(hashes[:half], hashes[half:], strict=True)]
        total = 0
        for value in hashes:
            total ^= value
        whole = hashlib.blake2b(total.to_bytes(8, "big"), digest_size=8)
        for name, crdt in self.parts.items():
            context = crdt.context().to_dict()
            whole.update(json.dumps([name, context], separators=(",", ":")).encode())
        return [_hex(value) for value in hashes], whole.hexdigest()

    def version_vector(self) -> dict[str, int]:
        """The per-writer maximum of the parts' contexts' version vectors."""
        vv: dict[str, int] = {}
        for crdt in self.parts.values():
            for writer, count in crdt.context().to_dict()["vv"].items():
                vv[writer] = max(vv.get(writer, 0), count)
        return vv

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
        keys: set[Any] = set()
        for crdt in self.parts.values():
            keys.update(crdt.keys())
        return iter(keys)

    # ---------------------------------------------------------------- mutators (deltas)

    def put(self, key: Any, value: Any) -> dict[str, Any]:
        part = "map" if self.kind == "lww_map" else "registers"
        crdt = self.parts[part]
        assert isinstance(crdt, AWLWWMap)
        return {"parts": {part: crdt.put(key, value).to_dict()}}

    def delete(self, key: Any) -> dict[str, Any]:
        parts = {}
        for name, crdt in self.parts.items():
            encoded = crdt.remove(key).to_dict()
            if encoded["store"] or encoded["context"] != _EMPTY_CONTEXT:
                parts[name] = encoded
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


def _empty(part: str, writer: str) -> Part:
    if part in ("map", "registers"):
        return AWLWWMap(writer)
    if part == "sets":
        return ORMap(ORSet, writer)
    return ORMap(AWLWWMap, writer)


def _read(part: str, crdt: Part, key: Any) -> tuple[bool, Any]:
    if isinstance(crdt, AWLWWMap):
        return crdt.contains(key), crdt.get(key)
    assert isinstance(crdt, ORMap)
    nested = crdt.get(key)
    if nested is None:
        return False, None
    return True, _nested_value(part, nested.value())


def _read_all(part: str, crdt: Part) -> dict[Any, Any]:
    if isinstance(crdt, AWLWWMap):
        return dict(crdt.value())
    return {key: _nested_value(part, value) for key, value in crdt.value().items()}


def _nested_value(part: str, value: Any) -> Any:
    if part == "sets":
        return set(value)
    return sum(v for v in value.values() if isinstance(v, int))
