"""``standby="auto"``: what a node would take over if another died, and shells per shape."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.strategies import Member, make_strategy
from herd.supervisors.strategies.placement import Placing, place
from herd.supervisors.warm.sizing import standby_needed, takeovers

MEMBERS = [Member(id=f"n{i}") for i in range(3)]


def records(owners: list[str]) -> list[ChildRecord]:
    return [ChildRecord(sup="s", child_id=f"c{i}", owner=owner, state="running")
            for i, owner in enumerate(owners)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["n0", "n1", "n2"]), min_size=1, max_size=30),
       st.sampled_from(["hash_ring", "least_loaded"]))
def test_takeovers_are_what_the_planner_would_hand_over(owners: list[str], name: str) -> None:
    strategy = make_strategy(name)
    every = records(owners)
    sets = takeovers("n0", strategy, every, MEMBERS)
    expected = []
    for dead in ("n1", "n2"):
        orphans = {r.child_id: Placing(r.epoch, r.requirements) for r in every
                   if r.owner == dead}
        if orphans:
            owners_after = place(strategy, orphans, [m for m in MEMBERS if m.id != dead])
            expected.append(frozenset(c for c, o in owners_after.items() if o == "n0"))
    assert sets == expected
    assert all(r.owner != "n0" for taken in sets for r in every if r.child_id in taken)


def test_lightweight_children_need_no_shell() -> None:
    light = [ChildRecord(sup="s", child_id="l", owner="n1", kind="lightweight")]
    assert takeovers("n0", make_strategy("hash_ring"), light, MEMBERS) == []


def test_standby_is_the_largest_takeover_at_least_one_for_own_at_most_cap() -> None:
    shapes = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C"}
    needed = standby_needed(shapes, own={"c1", "x"}, cap=2,
                            takeover_sets=[{"a1", "a2", "a3"}, {"a1", "b1"}])
    assert needed == {"A": 2, "B": 1, "C": 1}
    assert standby_needed(shapes, own=(), takeover_sets=[], cap=4) == {}
    assert standby_needed(shapes, own={"a1", "a2"}, takeover_sets=[{"b1"}], cap=4) == {
        "A": 1, "B": 1}
