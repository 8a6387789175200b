"""Per-peer bookkeeping of a replica core and the delta buffer (pure data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from herd.platform.crdt import CRDT
from herd.replication.protocol import NO_EPOCH


@dataclass
class PeerLink:
    """What one replica knows about one peer.

    Receiving side: ``epoch`` is the newest incarnation seen from the peer and ``recv`` the
    peer's sequence number up to which its changes are merged here (None: unknown, the next
    delta needs a digest exchange first). Sending side: ``acked`` is this replica's sequence
    number (of its current epoch) up to which the peer has durably merged (None: unknown).
    """

    region: str
    epoch: int = NO_EPOCH
    recv: int | None = None
    acked: int | None = None
    force_sync: bool = False
    last_ack_ms: int | None = None
    delta_bytes: int = 0
    state_bytes: int = 0
    deltas_sent: int = 0
    states_sent: int = 0

    def durable(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "recv": self.recv}


@dataclass
class BufferEntry:
    """One local write (``seq``) of this replica: its delta, per part, and its size."""

    parts: dict[str, CRDT]
    size: int


@dataclass
class DeltaBuffer:
    """The deltas of sequence numbers ``start .. start + len(entries) - 1``, bounded by count
    and bytes; dropping the oldest entries moves ``start`` (peers behind it need a digest)."""

    max_entries: int
    max_bytes: int
    start: int = 0
    entries: list[BufferEntry] = field(default_factory=list)
    total_bytes: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.entries)

    def append(self, entry: BufferEntry) -> None:
        self.entries.append(entry)
        self.total_bytes += entry.size
        while self.entries and (len(self.entries) > self.max_entries
                                or self.total_bytes > self.max_bytes):
            self.drop_before(self.start + 1)

    def drop_before(self, seq: int) -> None:
        """Forget the entries below ``seq`` (all peers have them, or the buffer is full)."""
        count = min(max(seq - self.start, 0), len(self.entries))
        if count:
            self.total_bytes -= sum(e.size for e in self.entries[:count])
            del self.entries[:count]
            self.start += count

    def reset(self, seq: int) -> None:
        """Forget every entry and continue at ``seq``."""
        self.entries.clear()
        self.total_bytes = 0
        self.start = seq

    def interval(self, first: int, max_bytes: int) -> tuple[int, dict[str, Any]]:
        """The join of the entries from ``first``, stopping before ``max_bytes`` is exceeded
        (at least one entry): ``(last, payload)``."""
        joined: dict[str, CRDT] = {}
        size = 0
        last = first
        for entry in self.entries[first - self.start:]:
            if size and size + entry.size > max_bytes:
                break
            last += 1
            size += entry.size
            for name, delta in entry.parts.items():
                if name in joined:
                    joined[name].merge(delta)
                else:
                    joined[name] = delta.copy()
        return last, {"parts": {name: crdt.to_dict() for name, crdt in joined.items()}}
