"""Wire protocol of regional replication: versioned, validated messages between the replicas of
one store (one replica per region), and the transport-independent contract around them.

Contract (stable: the federation gateway codes against it)
-----------------------------------------------------------
* Every message is a :data:`Message` record encoded by :func:`encode` to compact UTF-8 JSON
  ``{"v": 1, "kind": ..., "store", "origin", "epoch", "target", "target_epoch", ...}``.
  :func:`decode` validates size, syntax, version, field types and ranges and raises
  :class:`ProtocolViolation` (with a short machine-readable ``reason``) instead of returning
  anything half-valid.
* The pure core (:class:`herd.replication.core.ReplicaCore`) has one entry point for everything
  a peer sends: ``core.handle(raw: bytes, now_ms: int) -> bytes | None``. It never raises on
  peer input: a bad message is answered with a :class:`Reject` (the reason is logged and
  counted, nothing is merged). The returned bytes go back to the message's origin; ``None``
  means the exchange is finished.
* The replica actor exposes the same thing remotely: ``async def receive(self, payload: bytes)
  -> bytes`` (``b""`` for "no reply"). It returns only after whatever the message changed is
  durable, so an :class:`Ack` always means "persisted". A transport (a Ray actor call inside a
  cluster, an HTTP POST through a gateway between clusters) does exactly this: deliver the
  request bytes to the peer's ``receive`` and hand the reply bytes to the local core's
  ``handle``; repeat while ``handle`` returns bytes (a conversation is at most four messages).

Exchanges (Almeida et al. 2016, Algorithm 2, plus digest repair)
----------------------------------------------------------------
* Every local write of a replica gets the next sequence number of that replica's current
  *epoch* (its incarnation: a restarted replica takes a new, larger epoch, so its numbers are
  never confused with the old ones). ``Delta(first, last)`` carries the join of the writes
  ``first <= seq < last``; the peer merges it only when it has merged everything of that origin
  and epoch before ``first`` (per-origin FIFO without gaps, the condition the CRDTs need), then
  answers ``Ack(seq=last)``. Every replica pushes its own writes to every peer (full mesh);
  writes of a third region that a peer cannot reach directly travel inside the digest repair
  below, not as forwarded deltas (forwarding every merge as a new delta echoes forever unless
  each merge is tested for inflation, which costs O(state) with these CRDTs).
* A duplicate (``last`` already acknowledged) is answered with an
  ``Ack`` and counted as ``stale_seq``, never merged twice.
* A gap (the peer does not know the origin's epoch, restarted without its state, or missed a
  truncated part of the buffer) is answered with ``NeedSync`` carrying the peer's
  :class:`Digest` (per-bucket hashes of its keys). The origin answers with ``State``: its own
  state restricted to the buckets that differ (or everything, when most do), plus its full
  causal context and current ``seq``; merging it makes the peer include the origin's state at
  ``seq``, so deltas continue from there.
* Anti-entropy: ``Sync`` carries the sender's digest. An equal state hash is answered with
  ``Ack(in_sync=True)``; otherwise with ``State`` for the differing buckets plus the responder's
  own digest, to which the initiator replies with its ``State`` for the buckets that differ from
  that digest. Both sides end up with the join of both states.
* Rejected (never merged): undecodable, truncated or oversized bytes (``malformed``,
  ``oversized``), a wrong protocol version (``version``), another store or target
  (``wrong_store``, ``wrong_target``), an origin that is not a region of the store
  (``unknown_origin``), an epoch older than one already seen from that origin (``stale_epoch``),
  a target epoch in this replica's future (``wrong_epoch``), a replayed interval (``stale_seq``),
  a payload that is not a valid state of the store's type (``bad_payload``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_BUCKETS = 65536
NO_EPOCH = 0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HASH = re.compile(r"[0-9a-f]{16}")

REJECT_REASONS = ("malformed", "oversized", "version", "wrong_store", "wrong_target",
                  "unknown_origin", "stale_epoch", "wrong_epoch", "stale_seq", "bad_payload")


class ProtocolViolation(Exception):
    """A message that must not be processed; ``reason`` is one of :data:`REJECT_REASONS`.

    Internal to the protocol layer (the core turns it into a :class:`Reject` reply and a
    counter); it is not a ``HerdError`` because no user call ever sees it.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    """Who sends what to whom: ``origin`` replica (region) in its ``epoch``, to ``target`` as
    the origin last knew it (``target_epoch``, :data:`NO_EPOCH` when unknown)."""

    store: str
    origin: str
    epoch: int
    target: str
    target_epoch: int = NO_EPOCH


@dataclass(frozen=True)
class Digest:
    """A summary of a replica's state: ``hashes[b]`` hashes the keys that fall into bucket
    ``b`` of ``bucket_count``; ``state_hash`` the whole state; ``at_seq`` the replica's
    sequence number when it was taken."""

    at_seq: int
    state_hash: str
    bucket_count: int
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class Delta:
    """The join of the origin's changes ``first <= seq < last`` (a CRDT ``to_dict`` payload)."""

    env: Envelope
    first: int
    last: int
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class State:
    """The origin's state at ``seq``: the keys in ``buckets`` of ``bucket_count`` (all keys
    when ``buckets`` is None) with the full causal context. ``digest``, when set, asks the
    receiver to answer with its own ``State`` for the buckets that differ from it."""

    env: Envelope
    seq: int
    buckets: tuple[int, ...] | None
    bucket_count: int
    payload: Mapping[str, Any]
    digest: Digest | None = None


@dataclass(frozen=True)
class Sync:
    """Anti-entropy probe: the origin's digest at its ``seq``."""

    env: Envelope
    seq: int
    digest: Digest


@dataclass(frozen=True)
class Ack:
    """The responder has durably merged the target's changes up to (excluding) ``seq``;
    ``in_sync`` answers a ``Sync`` whose state hash matched."""

    env: Envelope
    seq: int
    in_sync: bool = False


@dataclass(frozen=True)
class NeedSync:
    """The responder cannot merge the origin's delta causally (``reason``: ``gap``,
    ``unknown_epoch``); it asks for a ``State`` against its ``digest``."""

    env: Envelope
    reason: str
    digest: Digest


@dataclass(frozen=True)
class Reject:
    """The responder refused the message (``reason`` from :data:`REJECT_REASONS`)."""

    env: Envelope
    reason: str
    detail: str = ""


Message = Delta | State | Sync | Ack | NeedSync | Reject
_KINDS: dict[type, str] = {Delta: "delta", State: "state", Sync: "sync", Ack: "ack",
                           NeedSync: "need_sync", Reject: "reject"}


# ------------------------------------------------------------------------------ encoding

def _digest_dict(digest: Digest) -> dict[str, Any]:
    return {"at_seq": digest.at_seq, "state_hash": digest.state_hash,
            "bucket_count": digest.bucket_count, "hashes": list(digest.hashes)}


def _body(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Delta):
        return {"first": msg.first, "last": msg.last, "payload": msg.payload}
    if isinstance(msg, State):
        return {"seq": msg.seq, "buckets": None if msg.buckets is None else list(msg.buckets),
                "bucket_count": msg.bucket_count, "payload": msg.payload,
                "digest": None if msg.digest is None else _digest_dict(msg.digest)}
    if isinstance(msg, Sync):
        return {"seq": msg.seq, "digest": _digest_dict(msg.digest)}
    if isinstance(msg, Ack):
        return {"seq": msg.seq, "in_sync": msg.in_sync}
    if isinstance(msg, NeedSync):
        return {"reason": msg.reason, "digest": _digest_dict(msg.digest)}
    return {"reason": msg.reason, "detail": msg.detail}


def encode(msg: Message) -> bytes:
    """Compact UTF-8 JSON of ``msg``, tagged with the protocol version and its kind."""
    env = msg.env
    data = {"v": PROTOCOL_VERSION, "kind": _KINDS[type(msg)], "store": env.store,
            "origin": env.origin, "epoch": env.epoch, "target": env.target,
            "target_epoch": env.target_epoch, **_body(msg)}
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


# ------------------------------------------------------------------------------ decoding

def _field(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise ProtocolViolation("malformed", f"missing field {name!r}")
    return data[name]


def _int(data: Mapping[str, Any], name: str, minimum: int = 0) -> int:
    value = _field(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolViolation("malformed", f"{name} must be an integer >= {minimum}")
    return value


def _name(data: Mapping[str, Any], name: str, allow_empty: bool = False) -> str:
    value = _field(data, name)
    if allow_empty and value == "":
        return value
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ProtocolViolation("malformed", f"{name} must be a name like 'us-east'")
    return value


def _mapping(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = _field(data, name)
    if not isinstance(value, dict):
        raise ProtocolViolation("malformed", f"{name} must be an object")
    return value


def _bucket_count(data: Mapping[str, Any]) -> int:
    count = _int(data, "bucket_count", 1)
    if count > MAX_BUCKETS or count & (count - 1):
        raise ProtocolViolation("malformed", f"bucket_count must be a power of 2 <= {MAX_BUCKETS}")
    return count


def _digest(data: Mapping[str, Any]) -> Digest:
    count = _bucket_count(data)
    hashes = _field(data, "hashes")
    if (not isinstance(hashes, list) or len(hashes) != count
            or not all(isinstance(h, str) and _HASH.fullmatch(h) for h in hashes)):
        raise ProtocolViolation("malformed", "hashes must be bucket_count 16-digit hex strings")
    state_hash = _field(data, "state_hash")
    if not isinstance(state_hash, str) or not _HASH.fullmatch(state_hash):
        raise ProtocolViolation("malformed", "state_hash must be a 16-digit hex string")
    return Digest(_int(data, "at_seq"), state_hash, count, tuple(hashes))


def _buckets(data: Mapping[str, Any], count: int) -> tuple[int, ...] | None:
    raw = _field(data, "buckets")
    if raw is None:
        return None
    if (not isinstance(raw, list) or len(raw) > count
            or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < count
                       for b in raw) or len(set(raw)) != len(raw)):
        raise ProtocolViolation("malformed", "buckets must be distinct bucket numbers")
    return tuple(raw)


def _reason(data: Mapping[str, Any], name: str = "reason") -> str:
    value = _field(data, name)
    if not isinstance(value, str) or len(value) > 64:
        raise ProtocolViolation("malformed", f"{name} must be a short string")
    return value


def _decode_body(kind: str, env: Envelope, data: Mapping[str, Any]) -> Message:
    if kind == "delta":
        first, last = _int(data, "first"), _int(data, "last", 1)
        if last <= first:
            raise ProtocolViolation("malformed", "delta interval must have first < last")
        return Delta(env, first, last, _mapping(data, "payload"))
    if kind == "state":
        count = _bucket_count(data)
        raw_digest = _field(data, "digest")
        digest = None if raw_digest is None else _digest(_mapping(data, "digest"))
        return State(env, _int(data, "seq"), _buckets(data, count), count,
                     _mapping(data, "payload"), digest)
    if kind == "sync":
        return Sync(env, _int(data, "seq"), _digest(_mapping(data, "digest")))
    if kind == "ack":
        in_sync = _field(data, "in_sync")
        if not isinstance(in_sync, bool):
            raise ProtocolViolation("malformed", "in_sync must be a boolean")
        return Ack(env, _int(data, "seq"), in_sync)
    if kind == "need_sync":
        return NeedSync(env, _reason(data), _digest(_mapping(data, "digest")))
    if kind == "reject":
        detail = _field(data, "detail")
        if not isinstance(detail, str):
            raise ProtocolViolation("malformed", "detail must be a string")
        return Reject(env, _reason(data), detail[:512])
    raise ProtocolViolation("malformed", f"unknown message kind {kind!r}")


def decode(raw: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode one message; :class:`ProtocolViolation` for anything else."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProtocolViolation("malformed", f"expected bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise ProtocolViolation("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        data = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolViolation("malformed", f"not UTF-8 JSON ({str(exc)[:80]})") from exc
    if not isinstance(data, dict):
        raise ProtocolViolation("malformed", "a message is a JSON object")
    version = data.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolViolation("version", f"protocol version {version!r} is not supported "
                                           f"(supported: {PROTOCOL_VERSION})")
    kind = _field(data, "kind")
    if not isinstance(kind, str):
        raise ProtocolViolation("malformed", "kind must be a string")
    env = Envelope(_name(data, "store"), _name(data, "origin"), _int(data, "epoch", 1),
                   _name(data, "target", allow_empty=kind == "reject"),
                   _int(data, "target_epoch"))
    return _decode_body(kind, env, data)


def check_name(value: object) -> bool:
    """Whether ``value`` is usable as a store or region name on the wire."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
