"""herd.supervisors.dynamic.planner: a member's reconcile decisions and its decisions on a child's
exit, as pure functions of a snapshot (no Ray)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.planner import (
    Action,
    ClaimMany,
    ClaimOrphan,
    Exhausted,
    Fence,
    Forget,
    ForgetOrphan,
    Move,
    Reassign,
    Restart,
    RunningChild,
    Snapshot,
    StartOwn,
    StartOwnMany,
    StopNoQuorum,
    Unplaced,
    on_exit,
    on_start_failure,
    plan,
)
from herd.supervisors.otp.intensity import RestartIntensity
from herd.supervisors.strategies import Member, Placing, Requirements, make_strategy, place

ME = "me"
NOW = 1000.0
WEST = Requirements(labels={"region": "us-west"})


def rec(child_id: str, owner: str = ME, incarnation: int = 1, **kw: Any) -> ChildRecord:
    kw.setdefault("epoch", incarnation * 10)
    kw.setdefault("state", "running")
    return ChildRecord(sup="s", child_id=child_id, owner=owner, incarnation=incarnation, **kw)


def member(node_id: str) -> Member:
    return Member(id=node_id, labels={"region": "us-west" if node_id.startswith("w") else
                                      "us-east"}, resources={"CPU": 2.0})


def snap(records: Iterable[ChildRecord], running: dict[str, int] | None = None, *,
         members: Iterable[str] = (ME, "w1"), live: Iterable[str] | None = None,
         strategy: str = "hash_ring", node_id: str = ME, stopping: Iterable[str] = (),
         **kw: Any) -> Snapshot:
    members = list(members)
    options = kw.pop("options", {})
    return Snapshot(
        node_id=node_id, members=tuple(member(m) for m in members),
        live_nodes=frozenset(members if live is None else live), records=tuple(records),
        running={c: RunningChild(n, c in set(stopping)) for c, n in (running or {}).items()},
        strategy=make_strategy(strategy, **options), now=NOW, **kw)


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    def child(action: Action) -> str:
        record = getattr(action, "record", None)
        return record.child_id if record is not None else getattr(action, "child_id", "")
    return [(type(a).__name__, child(a)) for a in actions if not isinstance(a, Unplaced)]


# ----------------------------------------------------------------------------- steady state
def test_nothing_to_do_when_every_child_runs_where_its_record_says() -> None:
    records = [rec("a"), rec("b", incarnation=3), rec("c", owner="w1")]
    assert plan(snap(records, {"a": 1, "b": 3})) == []


def test_own_stopped_record_starts_only_after_start_by() -> None:
    waiting = rec("new", state="starting", start_by=NOW + 5)
    assert plan(snap([waiting])) == []  # the driver's start_owned call starts it
    due = rec("new", state="starting", start_by=NOW - 1)
    crashed = rec("old", incarnation=2)  # its exit was handled, the restart failed: retry
    assert plan(snap([due, crashed])) == [StartOwn(due), StartOwn(crashed)]


# ---------------------------------------------------------------------------------- fencing
def test_superseded_children_are_fenced() -> None:
    records = [rec("moved", owner="w1", incarnation=2), rec("newer", incarnation=3),
               rec("mine")]
    actions = plan(snap(records, {"moved": 1, "newer": 2, "gone": 4, "mine": 1}))
    assert actions == [Fence("gone", 4), Fence("moved", 1), Fence("newer", 2)]


def test_stopping_and_busy_children_are_not_fenced_again() -> None:
    actions = plan(snap([], {"a": 1, "b": 1}, stopping={"a"}, busy=frozenset({"b"})))
    assert actions == []


def test_without_quorum_every_local_child_stops_and_nothing_else_happens() -> None:
    records = [rec("a"), rec("b", owner="w1"), rec("orphan", owner="dead"),
               rec("stopped", incarnation=2, state="starting")]
    view = snap(records, {"a": 1, "b": 1}, members=[ME], strategy="quorum",
                options={"size": 3})
    assert not view.quorum
    assert plan(view) == [StopNoQuorum("a", 1), StopNoQuorum("b", 1)]
    with_majority = snap(records, {"a": 1}, members=[ME, "w1"], strategy="quorum",
                         options={"size": 3})
    assert with_majority.quorum and not any(isinstance(a, StopNoQuorum)
                                            for a in plan(with_majority))


# ---------------------------------------------------------------------------------- orphans
@pytest.mark.parametrize("strategy,options", [("hash_ring", {}), ("random", {}),
                                              ("least_loaded", {}), ("quorum", {"size": 3})])
def test_orphans_are_claimed_once_by_the_owner_the_strategy_picks(strategy: str,
                                                                  options: dict) -> None:
    """Every survivor plans from the same view; each orphan is claimed by exactly one of them,
    the one ``place`` picks, with failover semantics; nobody claims a live member's child."""
    survivors = [ME, "w1", "w2"]
    orphans = [rec(f"o{i}", owner="dead", incarnation=2) for i in range(30)]
    records = [*orphans, rec("kept", owner="w1")]
    claims: dict[str, list[str]] = {}
    for node in survivors:
        view = snap(records, {"kept": 1} if node == "w1" else {}, members=survivors,
                    node_id=node, strategy=strategy, options=options)
        for action in plan(view):
            assert isinstance(action, ClaimOrphan), action
            claims.setdefault(action.record.child_id, []).append(node)
    assert claims == {o.child_id: [owner] for o, owner in zip(
        orphans, _owners(orphans, survivors, strategy, options, records), strict=True)}
    assert len({nodes[0] for nodes in claims.values()}) > 1  # spread over the survivors


def _owners(orphans: list[ChildRecord], survivors: list[str], strategy: str, options: dict,
            records: list[ChildRecord]) -> list[str]:
    loaded = snap(records, members=survivors, strategy=strategy, options=options).loaded_members
    owners = place(make_strategy(strategy, **options),
                   {o.child_id: Placing(o.epoch, o.requirements) for o in orphans}, loaded)
    return [owners[o.child_id] for o in orphans]


def test_temporary_orphans_are_forgotten_not_restarted() -> None:
    temp = rec("t", owner="dead", restart="temporary")
    assert plan(snap([temp], members=[ME])) == [ForgetOrphan(temp)]


def test_orphans_no_member_admits_are_reported_and_kept() -> None:
    mars = rec("m", owner="dead", requirements=Requirements(labels={"region": "mars"}))
    west = rec("w", owner="dead", requirements=WEST)
    actions = plan(snap([mars, west], members=[ME, "w1"]))
    assert Unplaced(("m",)) in actions
    assert kinds(actions) == []  # "w" goes to w1 (the only us-west member), not to me
    assert kinds(plan(snap([mars, west], members=[ME, "w1"], node_id="w1"))) == [
        ("ClaimOrphan", "w")]


def test_a_live_node_that_is_not_eligible_does_not_orphan_its_children() -> None:
    """The head under the head rule: alive, running a member, owning nothing new."""
    on_head = rec("h", owner="head")
    assert plan(snap([on_head], members=[ME], live=[ME, "head"])) == []
    assert plan(snap([on_head], members=[ME], live=[ME])) == [ClaimOrphan(on_head)]


def test_busy_children_are_left_alone() -> None:
    records = [rec("orphan", owner="dead"), rec("due", state="starting", start_by=0.0),
               rec("moved", owner="w1", incarnation=2)]
    busy = frozenset({"orphan", "due", "moved"})
    assert plan(snap(records, {"moved": 1}, members=[ME], busy=busy)) == []


# ----------------------------------------------------------------------------- redistribution
def test_active_hash_ring_moves_running_and_reassigns_stopped_to_the_ring_owner() -> None:
    ids = [f"c{i}" for i in range(30)]
    running = {i: 1 for i in ids[:20]}
    records = [rec(i, state="running" if i in running else "starting", start_by=0.0)
               for i in ids]
    actions = plan(snap(records, running, members=[ME, "w1"], redistribution="active"))
    ring = make_strategy("hash_ring")
    to_w1 = {i for i in ids if ring.choose(i, [member(ME), member("w1")]).id == "w1"}
    assert 0 < len(to_w1) < len(ids)
    expected: list[Action] = [Move(i, 1, "w1") for i in ids[:20] if i in to_w1]
    for i in ids[20:]:
        expected.append(Reassign(records[ids.index(i)], "w1") if i in to_w1
                        else StartOwn(records[ids.index(i)]))
    assert sorted(actions, key=repr) == sorted(expected, key=repr)
    passive = plan(snap(records, running, members=[ME, "w1"]))
    assert not any(isinstance(a, (Move, Reassign)) for a in passive)


def test_least_loaded_active_evens_loads_and_waits_for_moves_in_flight() -> None:
    records = [rec(c) for c in "abcd"]
    running = dict.fromkeys("abcd", 1)
    actions = plan(snap(records, running, members=[ME, "w1"], strategy="least_loaded",
                        redistribution="active"))
    assert actions == [Move("a", 1, "w1"), Move("b", 1, "w1")]  # 4/0 -> 2/2, in id order
    settling = plan(snap(records, running, members=[ME, "w1"], strategy="least_loaded",
                         redistribution="active", busy=frozenset({"a"})))
    assert settling == []  # the snapshot's loads do not show the move of "a" yet


def test_random_never_moves_a_running_child() -> None:
    records = [rec(c) for c in "abcdef"]
    actions = plan(snap(records, dict.fromkeys("abcdef", 1), members=[ME, "w1"],
                        strategy="random", redistribution="active"))
    assert actions == []


def test_drain_moves_everything_elsewhere_and_starts_nothing_here() -> None:
    stuck = rec("stuck", state="starting", start_by=0.0,
                requirements=Requirements(labels={"region": "us-east"}))
    records = [rec("a"), rec("b"), rec("c", state="starting", start_by=0.0), stuck]
    actions = plan(snap(records, {"a": 1, "b": 1}, members=["w1", "w2"], draining=True,
                        live=[ME, "w1", "w2"]))
    assert kinds(actions) == [("Move", "a"), ("Move", "b"), ("Reassign", "c")]
    assert all(a.target in {"w1", "w2"} for a in actions if isinstance(a, (Move, Reassign)))


def test_a_member_no_longer_eligible_hands_its_children_back_only_when_active() -> None:
    """The head took children when no worker was left; a worker is back (the head is no longer
    eligible): active redistribution moves them there, passive leaves them (and restarts a
    crashed one in place)."""
    records = [rec("a", owner="head"), rec("b", owner="head"),
               rec("c", owner="head", incarnation=2, state="starting", start_by=0.0)]
    for strategy in ("hash_ring", "least_loaded"):
        active = plan(snap(records, {"a": 1, "b": 1}, node_id="head", members=["w1"],
                           live=["head", "w1"], strategy=strategy, redistribution="active"))
        assert active == [Move("a", 1, "w1"), Move("b", 1, "w1"), Reassign(records[2], "w1")]
    passive = plan(snap(records, {"a": 1, "b": 1}, node_id="head", members=["w1"],
                        live=["head", "w1"]))
    assert passive == [StartOwn(records[2])]


# ------------------------------------------------------------------------- lightweight
def light_rec(child_id: str, owner: str = ME, incarnation: int = 1, **kw: Any) -> ChildRecord:
    return rec(child_id, owner, incarnation, kind="lightweight", **kw)


def test_lightweight_orphans_are_claimed_in_one_batch_actor_orphans_one_by_one() -> None:
    """The orphans this member wins: actor ones as ClaimOrphan each, lightweight ones in one
    ClaimMany (child id order, after the single claims), temporary ones forgotten whatever
    their kind; the other survivor gets the rest, and no orphan goes to both."""
    orphans = [light_rec(f"l{i:02}", owner="dead", incarnation=2) for i in range(40)]
    orphans += [rec(f"a{i}", owner="dead") for i in range(6)]
    orphans += [light_rec("temp", owner="dead", restart="temporary")]
    claimed: dict[str, str] = {}
    for node in (ME, "w1"):
        actions = plan(snap(orphans, members=[ME, "w1"], node_id=node))
        many = [a for a in actions if isinstance(a, ClaimMany)]
        assert len(many) == 1 and actions[-1] is many[0]
        batch = many[0].records
        assert [r.child_id for r in batch] == sorted(r.child_id for r in batch)
        assert all(r.lightweight and r.restart != "temporary" for r in batch)
        singles = [a.record for a in actions if isinstance(a, (ClaimOrphan, ForgetOrphan))]
        assert all(not r.lightweight for r in singles if isinstance(r, ClaimOrphan))
        for record in (*batch, *singles):
            assert record.child_id not in claimed
            claimed[record.child_id] = node
        forgotten = [a.record.child_id for a in actions if isinstance(a, ForgetOrphan)]
        assert forgotten == (["temp"] if claimed.get("temp") == node else [])
    assert set(claimed) == {r.child_id for r in orphans}
    assert set(claimed.values()) == {ME, "w1"}


def test_lightweight_orphans_go_where_hosts_have_room() -> None:
    """With ``lightweight_capacity``, a member whose host is full (counting the lightweight
    records it owns) is not given lightweight orphans: the strategy places them on the others,
    and those no host has room for are reported unplaced; actor orphans are not bounded."""
    mine = [light_rec(f"m{i}") for i in range(3)]
    theirs = [light_rec(f"t{i}", owner="w1") for i in range(2)]
    orphans = [light_rec(f"o{i}", owner="dead") for i in range(5)]
    actors = [rec(f"a{i}", owner="dead") for i in range(4)]
    everyone = mine + theirs + orphans + actors
    placed: dict[str, str] = {}
    unplaced: set[str] = set()
    for node in (ME, "w1"):
        actions = plan(snap(everyone, {r.child_id: 1 for r in mine if node == ME},
                            node_id=node, lightweight_capacity=4))
        for action in actions:
            if isinstance(action, ClaimMany):
                placed.update({r.child_id: node for r in action.records})
            elif isinstance(action, ClaimOrphan):
                placed[action.record.child_id] = node
            elif isinstance(action, Unplaced):
                unplaced |= set(action.child_ids)
    light = {c: n for c, n in placed.items() if c.startswith("o")}
    assert sorted(light.values()) == [ME, "w1", "w1"]  # room: 1 here, 2 there
    assert unplaced == {"o0", "o1", "o2", "o3", "o4"} - set(light)
    assert {c for c in placed if c.startswith("a")} == {r.child_id for r in actors}
    free = plan(snap(everyone, lightweight_capacity=None))
    assert sum(len(a.records) for a in free if isinstance(a, ClaimMany)) + sum(
        len(a.records) for a in plan(snap(everyone, node_id="w1"))
        if isinstance(a, ClaimMany)) == 5  # no limit: every orphan placed


def test_own_lightweight_records_start_in_one_batch() -> None:
    """Records owned here that do not run (e.g. after their host died and the claim's start
    failed): lightweight ones in one StartOwnMany, actor ones one StartOwn each; the driver's
    own start is still waited for; busy and running ones are left alone."""
    records = [light_rec("l1", incarnation=2, state="starting"), light_rec("l0", incarnation=3),
               light_rec("busy", incarnation=2), light_rec("up"), rec("a1", incarnation=2),
               light_rec("new", state="starting", start_by=NOW + 5)]
    actions = plan(snap(records, {"up": 1}, busy=frozenset({"busy"})))
    assert actions == [StartOwn(records[4]), StartOwnMany((records[1], records[0]))]


def test_draining_moves_lightweight_children_one_by_one() -> None:
    records = [light_rec("l0"), light_rec("l1", incarnation=2)]
    actions = plan(snap(records, {"l0": 1}, members=[ME, "w1"], draining=True))
    assert kinds(actions) == [("Move", "l0"), ("Reassign", "l1")]


def test_lightweight_records_keep_their_kind_and_route_through_meta() -> None:
    record = light_rec("l0", epoch=7)
    meta = record.to_meta()
    assert meta["route"] == "call_child" and meta["route_key"] == "s/l0"
    assert ChildRecord.from_meta(meta, epoch=7) == record
    assert "route" not in rec("a0").to_meta()
    assert ChildRecord.from_meta(rec("a0", epoch=20).to_meta(), epoch=20).kind == "actor"


# --------------------------------------------------------------------------------- property
@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([ME, "w1", "w2", "w3"]), min_size=1, unique=True),
       st.lists(st.sampled_from(["dead", ME, "w1", "w2", "w3"]), max_size=25),
       st.sampled_from(["hash_ring", "least_loaded", "random"]))
def test_every_live_orphan_has_at_most_one_claimant(survivors: list[str], owners: list[str],
                                                    strategy: str) -> None:
    records = [rec(f"c{i}", owner=o, requirements=WEST if i % 3 == 0 else Requirements(),
                   kind="lightweight" if i % 2 else "actor") for i, o in enumerate(owners)]
    claimed: dict[str, int] = {}
    for node in survivors:
        for action in plan(snap(records, members=survivors, node_id=node, strategy=strategy)):
            batch = (action.records if isinstance(action, ClaimMany) else (action.record,)
                     if isinstance(action, (ClaimOrphan, ForgetOrphan)) else ())
            for record in batch:
                claimed[record.child_id] = claimed.get(record.child_id, 0) + 1
    orphans = {r.child_id: r for r in records if r.owner not in survivors}
    assert all(count == 1 for count in claimed.values())
    has_west = any(s.startswith("w") for s in survivors)
    assert set(claimed) == {c for c, r in orphans.items()
                            if has_west or not r.requirements.labels}


# ------------------------------------------------------------------------------------ exits
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget(max_restarts: int = 2, max_seconds: float = 5.0) -> tuple[RestartIntensity, Clock]:
    clock = Clock()
    return RestartIntensity(max_restarts, max_seconds, clock=clock), clock


def test_temporary_and_transient_normal_exits_are_forgotten() -> None:
    b, _ = budget()
    assert on_exit("c", "temporary", "error: boom", b, "give_up") == Forget("exited: error: boom")
    assert on_exit("c", "transient", "normal", b, "give_up") == Forget("exited: normal")
    assert on_exit("c", "transient", "shutdown:done", b, "give_up") == Forget(
        "exited: shutdown:done")
    assert b.recent() == 0  # none of them counts against the budget


def test_abnormal_and_permanent_exits_restart_within_the_budget() -> None:
    b, clock = budget(max_restarts=2, max_seconds=5.0)
    assert on_exit("c", "transient", "killed", b, "give_up") == Restart()
    assert on_exit("c", "permanent", "normal", b, "give_up") == Restart()
    exhausted = on_exit("c", "permanent", "error: boom", b, "give_up")
    assert isinstance(exhausted, Exhausted) and not exhausted.escalate
    assert "'c'" in exhausted.reason and "max_restarts=2 in max_seconds=5" in exhausted.reason
    assert exhausted.reason.endswith("last: error: boom")
    clock.now = 100.0  # the window has passed: the budget is whole again
    assert on_exit("c", "permanent", "error: boom", b, "give_up") == Restart()


def test_exhaustion_escalates_when_asked() -> None:
    b, _ = budget(max_restarts=0)
    decision = on_exit("crasher", "permanent", "killed", b, "escalate")
    assert isinstance(decision, Exhausted) and decision.escalate
    assert "crasher" in decision.reason and "max_restarts=0" in decision.reason


def test_failed_restarts_count_against_the_budget() -> None:
    b, _ = budget(max_restarts=1)
    assert on_start_failure("c", "no module named x", b, "give_up") == Restart()
    decision = on_start_failure("c", "no module named x", b, "escalate")
    assert isinstance(decision, Exhausted) and decision.escalate
    assert "start failed: no module named x" in decision.reason
