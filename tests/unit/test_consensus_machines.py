"""The built-in state machines and the machine host (pure): KV versions, revisions, CAS and
watch; lock leases with fencing tokens; the election singleton; counters; deduplication of a
client's retried command; snapshot and restore; command validation at the boundary."""

from __future__ import annotations

import itertools

import pytest

from herd.consensus.counter import Counter
from herd.consensus.errors import CommandInvalid, MachineInvalid
from herd.consensus.kv import KV
from herd.consensus.locks import Election, Lock
from herd.consensus.machine import Envelope, MachineHost, check_machine, parse_input

SEQUENCE = itertools.count(1)


def run(host: MachineHost, raw: object, *, client: str = "c", time: float = 0.0) -> object:
    sequence = next(SEQUENCE)
    command = parse_input(host.machine.command_model, raw, "command")
    return host.apply(sequence, Envelope(client, sequence, command, time))


def ask(host: MachineHost, raw: object) -> object:
    return host.query(parse_input(host.machine.query_model, raw, "query"))


def test_kv_put_get_delete_versions_and_revisions() -> None:
    host = MachineHost(KV)
    assert run(host, ("put", "a", 1)) == {"version": 1, "revision": 1}
    assert run(host, ("put", "a", 2)) == {"version": 2, "revision": 2}
    assert ask(host, ("get", "a")) == {"value": 2, "version": 2, "revision": 2}
    assert run(host, ("delete", "a")) == {"deleted": True, "revision": 3}
    assert ask(host, ("get", "a")) is None
    assert run(host, ("delete", "a"))["deleted"] is False  # type: ignore[index]


def test_kv_compare_and_set_on_versions() -> None:
    host = MachineHost(KV)
    assert run(host, ("cas", "k", 0, "first"))["ok"] is True  # type: ignore[index]
    assert run(host, ("cas", "k", 0, "again"))["ok"] is False  # type: ignore[index]
    assert run(host, ("cas", "k", 1, "second")) == {"ok": True, "version": 2, "revision": 2}
    assert ask(host, ("get", "k"))["value"] == "second"  # type: ignore[index]


def test_kv_prefix_range_and_watch_from_a_revision() -> None:
    host = MachineHost(KV)
    for key in ("cfg/a", "cfg/b", "other"):
        run(host, ("put", key, key.upper()))
    assert ask(host, ("range", "cfg/")) == {"cfg/a": "CFG/A", "cfg/b": "CFG/B"}
    watched = ask(host, ("watch", "cfg/", 1))
    assert [e["key"] for e in watched["events"]] == ["cfg/b"]  # type: ignore[index]
    assert watched["compacted"] is False  # type: ignore[index]


def test_a_retried_command_is_applied_once() -> None:
    host = MachineHost(Counter)
    command = parse_input(Counter.command_model, ("add", "n", 5), "command")
    first = host.apply(1, Envelope("client-1", 7, command, 0.0))
    again = host.apply(2, Envelope("client-1", 7, command, 0.0))
    assert first == again == 5 and ask(host, ("value", "n")) == 5
    assert host.apply(3, Envelope("client-2", 7, command, 0.0)) == 10, "another client's seq"


def test_lock_fencing_tokens_grow_and_expired_holders_are_refused() -> None:
    host = MachineHost(Lock)
    granted = run(host, ("acquire", "L", "a", 5.0), time=100.0)
    assert granted == {"granted": True, "token": 1, "displaced": None, "holder": "a"}
    assert run(host, ("acquire", "L", "b", 5.0), time=101.0)["granted"] is False  # type: ignore[index]
    assert run(host, ("release", "L", "b"), time=102.0) == "not_holder"
    taken = run(host, ("acquire", "L", "b", 5.0), time=106.0)
    assert taken == {"granted": True, "token": 2, "displaced": "a", "holder": "b"}
    assert run(host, ("release", "L", "a"), time=107.0) == "not_holder"
    assert run(host, ("release", "L", "b"), time=120.0) == "expired"
    assert run(host, ("acquire", "L", "c", 5.0), time=121.0)["token"] == 3  # type: ignore[index]


def test_the_leaders_clock_never_goes_back() -> None:
    host = MachineHost(Lock)
    run(host, ("acquire", "L", "a", 5.0), time=100.0)
    assert run(host, ("acquire", "L", "b", 5.0), time=50.0)["granted"] is False  # type: ignore[index]


def test_election_one_leader_the_others_learn_who() -> None:
    host = MachineHost(Election)
    assert run(host, ("campaign", "E", "x", 3.0), time=1.0)["granted"] is True  # type: ignore[index]
    lost = run(host, ("campaign", "E", "y", 3.0), time=2.0)
    assert lost["granted"] is False and lost["holder"] == "x"  # type: ignore[index]
    assert ask(host, ("leader", "E"))["holder"] == "x"  # type: ignore[index]
    assert run(host, ("campaign", "E", "y", 3.0), time=5.0)["token"] == 2  # type: ignore[index]


def test_snapshot_and_restore_carry_machine_and_sessions() -> None:
    host = MachineHost(KV)
    run(host, ("put", "a", 1), client="c1")
    state = host.snapshot()
    copy = MachineHost(KV)
    copy.restore(state)
    assert ask(copy, ("get", "a"))["value"] == 1  # type: ignore[index]
    assert copy.results == host.results


def test_counter_sequence() -> None:
    host = MachineHost(Counter)
    assert [run(host, ("next", "ids")) for _ in range(3)] == [1, 2, 3]


def test_bad_commands_get_a_typed_error_naming_the_field() -> None:
    with pytest.raises(CommandInvalid, match="command"):
        parse_input(KV.command_model, ("frobnicate", "a"), "command")
    with pytest.raises(CommandInvalid, match="key"):
        parse_input(KV.command_model, ("put", "", 1), "command")
    with pytest.raises(CommandInvalid, match="version"):
        parse_input(KV.command_model, {"op": "cas", "key": "k", "version": -1}, "command")
    with pytest.raises(CommandInvalid, match="at most"):
        parse_input(KV.command_model, ("delete", "a", "b"), "command")


def test_a_machine_without_apply_is_refused() -> None:
    class NoApply:
        def snapshot(self) -> None: ...

        def restore(self, state: object) -> None: ...

    with pytest.raises(MachineInvalid, match="apply"):
        check_machine(NoApply)
    with pytest.raises(MachineInvalid, match="class"):
        check_machine(KV())
    check_machine(KV)
