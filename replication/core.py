"""The pure replication core of one replica (no Ray, no asyncio): local writes, the delta
buffer, per-peer sequence numbers and acknowledgements, digest repair, rejection of bad
messages, and the journal of durable changes. The wire contract is in ``protocol.py``.

The owner (the replica actor, or a test harness) must make :meth:`ReplicaCore.take_journal`
durable before it acknowledges anything: before it answers a local write and before it returns
the reply of :meth:`ReplicaCore.handle` to a peer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from herd.platform.errors import ConfigError
from herd.platform.logging import get_logger
from herd.replication.peers import BufferEntry, DeltaBuffer, PeerLink
from herd.replication.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    NO_EPOCH,
    Ack,
    Delta,
    Digest,
    Envelope,
    Message,
    NeedSync,
    ProtocolViolation,
    Reject,
    State,
    Sync,
    decode,
    encode,
)
from herd.replication.state import FINE_BUCKETS, ReplicaState

log = get_logger("herd.replication.core")
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class CoreConfig:
    """Static settings of one replica of a store."""

    store: str
    region: str
    regions: tuple[str, ...]
    kind: str
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_buffer_entries: int = 200_000
    max_buffer_bytes: int = 256 * 1024 * 1024


def bucket_count_for(keys: int) -> int:
    """Digest granularity: about 8 keys per bucket, between 1 and 4096 buckets (the fine
    buckets the state keeps its digests in)."""
    count = 1
    while count < FINE_BUCKETS and count * 8 < keys:
        count *= 2
    return count


class ReplicaCore:
    """One replica's protocol state machine; see the module and ``protocol.py`` docstrings."""

    def __init__(self, config: CoreConfig, epoch: int) -> None:
        if config.region not in config.regions:
            raise ConfigError("region must be one of regions", source="replication",
                              field="region", value=config.region)
        self.config = config
        self.epoch = epoch
        self.state = ReplicaState(config.kind, f"{config.region}@{epoch}")
        self.seq = 0  # this incarnation's own writes so far (the delta buffer's numbering)
        self.changes = 0  # every change of the state, own writes and merges
        self.buffer = DeltaBuffer(config.max_buffer_entries, config.max_buffer_bytes)
        self.peers = {r: PeerLink(r) for r in config.regions if r != config.region}
        self.rejected: Counter[str] = Counter()
        self.rejected_by_peers: Counter[str] = Counter()
        self.journal: list[dict[str, Any]] = []
        self.listeners: list[Callable[[dict[str, Any], str], None]] = []
        self._digest_cache: tuple[int, int, Digest] | None = None

    # ---------------------------------------------------------------- durability

    def snapshot(self) -> dict[str, Any]:
        """Everything a restarted replica needs (its state and what it merged from whom)."""
        return {"v": SNAPSHOT_VERSION, "epoch": self.epoch, "state": self.state.payload(),
                "peers": {r: p.durable() for r, p in self.peers.items()}}

    def take_journal(self) -> list[dict[str, Any]]:
        """The durable changes since the last call (to append to the replica's log)."""
        records, self.journal = self.journal, []
        return records

    @classmethod
    def restore(cls, config: CoreConfig, epoch: int, snapshot: Mapping[str, Any] | None,
                records: list[Mapping[str, Any]]) -> ReplicaCore:
        """A new incarnation (``epoch`` larger than the snapshot's) from durable data."""
        core = cls(config, epoch)
        if snapshot is not None:
            if snapshot.get("v") != SNAPSHOT_VERSION or epoch <= int(snapshot["epoch"]):
                raise ConfigError("snapshot version or epoch does not fit", source="replication",
                                  field="snapshot", value=snapshot.get("v"))
            core.state.merge(snapshot["state"])
            for region, link in snapshot["peers"].items():
                if region in core.peers:
                    core.peers[region].epoch, core.peers[region].recv = link["epoch"], link["recv"]
        for record in records:
            core._replay(record)
        core.journal.clear()
        return core

    def _replay(self, record: Mapping[str, Any]) -> None:
        op = record["op"]
        if op == "merge":
            self.state.merge(record["payload"])
        elif op == "partial":
            self.state.merge_partial(record["payload"], record["buckets"],
                                     record["bucket_count"])
        elif op == "peer" and record["region"] in self.peers:
            self.peers[record["region"]].epoch = record["epoch"]
            self.peers[record["region"]].recv = record["recv"]

    # ---------------------------------------------------------------- local writes

    def write(self, op: str, *args: Any) -> dict[str, Any]:
        """Apply a local update (``put``, ``delete``, ``incr``, ``add``, ``discard``) and
        return its delta payload; the write is durable once the journal is."""
        delta = getattr(self.state, op)(*args)
        self._record(delta, {"op": "merge", "payload": delta})
        return delta

    def _record(self, payload: dict[str, Any], record: dict[str, Any]) -> None:
        parts = self.state.check(payload)
        size = sum(len(p.to_bytes()) for p in parts.values())
        self.buffer.append(BufferEntry(parts, size))
        self.seq += 1
        self.changes += 1
        self.journal.append(record)
        for listener in self.listeners:
            listener(payload, self.config.region)

    # ---------------------------------------------------------------- sending

    def _env(self, peer: PeerLink) -> Envelope:
        return Envelope(self.config.store, self.config.region, self.epoch, peer.region,
                        peer.epoch)

    def digest(self, bucket_count: int | None = None) -> Digest:
        count = bucket_count or bucket_count_for(self.state.key_count())
        cached = self._digest_cache
        if cached is not None and cached[0] == self.changes and cached[1] == count:
            return cached[2]
        hashes, whole = self.state.bucket_hashes(count)
        digest = Digest(self.seq, whole, count, tuple(hashes))
        self._digest_cache = (self.changes, count, digest)
        return digest

    def pending(self, region: str) -> int:
        """How many of this replica's changes ``region`` has not acknowledged (-1: unknown)."""
        acked = self.peers[region].acked
        return -1 if acked is None else self.seq - acked

    def next_message(self, region: str) -> bytes | None:
        """What to push to ``region`` now: a delta interval, a ``Sync`` when its position is
        unknown or behind the buffer, or None when it has everything."""
        peer = self.peers[region]
        if peer.acked is None or peer.acked < self.buffer.start or peer.force_sync:
            return self.sync_message(region)
        if peer.acked >= self.seq:
            return None
        last, payload = self.buffer.interval(peer.acked, self.config.max_message_bytes // 2)
        raw = encode(Delta(self._env(peer), peer.acked, last, payload))
        peer.delta_bytes += len(raw)
        peer.deltas_sent += 1
        return raw

    def sync_message(self, region: str) -> bytes:
        """An anti-entropy probe for ``region`` (this replica's digest)."""
        peer = self.peers[region]
        peer.force_sync = False
        raw = encode(Sync(self._env(peer), self.seq, self.digest()))
        peer.state_bytes += len(raw)
        return raw

    def _state_for(self, peer: PeerLink, theirs: Digest, ask_back: bool) -> State:
        mine = self.digest(theirs.bucket_count)
        differ = tuple(b for b, (a, c) in enumerate(zip(mine.hashes, theirs.hashes, strict=True))
                       if a != c)
        if 2 * len(differ) > theirs.bucket_count:
            buckets, payload = None, self.state.payload()
        else:
            buckets, payload = differ, self.state.partial(differ, theirs.bucket_count)
        return State(self._env(peer), self.seq, buckets, theirs.bucket_count, payload,
                     mine if ask_back else None)

    # ---------------------------------------------------------------- receiving

    def handle(self, raw: bytes, now_ms: int) -> bytes | None:
        """Process one message from a peer; return the reply to send back to it, if any."""
        origin = ""
        try:
            msg = decode(raw, self.config.max_message_bytes)
            if isinstance(msg, Reject):  # never answered, whatever it says
                self._rejected_by_peer(msg)
                return None
            origin = msg.env.origin
            self._check_envelope(msg.env)
            reply = self._dispatch(msg, now_ms)
        except ProtocolViolation as violation:
            return self._reject(violation, raw, origin)
        if reply is None:
            return None
        encoded = encode(reply)
        if isinstance(reply, State):
            self.peers[reply.env.target].state_bytes += len(encoded)
            self.peers[reply.env.target].states_sent += 1
        return encoded

    def _reject(self, violation: ProtocolViolation, raw: bytes, origin: str) -> bytes:
        self.rejected[violation.reason] += 1
        log.warning("replication_message_rejected", store=self.config.store,
                    region=self.config.region, origin=origin or None, reason=violation.reason,
                    detail=violation.detail, size=len(raw))
        env = Envelope(self.config.store, self.config.region, self.epoch, origin, NO_EPOCH)
        return encode(Reject(env, violation.reason, violation.detail))

    def _rejected_by_peer(self, msg: Reject) -> None:
        self.rejected_by_peers[msg.reason] += 1
        log.warning("replication_peer_rejected", store=self.config.store,
                    region=self.config.region, peer=msg.env.origin, reason=msg.reason,
                    detail=msg.detail)

    def _check_envelope(self, env: Envelope) -> None:
        if env.store != self.config.store:
            raise ProtocolViolation("wrong_store", f"store {env.store!r}")
        if env.target != self.config.region:
            raise ProtocolViolation("wrong_target", f"target {env.target!r}")
        if env.origin not in self.peers:
            raise ProtocolViolation("unknown_origin", f"origin {env.origin!r}")
        peer = self.peers[env.origin]
        if env.epoch < peer.epoch:
            raise ProtocolViolation("stale_epoch", f"epoch {env.epoch} < {peer.epoch}")
        if env.target_epoch > self.epoch:
            raise ProtocolViolation("wrong_epoch", f"target epoch {env.target_epoch} is ahead")
        if env.epoch > peer.epoch:
            log.info("replication_peer_incarnation", store=self.config.store,
                     region=self.config.region, peer=env.origin, epoch=env.epoch)
            self._set_recv(peer, env.epoch, None)
            peer.acked = None

    def _set_recv(self, peer: PeerLink, epoch: int, recv: int | None) -> None:
        peer.epoch, peer.recv = epoch, recv
        self.journal.append({"op": "peer", "region": peer.region, "epoch": epoch, "recv": recv})

    def _dispatch(self, msg: Message, now_ms: int) -> Message | None:
        peer = self.peers[msg.env.origin]
        if isinstance(msg, Delta):
            return self._on_delta(peer, msg)
        if isinstance(msg, State):
            return self._on_state(peer, msg)
        if isinstance(msg, Sync):
            return self._on_sync(peer, msg)
        if isinstance(msg, NeedSync):
            return self._state_for(peer, msg.digest, ask_back=False)
        if isinstance(msg, Ack):
            if msg.env.target_epoch == self.epoch:
                if peer.acked is None or msg.seq > peer.acked:
                    peer.acked = min(msg.seq, self.seq)
                peer.last_ack_ms = now_ms
                self._collect_garbage()
            return None
        return None

    def _on_delta(self, peer: PeerLink, msg: Delta) -> Message:
        if peer.recv is None or msg.first > peer.recv:
            reason = "unknown_epoch" if peer.recv is None else "gap"
            return NeedSync(self._env(peer), reason, self.digest())
        if msg.last <= peer.recv:
            self.rejected["stale_seq"] += 1
            return Ack(self._env(peer), peer.recv)
        self._merge(peer, msg.payload, None, 0)
        self._set_recv(peer, peer.epoch, msg.last)
        return Ack(self._env(peer), msg.last)

    def _on_state(self, peer: PeerLink, msg: State) -> Message:
        if peer.recv is not None and msg.seq < peer.recv:
            raise ProtocolViolation("stale_seq", f"state at {msg.seq} < merged {peer.recv}")
        self._merge(peer, msg.payload, msg.buckets, msg.bucket_count)
        self._set_recv(peer, peer.epoch, msg.seq)
        if msg.digest is not None:
            return self._state_for(peer, msg.digest, ask_back=False)
        return Ack(self._env(peer), msg.seq)

    def _on_sync(self, peer: PeerLink, msg: Sync) -> Message:
        mine = self.digest(msg.digest.bucket_count)
        if mine.state_hash == msg.digest.state_hash:
            if peer.recv is None or msg.seq > peer.recv:
                self._set_recv(peer, peer.epoch, msg.seq)
            return Ack(self._env(peer), msg.seq, in_sync=True)
        return self._state_for(peer, msg.digest, ask_back=True)

    def _merge(self, peer: PeerLink, payload: Mapping[str, Any], buckets: tuple[int, ...] | None,
               bucket_count: int) -> None:
        try:
            parts = self.state.check(payload)
        except ConfigError as exc:
            raise ProtocolViolation("bad_payload", str(exc)[:200]) from exc
        plain = dict(payload)
        if buckets is None:
            self.state.merge_parts(parts)
            record = {"op": "merge", "payload": plain}
        else:
            self.state.merge_partial_parts(parts, buckets, bucket_count)
            record = {"op": "partial", "payload": plain, "buckets": list(buckets),
                      "bucket_count": bucket_count}
        self.changes += 1
        self.journal.append(record)
        for listener in self.listeners:
            listener(plain, peer.region)

    def _collect_garbage(self) -> None:
        acked = [p.acked for p in self.peers.values()]
        if acked and all(a is not None for a in acked):
            self.buffer.drop_before(min(a for a in acked if a is not None))

    # ---------------------------------------------------------------- status

    def status(self, now_ms: int) -> dict[str, Any]:
        return {
            "region": self.config.region, "epoch": self.epoch, "seq": self.seq,
            "version_vector": self.state.version_vector(), "keys": self.state.key_count(),
            "buffer": {"start": self.buffer.start, "entries": len(self.buffer.entries),
                       "bytes": self.buffer.total_bytes},
            "rejected": dict(self.rejected), "rejected_by_peers": dict(self.rejected_by_peers),
            "peers": {r: self._peer_status(r, p, now_ms) for r, p in self.peers.items()},
        }

    def _peer_status(self, region: str, peer: Any, now_ms: int) -> dict[str, Any]:
        """``lag_ms``: how long the peer has been missing deltas it is owed (0 when it has them
        all: an idle peer is not behind, however long ago its last ack was)."""
        pending = self.pending(region)
        since_ack = None if peer.last_ack_ms is None else now_ms - peer.last_ack_ms
        return {"epoch": peer.epoch, "recv": peer.recv, "acked": peer.acked, "pending": pending,
                "ms_since_ack": since_ack, "lag_ms": since_ack if pending else 0,
                "delta_bytes": peer.delta_bytes, "state_bytes": peer.state_bytes,
                "deltas_sent": peer.deltas_sent, "states_sent": peer.states_sent}
