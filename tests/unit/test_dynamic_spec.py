"""DynamicSupervisorSpec validation, child spec checks and the members' pure placement decisions
(``place`` for orphans and drains, ``move_targets`` for active redistribution). No Ray."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.errors import ConfigError
from herd.platform.membership import NodeInfo
from herd.supervisors.dynamic.spec import (
    DynamicSupervisorSpec,
    Placing,
    check_child_spec,
    member_of,
    move_targets,
    place,
    requirements_of,
)
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec
from herd.supervisors.strategies import Member, Requirements, make_strategy


class Worker:
    pass


def members(*ids: str, loads: dict[str, int] | None = None) -> list[Member]:
    return [Member(id=i, labels={"region": "us-west" if i.startswith("w") else "us-east"},
                   load=(loads or {}).get(i, 0), resources={"CPU": 1.0}) for i in ids]


def placing(*ids: str, **requirements: Requirements) -> dict[str, Placing]:
    return {i: Placing(n, requirements.get(i, Requirements())) for n, i in enumerate(ids, 1)}


# ------------------------------------------------------------------------------ config
def test_spec_defaults_and_validation() -> None:
    spec = DynamicSupervisorSpec.build(name="workers")
    assert (spec.members, spec.distribution, spec.redistribution) == ("auto", "hash_ring",
                                                                       "passive")
    assert (spec.max_restarts, spec.max_seconds, spec.on_exhausted) == (3, 5.0, "give_up")
    for bad in ({"name": "a/b"}, {"name": "x", "distribution": "nope"},
                {"name": "x", "redistribution": "eager"}, {"name": "x", "max_restarts": -1},
                {"name": "x", "max_seconds": 0}, {"name": "x", "on_exhausted": "panic"},
                {"name": "x", "distribution": "quorum"},  # needs members or size
                {"name": "x", "distribution": "hash_ring", "distribution_options": {"vnodes": 0}},
                {"name": "x", "bogus": 1}):
        with pytest.raises(ConfigError):
            DynamicSupervisorSpec.build(**bad)
    quorum = DynamicSupervisorSpec.build(name="q", distribution="quorum",
                                         distribution_options={"size": 3})
    assert quorum.strategy().has_quorum(members("a", "b"))
    assert not quorum.strategy().has_quorum(members("a"))


def test_admits_node() -> None:
    west, east = {"region": "us-west", "zone": "a"}, {"region": "us-east"}
    assert DynamicSupervisorSpec(name="x").admits_node(east)
    only_west = DynamicSupervisorSpec(name="x", members={"region": "us-west"})
    assert only_west.admits_node(west) and not only_west.admits_node(east)
    either = DynamicSupervisorSpec(name="x", members=[{"zone": "a"}, {"region": "us-east"}])
    assert either.admits_node(west) and either.admits_node(east)
    assert not either.admits_node({"region": "eu"})


def test_requirements_and_child_checks() -> None:
    child = ChildSpec(id="c", actor=Worker, options={"num_cpus": 0.5, "memory": 100,
                                                     "resources": {"db": 1},
                                                     "label_selector": {"region": "us-west"}})
    req = requirements_of(child)
    assert req.labels == {"region": "us-west"}
    assert req.resources == {"db": 1, "CPU": 0.5, "memory": 100.0}
    with pytest.raises(ConfigError, match="exact label"):
        requirements_of(ChildSpec(id="c", actor=Worker,
                                  options={"label_selector": {"region": "!us-west"}}))
    assert check_child_spec({"id": "d", "actor": Worker}).id == "d"
    with pytest.raises(ConfigError):
        check_child_spec(ChildSpec(id="s", supervisor=SupervisorSpec()))
    with pytest.raises(ConfigError):
        check_child_spec(ChildSpec(id="t", actor=Worker, restart="transient", significant=True))


def test_member_of_node() -> None:
    node = NodeInfo("n1", "127.0.0.1", True, {"region": "us-west"}, {"CPU": 1.0})
    member = member_of(node, load=2)
    assert (member.id, member.region, member.load, member.resources["CPU"]) == (
        "n1", "us-west", 2, 1.0)


# ------------------------------------------------------------------------- placement
def test_place_skips_children_no_member_admits() -> None:
    west = Requirements(labels={"region": "us-west"})
    gpu = Requirements(resources={"GPU": 1})
    owners = place(make_strategy("hash_ring"), placing("a", "b", "c", b=west, c=gpu),
                   members("e1", "w1"))
    assert set(owners) == {"a", "b"} and owners["b"] == "w1"


def test_place_least_loaded_spreads_a_batch() -> None:
    owners = place(make_strategy("least_loaded"), placing("a", "b", "c", "d"),
                   members("e1", "w1", loads={"e1": 1}))
    chosen = list(owners.values())
    assert owners["a"] == "w1"  # the emptier member first
    assert abs((1 + chosen.count("e1")) - chosen.count("w1")) <= 1  # then evenly


def test_place_random_agrees_across_members_and_epochs_reroll() -> None:
    orphans = placing(*(f"c{i}" for i in range(40)))
    first = place(make_strategy("random"), orphans, members("e1", "w1", "w2"))
    again = place(make_strategy("random"), orphans, members("w2", "e1", "w1"))
    assert first == again  # survivors computing independently agree on every owner
    assert set(first.values()) == {"e1", "w1", "w2"}
    later = {k: Placing(v.epoch + 100, v.requirements) for k, v in orphans.items()}
    assert place(make_strategy("random"), later, members("e1", "w1", "w2")) != first


def test_place_quorum_without_majority_places_nothing() -> None:
    quorum = make_strategy("quorum", size=3)
    assert place(quorum, placing("a", "b"), members("e1")) == {}
    assert set(place(quorum, placing("a", "b"), members("e1", "w1")).values()) <= {"e1", "w1"}


def test_move_targets_passive_and_random_never_move() -> None:
    own = placing("a", "b", "c")
    for name in ("hash_ring", "least_loaded", "random"):
        assert move_targets(make_strategy(name), "e1", own, members("e1", "w1"),
                            redistribution="passive", draining=False) == {}
    assert move_targets(make_strategy("random"), "e1", own, members("e1", "w1"),
                        redistribution="active", draining=False) == {}


def test_move_targets_hash_ring_active_matches_the_ring() -> None:
    strategy = make_strategy("hash_ring")
    ids = [f"c{i}" for i in range(30)]
    targets = move_targets(strategy, "e1", placing(*ids), members("e1", "w1"),
                           redistribution="active", draining=False)
    expected = {i: "w1" for i in ids if strategy.choose(i, members("e1", "w1")).id == "w1"}
    assert targets == expected and 0 < len(targets) < len(ids)


def test_move_targets_least_loaded_evens_without_thrashing() -> None:
    strategy = make_strategy("least_loaded")
    own = placing("a", "b", "c", "d")
    targets = move_targets(strategy, "e1", own, members("e1", "w1", loads={"e1": 4}),
                           redistribution="active", draining=False)
    assert list(targets.values()) == ["w1", "w1"]  # 4/0 -> 2/2
    assert move_targets(strategy, "e1", placing("a", "b"), members("e1", "w1", loads={
        "e1": 2, "w1": 1}), redistribution="active", draining=False) == {}  # 2/1: stays


def test_move_targets_drain_moves_everything_to_others() -> None:
    own = placing("a", "b", "c", c=Requirements(labels={"region": "mars"}))
    targets = move_targets(make_strategy("hash_ring"), "e1", own, members("w1", "w2"),
                           redistribution="passive", draining=True)
    assert set(targets) == {"a", "b"} and set(targets.values()) <= {"w1", "w2"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["e1", "w1", "w2", "w3"]), min_size=1, unique=True),
       st.lists(st.text("abcdef", min_size=1, max_size=6), unique=True, max_size=30),
       st.sampled_from(["hash_ring", "least_loaded", "random"]))
def test_place_owners_are_admitted_members(member_ids: list[str], child_ids: list[str],
                                           name: str) -> None:
    west = Requirements(labels={"region": "us-west"})
    children = {c: Placing(i, west if i % 2 else Requirements())
                for i, c in enumerate(child_ids)}
    live = members(*member_ids)
    owners = place(make_strategy(name), children, live)
    by_id = {m.id: m for m in live}
    for child_id, owner in owners.items():
        assert children[child_id].requirements.admits(by_id[owner])
    has_west = any(m.startswith("w") for m in member_ids)
    assert set(owners) == {c for c, p in children.items()
                           if has_west or not p.requirements.labels}
