"""What a leader knows of each follower's log (etcd-raft's Progress): ``probe`` sends one
append per heartbeat until the follower's match is found, ``replicate`` pipelines appends up
to a window of messages in flight, ``snapshot`` waits for an installed snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Progress", "quorum_index"]

ProgressState = Literal["probe", "replicate", "snapshot"]


@dataclass
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = "probe"
    paused: bool = False
    inflight: list[int] = field(default_factory=list)  # last index of each unacknowledged append
    pending_snapshot: int = 0
    recent_active: bool = False
    acked_sequence: int = 0  # the newest heartbeat this follower answered (reads, leases)
    snapshot_sent_tick: int = 0

    def become_probe(self) -> None:
        if self.state == "snapshot":
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state, self.paused, self.pending_snapshot = "probe", False, 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state, self.paused, self.pending_snapshot = "replicate", False, 0
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state, self.pending_snapshot = "snapshot", index
        self.inflight.clear()

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == "probe":
            return self.paused
        if self.state == "snapshot":
            return True
        return len(self.inflight) >= max_inflight

    def sent(self, last: int) -> None:
        """An append ending at ``last`` went out."""
        if self.state == "replicate":
            self.next = last + 1
            self.inflight.append(last)
        elif self.state == "probe":
            self.paused = True

    def acknowledged(self, index: int) -> bool:
        """The follower holds the leader's log up to ``index``; True if the match moved."""
        self.paused = False
        self.inflight = [last for last in self.inflight if last > index]
        if index > self.match:
            self.match = index
            self.next = max(self.next, index + 1)
            return True
        return False

    def rejected(self, rejected_index: int, next_hint: int) -> bool:
        """The follower refused an append after ``rejected_index``; True if ``next`` moved
        (a stale rejection changes nothing)."""
        if self.state == "replicate":
            if rejected_index <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(next_hint, rejected_index))
            return True
        if self.next - 1 != rejected_index:
            return False
        self.next = max(self.match + 1, min(next_hint, rejected_index))
        self.paused = False
        return True


def quorum_index(values: list[int], quorum: int) -> int:
    """The largest value that at least ``quorum`` of ``values`` reach."""
    ordered = sorted(values, reverse=True)
    return ordered[quorum - 1] if len(ordered) >= quorum else 0
