"""The write-ahead log: what was synced is recovered (hard state, entries with overwrites,
installed and local snapshots) for every group in the file; a torn tail is cut off; many
records from many groups share one fsync; a rewrite keeps the state."""

from __future__ import annotations

import threading
from pathlib import Path

from herd.consensus.raft import Entry, HardState, Membership, Ready, Snapshot
from herd.consensus.wal import WriteAheadLog

MEMBERS = Membership(frozenset({"a", "b", "c"}))


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=f"{term}:{i}") for i in range(first, last + 1)]


def test_recovers_hard_state_and_entries_with_overwrites(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.record_ready("g", Ready(hard_state=HardState(2, "a", 3), entries=entries(1, 5, 1)))
    wal.record_ready("g", Ready(entries=entries(4, 6, 2)))
    wal.record_ready("h", Ready(hard_state=HardState(7, None, 0)))
    wal.close()
    with WriteAheadLog(tmp_path) as again:
        state = again.state("g")
    assert state.hard_state == HardState(2, "a", 3)
    assert [(e.term, e.index) for e in state.entries] == [(1, 1), (1, 2), (1, 3), (2, 4),
                                                          (2, 5), (2, 6)]
    assert again.state("h").hard_state.term == 7


def test_unsynced_records_are_not_durable(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.record_ready("g", Ready(entries=entries(1, 2, 1)))
    wal.sync()
    wal.record_ready("g", Ready(entries=entries(3, 4, 1)))  # never synced: the process died
    wal.abandon()
    with WriteAheadLog(tmp_path) as again:
        assert [e.index for e in again.state("g").entries] == [1, 2]


def test_snapshots_installed_replace_the_log_local_ones_keep_its_tail(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.record_ready("local", Ready(entries=entries(1, 10, 1)))
    wal.record("local", "compact", Snapshot(6, 1, MEMBERS, {"n": 6}))
    wal.record_ready("installed", Ready(entries=entries(1, 10, 1)))
    wal.record_ready("installed", Ready(snapshot=Snapshot(20, 3, MEMBERS, {"n": 20})))
    wal.close()
    with WriteAheadLog(tmp_path) as again:
        local, installed = again.state("local"), again.state("installed")
    assert local.snapshot is not None and local.snapshot.data == {"n": 6}
    assert [e.index for e in local.entries] == [7, 8, 9, 10]
    assert installed.snapshot is not None and installed.snapshot.index == 20
    assert installed.entries == []


def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.record_ready("g", Ready(entries=entries(1, 3, 1)))
    wal.close()
    good = wal.path.stat().st_size
    with open(wal.path, "ab") as torn:
        torn.write(b"\x00\x00\x10\x00garbage")
    with WriteAheadLog(tmp_path) as again:
        assert [e.index for e in again.state("g").entries] == [1, 2, 3]
        assert wal.path.stat().st_size == good
        again.record_ready("g", Ready(entries=entries(4, 4, 1)))
    with WriteAheadLog(tmp_path) as last:
        assert [e.index for e in last.state("g").entries] == [1, 2, 3, 4]


def test_group_commit_one_fsync_for_many_writers(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    barrier = threading.Barrier(8)

    def writer(number: int) -> None:
        barrier.wait()
        for i in range(1, 51):
            wal.record_ready(f"g{number}", Ready(entries=[Entry(1, i, data=i)]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert wal.sync() == 400 and wal.syncs == 1
    wal.close()
    with WriteAheadLog(tmp_path) as again:
        assert all(len(again.state(f"g{n}").entries) == 50 for n in range(8))


def test_rewrite_keeps_every_groups_state(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for round_ in range(20):
        wal.record_ready("g", Ready(hard_state=HardState(round_, None, round_),
                                    entries=entries(round_ * 10 + 1, round_ * 10 + 10, 1)))
    wal.record("g", "compact", Snapshot(150, 1, MEMBERS, "s"))
    wal.sync()
    before = wal.path.stat().st_size
    wal.rewrite()
    assert wal.path.stat().st_size < before
    wal.record_ready("g", Ready(entries=entries(201, 201, 2)))
    wal.close()
    with WriteAheadLog(tmp_path) as again:
        state = again.state("g")
    assert state.hard_state == HardState(19, None, 19)
    assert state.snapshot is not None and state.snapshot.index == 150
    assert [e.index for e in state.entries] == list(range(151, 202))
