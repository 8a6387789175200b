"""The in-memory Raft log of one member: entries after the last snapshot, the commit and
applied indexes, and the mark up to which the host has made entries durable."""

from __future__ import annotations

from collections.abc import Sequence

from herd.consensus.raft.messages import Entry, Snapshot

__all__ = ["RaftLog"]


class RaftLog:
    def __init__(self, snapshot: Snapshot | None = None,
                 entries: Sequence[Entry] = ()) -> None:
        self.snapshot_index = snapshot.index if snapshot else 0
        self.snapshot_term = snapshot.term if snapshot else 0
        self.snapshot = snapshot
        self.entries: list[Entry] = [e for e in entries if e.index > self.snapshot_index]
        self.commit = self.snapshot_index
        self.applied = self.snapshot_index
        self.stable = self.last_index()
        self.pending_snapshot: Snapshot | None = None

    def first_index(self) -> int:
        return self.snapshot_index + 1

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` when compacted away or past the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return None
        return self.entries[index - self.snapshot_index - 1].term

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate's log at least as up to date as this one (Raft section 5.4.1)?"""
        return (last_term, last_index) >= (self.last_term(), self.last_index())

    def slice(self, start: int, limit: int) -> list[Entry]:
        """At most ``limit`` entries from ``start`` (which must not be compacted)."""
        offset = start - self.snapshot_index - 1
        return self.entries[offset:offset + limit]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append after truncating any entry at or after the first new index."""
        if not entries:
            return
        first = entries[0].index
        del self.entries[first - self.snapshot_index - 1:]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def merge(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """A follower's append: skip entries it already has, truncate at the first conflict,
        append the rest. Returns the index of the last entry the leader sent."""
        new = [e for e in entries if e.index > self.snapshot_index]
        for position, entry in enumerate(new):
            if self.term_at(entry.index) != entry.term:
                self.append(new[position:])
                break
        return prev_index + len(entries)

    def first_index_of_term(self, index: int) -> int:
        """The first index whose entry has the same term as ``index``'s (fast backtracking)."""
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        for entry in reversed(self.entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return None

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.snapshot_index:]

    def to_apply(self) -> list[Entry]:
        return self.slice(self.applied + 1, self.commit - self.applied)

    def compact(self, snapshot: Snapshot) -> None:
        """Drop every entry up to the snapshot's index (which must be applied)."""
        del self.entries[:snapshot.index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = snapshot.index, snapshot.term
        self.snapshot = snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """Install a leader's snapshot in place of the whole log (the caller checked that the
        log does not already hold the snapshot's last entry)."""
        self.entries = []
        self.snapshot_index, self.snapshot_term = snapshot.index, snapshot.term
        self.snapshot = snapshot
        self.commit = self.applied = self.stable = snapshot.index
        self.pending_snapshot = snapshot
