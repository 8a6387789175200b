"""The member's clock: ticks follow elapsed time, so a paused member's lease has run out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herd.consensus.kv import KV
from herd.consensus.member import RaftMember
from herd.consensus.raft import Membership
from herd.consensus.spec import GroupOptions


@pytest.fixture
def raft(tmp_path: Path) -> Iterator[RaftMember]:
    options = GroupOptions(name="clock", wal_dir=str(tmp_path))
    member = RaftMember(options, KV, "a", "node-1", Membership(frozenset({"a", "b", "c"})), "u1")
    yield member
    member.wal.close()
    member.io.shutdown()


def test_ticks_follow_elapsed_time_not_rounds(raft: RaftMember) -> None:
    start = time.monotonic()
    raft.next_tick = start
    raft.advance_clock(start + 3.5 * raft.options.tick_s)
    assert raft.node.ticks == 4, "one tick per tick_s that passed"
    raft.advance_clock(start + 3.6 * raft.options.tick_s)
    assert raft.node.ticks == 4, "none due yet"


def test_a_long_pause_runs_out_the_election_timer_at_the_first_look(raft: RaftMember) -> None:
    raft.node.lead = "b"  # a follower that heard from its leader just before the pause
    start = time.monotonic()
    raft.next_tick = start
    raft.advance_clock(start + 30.0)  # 30 s paused: bounded catch-up, not 600 ticks
    election = raft.options.election_ticks
    assert raft.node.ticks == 2 * election + 1
    assert not raft.node.in_lease(), "it no longer counts a leader it has not heard from"
    assert raft.node.role == "pre_candidate", "its election timer ran out"
    assert raft.next_tick > start + 30.0
