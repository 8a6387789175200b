"""Unit and property tests of the distribution strategies (no Ray)."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herd.platform.errors import ConfigError, HerdError, NoQuorum
from herd.supervisors.errors import PlacementError
from herd.supervisors.strategies import (
    DEFAULT_VNODES,
    DistributionStrategy,
    HashRing,
    HashRingStrategy,
    LeastLoadedStrategy,
    Member,
    Placing,
    QuorumStrategy,
    RandomStrategy,
    Requirements,
    available_strategies,
    make_strategy,
    move_targets,
    place,
    stable_hash,
)

CHILDREN = [f"child-{i}" for i in range(2000)]
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

member_ids = st.text(alphabet="0123456789abcdef", min_size=4, max_size=12)
regions = st.sampled_from(["us-east", "us-west", "eu"])


@st.composite
def members_st(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[Member]:
    ids = draw(st.lists(member_ids, min_size=min_size, max_size=max_size, unique=True))
    return [Member(id=i, labels={"region": draw(regions), "zone": draw(st.sampled_from("ab"))},
                   load=draw(st.integers(0, 5)),
                   resources={"CPU": float(draw(st.integers(0, 4)))})
            for i in ids]


requirements_st = st.builds(
    Requirements,
    labels=st.dictionaries(st.sampled_from(["region", "zone"]), st.sampled_from(
        ["us-east", "us-west", "eu", "a", "b"]), max_size=2),
    resources=st.dictionaries(st.just("CPU"), st.integers(0, 4).map(float), max_size=1),
)

ALL_STRATEGIES: list[DistributionStrategy] = [
    HashRingStrategy(), RandomStrategy(seed=1), LeastLoadedStrategy(), QuorumStrategy(size=1),
]


def ms(*ids: str, **kw: object) -> list[Member]:
    return [Member(id=i, **kw) for i in ids]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- base types

def test_member_and_requirements_basics() -> None:
    labels = {"region": "us-east", "zone": "a"}
    m = Member("n1", labels=labels, load=2, resources={"CPU": 4.0, "GPU": 1.0})
    labels["region"] = "changed"  # the member keeps its own copy
    assert m.region == "us-east" and m.zone == "a"
    assert hash(m) == hash(Member("n1", {"region": "us-east", "zone": "a"}, 2,
                                  {"CPU": 4.0, "GPU": 1.0}))
    assert Member("x").labels == {} and Member("x").resources == {}
    assert Requirements().admits(m) and Requirements().is_empty
    assert Requirements(labels={"region": "us-east"}).admits(m)
    assert not Requirements(labels={"region": "eu"}).admits(m)
    assert not Requirements(labels={"rack": "r1"}).admits(m)
    assert Requirements(resources={"CPU": 4}).admits(m)
    assert not Requirements(resources={"CPU": 4.5}).admits(m)
    assert not Requirements(resources={"TPU": 1}).admits(m)
    assert Requirements(resources={"TPU": 0}).admits(m)
    assert Requirements(labels={"region": "eu"}, resources={"CPU": 8}).unmet(m) == [
        "label region='us-east' != 'eu'", "resource CPU=4.0 < 8"]
    assert hash(Requirements({"a": "b"})) == hash(Requirements({"a": "b"}))
    assert pickle.loads(pickle.dumps(m)) == m


@pytest.mark.parametrize("bad", [{"id": ""}, {"id": 3}, {"id": "n", "load": -1},
                                 {"id": "n", "load": True}])
def test_member_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        Member(**bad)


def test_requirements_validation() -> None:
    with pytest.raises(ConfigError, match="resources.CPU"):
        Requirements(resources={"CPU": -1})


def test_stable_hash_is_process_independent() -> None:
    code = ("from herd.supervisors.strategies import stable_hash;"
            "print(stable_hash('child-42'))")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONHASHSEED": seed}, check=True).stdout.strip()
           for seed in ("1", "2")}
    assert out == {str(stable_hash("child-42"))}


# ------------------------------------------------------------------------------ make_strategy

def test_make_strategy_names_and_options() -> None:
    assert available_strategies() == ["hash_ring", "least_loaded", "quorum", "random"]
    assert isinstance(make_strategy("hash_ring"), HashRingStrategy)
    assert make_strategy("hash_ring", vnodes=16).vnodes == 16
    assert isinstance(make_strategy("random", seed=3), RandomStrategy)
    assert isinstance(make_strategy("least_loaded"), LeastLoadedStrategy)
    assert make_strategy("quorum", members=["a", "b", "c"]).majority == 2
    inst = LeastLoadedStrategy()
    assert make_strategy(inst) is inst


def test_make_strategy_unknown_name() -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("round_robin")
    msg = str(info.value)
    assert "round_robin" in msg
    for name in ("hash_ring", "random", "least_loaded", "quorum"):
        assert name in msg
    assert info.value.value == "round_robin" and isinstance(info.value, HerdError)


@pytest.mark.parametrize("name, options", [
    ("hash_ring", {"vnodes": 0}), ("hash_ring", {"bogus": 1}), ("least_loaded", {"x": 1}),
    ("quorum", {}), ("quorum", {"members": ["a"], "size": 1}), ("quorum", {"size": 0}),
    ("quorum", {"members": []}), ("quorum", {"members": "abc"}),
    ("quorum", {"members": ["a", "a"]}), ("random", {"seed": 1, "rng": random.Random(1)}),
])
def test_make_strategy_bad_options(name: str, options: dict) -> None:
    with pytest.raises(ConfigError):
        make_strategy(name, **options)


# --------------------------------------------------------------------------------- placement

@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=lambda s: s.name)
def test_placement_error_names_child_requirements_members(strategy: DistributionStrategy
                                                          ) -> None:
    members = [Member("n1", {"region": "us-west"}, resources={"CPU": 2}),
               Member("n2", {"region": "eu"}, resources={"CPU": 8})]
    req = Requirements(labels={"region": "us-east"}, resources={"CPU": 4})
    with pytest.raises(PlacementError) as info:
        strategy.choose("worker-7", members, req)
    msg = str(info.value)
    assert "worker-7" in msg and "us-east" in msg and "CPU" in msg
    assert "n1" in msg and "n2" in msg
    assert info.value.child_id == "worker-7"  # type: ignore[attr-defined]
    assert info.value.requirements == req  # type: ignore[attr-defined]
    assert info.value.members == ["n1", "n2"]  # type: ignore[attr-defined]
    expected = NoQuorum if isinstance(strategy, QuorumStrategy) else PlacementError
    match = "no members" if expected is PlacementError else "not a majority"
    with pytest.raises(expected, match=match):
        strategy.choose("worker-7", [])


def test_placement_error_elides_long_member_lists() -> None:
    members = ms(*(f"n{i:02d}" for i in range(30)))
    with pytest.raises(PlacementError, match="and 20 more"):
        HashRingStrategy().choose("c", members, Requirements(labels={"region": "x"}))


@given(members=members_st(), req=requirements_st, child=st.text(max_size=20))
@FAST
def test_chosen_member_satisfies_requirements(members: list[Member], req: Requirements,
                                              child: str) -> None:
    for strategy in ALL_STRATEGIES:
        if any(req.admits(m) for m in members):
            chosen = strategy.choose(child, members, req)
            assert chosen in members and req.admits(chosen)
        else:
            with pytest.raises(PlacementError):
                strategy.choose(child, members, req)


def test_owners_with_mapping_and_callable() -> None:
    members = [Member("a", {"region": "us-east"}), Member("b", {"region": "eu"})]
    east = Requirements(labels={"region": "us-east"})
    s = HashRingStrategy()
    assert s.owners(["x", "y"], members, {"x": east}) == {"x": "a", "y": s.choose("y", members).id}
    assert set(s.owners(CHILDREN[:50], members, lambda c: east).values()) == {"a"}
    with pytest.raises(ConfigError):
        s.owners(["x"], members, 42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- hash ring

def test_hash_ring_basics() -> None:
    s = HashRingStrategy()
    assert s.vnodes == DEFAULT_VNODES == 128
    members = ms("a", "b", "c")
    assert len(s.ring(["a", "b", "c"])) == 3 * 128
    assert s.ring(["c", "b", "a"]) is s.ring(["a", "b", "c"])  # cached by member-id set
    counts = Counter(s.owners(CHILDREN, members).values())
    assert set(counts) == {"a", "b", "c"}
    assert all(400 < n < 950 for n in counts.values()), counts
    assert s.choose("only", ms("solo")).id == "solo"
    with pytest.raises(ValueError):
        HashRing([])
    clone = pickle.loads(pickle.dumps(s))
    assert clone._rings == {} and clone.vnodes == 128
    assert clone.owners(CHILDREN[:100], members) == s.owners(CHILDREN[:100], members)


def test_hash_ring_ignores_load_and_duplicates() -> None:
    s = HashRingStrategy()
    a = [Member("a", load=0), Member("b", load=0)]
    b = [Member("b", load=99), Member("a", load=7), Member("a", load=1)]
    assert {c: m.id for c, m in ((c, s.choose(c, a)) for c in CHILDREN[:200])} == \
        {c: s.choose(c, b).id for c in CHILDREN[:200]}


@given(members=members_st(), children=st.lists(st.text(max_size=16), max_size=30),
       vnodes=st.integers(1, 64), data=st.data())
@FAST
def test_hash_ring_deterministic(members: list[Member], children: list[str], vnodes: int,
                                 data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(members))
    one, two = HashRingStrategy(vnodes), HashRingStrategy(vnodes)
    expected = one.owners(children, members)
    assert two.owners(children, shuffled) == expected
    assert pickle.loads(pickle.dumps(one)).owners(children, shuffled) == expected
    assert make_strategy("hash_ring", vnodes=vnodes).owners(children, members) == expected


@given(ids=st.lists(member_ids, min_size=2, max_size=11, unique=True),
       salt=st.integers(0, 10**6))
@FAST
def test_hash_ring_join_moves_about_one_over_n_to_newcomer(ids: list[str], salt: int) -> None:
    s = HashRingStrategy()
    old, new = ms(*ids[:-1]), ms(*ids)
    children = [f"{salt}-{c}" for c in CHILDREN]
    before, after = s.owners(children, old), s.owners(children, new)
    moved = [c for c in children if before[c] != after[c]]
    assert all(after[c] == ids[-1] for c in moved)  # every moved child moves TO the new member
    expected = len(children) / len(ids)
    assert 0.5 * expected <= len(moved) <= 1.6 * expected, (len(moved), expected)


@given(ids=st.lists(member_ids, min_size=2, max_size=10, unique=True), data=st.data())
@FAST
def test_hash_ring_leave_moves_only_the_leavers_children(ids: list[str],
                                                         data: st.DataObject) -> None:
    s = HashRingStrategy()
    leaver = data.draw(st.sampled_from(ids))
    before = s.owners(CHILDREN, ms(*ids))
    after = s.owners(CHILDREN, ms(*(i for i in ids if i != leaver)))
    for c in CHILDREN:
        if before[c] == leaver:
            assert after[c] != leaver
        else:
            assert after[c] == before[c]


# ------------------------------------------------------------------------------------ random

def test_random_seeded_and_uniform() -> None:
    members = ms("a", "b", "c", "d")
    picks = [RandomStrategy(seed=7).choose("x", members).id for _ in range(3)]
    assert len(set(picks)) == 1
    s1, s2 = RandomStrategy(seed=11), RandomStrategy(rng=random.Random(11))
    assert [s1.choose("x", members).id for _ in range(50)] == \
        [s2.choose("x", list(reversed(members))).id for _ in range(50)]
    s3 = RandomStrategy(seed=3)
    counts = Counter(s3.choose("x", members).id for _ in range(4000))
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(850 < n < 1150 for n in counts.values()), counts
    req = Requirements(labels={"region": "eu"})
    labelled = [Member("a", {"region": "eu"}), Member("b", {"region": "us"})]
    assert {RandomStrategy(seed=1).choose(str(i), labelled, req).id for i in range(50)} == {"a"}


# ------------------------------------------------------------------------------ least loaded

def test_least_loaded_basics() -> None:
    s = LeastLoadedStrategy()
    members = [Member("c", load=1), Member("b", load=3), Member("a", load=1)]
    assert s.choose("x", members).id == "a"  # tie at load 1 -> smallest id
    assert s.choose("x", [Member("b", {"r": "1"}, load=5), Member("a", load=0)],
                    Requirements(labels={"r": "1"})).id == "b"
    # owners() counts its own assignments so a batch spreads evenly.
    batch = s.owners([f"k{i}" for i in range(6)], members)
    counts = Counter(batch.values())
    assert counts == {"a": 3, "c": 2, "b": 1}  # final loads: a=4, b=4, c=3


@given(members=members_st(max_size=10), child=st.text(max_size=8))
@FAST
def test_least_loaded_picks_min_load_then_min_id(members: list[Member], child: str) -> None:
    chosen = LeastLoadedStrategy().choose(child, members)
    lowest = min(m.load for m in members)
    assert chosen.load == lowest
    assert chosen.id == min(m.id for m in members if m.load == lowest)


# ------------------------------------------------------------------------------------ quorum

def test_quorum_static_members() -> None:
    q = QuorumStrategy(members=["a", "b", "c", "d", "e"])
    assert q.majority == 3 and q.size == 5
    assert q.has_quorum(ms("a", "b", "c"))
    assert not q.has_quorum(ms("a", "b"))
    assert not q.has_quorum(ms("a", "b", "x", "y", "z"))  # strangers do not count
    assert not q.has_quorum(ms("a", "b") + ms("a", "b"))  # duplicates count once
    assert q.should_stop_local_children(ms("a", "b"))
    assert not q.should_stop_local_children(ms("a", "b", "c"))
    with pytest.raises(NoQuorum) as info:
        q.choose("c1", ms("a", "b"))
    assert "a" in str(info.value) and isinstance(info.value, HerdError)
    with pytest.raises(NoQuorum):
        q.owners(["c1"], ms("d", "e", "zz"))
    live = ms("a", "b", "c", "x")
    ring = HashRingStrategy()
    for c in CHILDREN[:300]:
        assert q.choose(c, live).id == ring.choose(c, ms("a", "b", "c")).id  # never "x"
    even = QuorumStrategy(members=["a", "b", "c", "d"])
    assert not even.has_quorum(ms("a", "b")) and even.has_quorum(ms("a", "b", "c"))


def test_quorum_size_based_and_placement_error() -> None:
    q = QuorumStrategy(size=3)
    assert not q.has_quorum(ms("a")) and q.has_quorum(ms("a", "b"))
    assert q.choose("c", ms("a", "b")).id in {"a", "b"}
    with pytest.raises(PlacementError):
        q.choose("c", ms("a", "b"), Requirements(labels={"region": "eu"}))
    assert not HashRingStrategy().should_stop_local_children([])
    assert QuorumStrategy(members=["a"], vnodes=8).vnodes == 8
    assert "size=3" in repr(q) and "members=['a']" in repr(QuorumStrategy(members=["a"]))


@given(static=st.lists(member_ids, min_size=1, max_size=9, unique=True), data=st.data())
@settings(max_examples=150, deadline=None)
def test_quorum_never_on_both_sides_of_a_split(static: list[str], data: st.DataObject) -> None:
    q_static = QuorumStrategy(members=static)
    q_size = QuorumStrategy(size=len(static))
    side = data.draw(st.lists(st.booleans(), min_size=len(static), max_size=len(static)))
    keep = data.draw(st.lists(st.booleans(), min_size=len(static), max_size=len(static)))
    strangers = data.draw(st.lists(st.text("xyz", min_size=1), max_size=3))
    # A partition into two disjoint live sets (some static members may be dead on both sides).
    left = ms(*(m for m, s, k in zip(static, side, keep, strict=False) if s and k))
    right = ms(*(m for m, s, k in zip(static, side, keep, strict=False) if not s and k))
    assert not (q_static.has_quorum(left + ms(*strangers)) and
                q_static.has_quorum(right + ms(*strangers)))
    assert not (q_size.has_quorum(left) and q_size.has_quorum(right))
    # Quorum is measured against the static list, never the live list.
    assert q_static.has_quorum(left) == (2 * len(left) > len(static))


def test_random_module_not_shadowed() -> None:
    import herd.supervisors.strategies.random_choice as rc

    assert rc.random is random and hasattr(random, "Random")


def nodes_as_members(*ids: str, loads: dict[str, int] | None = None) -> list[Member]:
    return [Member(id=i, labels={"region": "us-west" if i.startswith("w") else "us-east"},
                   load=(loads or {}).get(i, 0), resources={"CPU": 1.0}) for i in ids]


def placing(*ids: str, **requirements: Requirements) -> dict[str, Placing]:
    return {i: Placing(n, requirements.get(i, Requirements())) for n, i in enumerate(ids, 1)}


# ----------------------------------------------------------- placement (strategies.placement)
def test_place_skips_children_no_member_admits() -> None:
    west = Requirements(labels={"region": "us-west"})
    gpu = Requirements(resources={"GPU": 1})
    owners = place(make_strategy("hash_ring"), placing("a", "b", "c", b=west, c=gpu),
                   nodes_as_members("e1", "w1"))
    assert set(owners) == {"a", "b"} and owners["b"] == "w1"


def test_place_least_loaded_spreads_a_batch() -> None:
    owners = place(make_strategy("least_loaded"), placing("a", "b", "c", "d"),
                   nodes_as_members("e1", "w1", loads={"e1": 1}))
    chosen = list(owners.values())
    assert owners["a"] == "w1"  # the emptier member first
    assert abs((1 + chosen.count("e1")) - chosen.count("w1")) <= 1  # then evenly


def test_place_random_agrees_across_members_and_epochs_reroll() -> None:
    orphans = placing(*(f"c{i}" for i in range(40)))
    first = place(make_strategy("random"), orphans, nodes_as_members("e1", "w1", "w2"))
    again = place(make_strategy("random"), orphans, nodes_as_members("w2", "e1", "w1"))
    assert first == again  # survivors computing independently agree on every owner
    assert set(first.values()) == {"e1", "w1", "w2"}
    later = {k: Placing(v.epoch + 100, v.requirements) for k, v in orphans.items()}
    assert place(make_strategy("random"), later, nodes_as_members("e1", "w1", "w2")) != first


def test_place_quorum_without_majority_places_nothing() -> None:
    quorum = make_strategy("quorum", size=3)
    assert place(quorum, placing("a", "b"), nodes_as_members("e1")) == {}
    owners = place(quorum, placing("a", "b"), nodes_as_members("e1", "w1"))
    assert set(owners.values()) <= {"e1", "w1"}


def test_move_targets_passive_and_random_never_move() -> None:
    own = placing("a", "b", "c")
    for name in ("hash_ring", "least_loaded", "random"):
        assert move_targets(make_strategy(name), "e1", own, nodes_as_members("e1", "w1"),
                            redistribution="passive", draining=False) == {}
    assert move_targets(make_strategy("random"), "e1", own, nodes_as_members("e1", "w1"),
                        redistribution="active", draining=False) == {}


def test_move_targets_hash_ring_active_matches_the_ring() -> None:
    strategy = make_strategy("hash_ring")
    ids = [f"c{i}" for i in range(30)]
    targets = move_targets(strategy, "e1", placing(*ids), nodes_as_members("e1", "w1"),
                           redistribution="active", draining=False)
    live = nodes_as_members("e1", "w1")
    expected = {i: "w1" for i in ids if strategy.choose(i, live).id == "w1"}
    assert targets == expected and 0 < len(targets) < len(ids)


def test_move_targets_least_loaded_evens_without_thrashing() -> None:
    strategy = make_strategy("least_loaded")
    own = placing("a", "b", "c", "d")
    targets = move_targets(strategy, "e1", own, nodes_as_members("e1", "w1", loads={"e1": 4}),
                           redistribution="active", draining=False)
    assert list(targets.values()) == ["w1", "w1"]  # 4/0 -> 2/2
    assert move_targets(strategy, "e1", placing("a", "b"), nodes_as_members("e1", "w1", loads={
        "e1": 2, "w1": 1}), redistribution="active", draining=False) == {}  # 2/1: stays


def test_move_targets_drain_moves_everything_to_others() -> None:
    own = placing("a", "b", "c", c=Requirements(labels={"region": "mars"}))
    targets = move_targets(make_strategy("hash_ring"), "e1", own, nodes_as_members("w1", "w2"),
                           redistribution="passive", draining=True)
    assert set(targets) == {"a", "b"} and set(targets.values()) <= {"w1", "w2"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["e1", "w1", "w2", "w3"]), min_size=1, unique=True),
       st.lists(st.text("abcdef", min_size=1, max_size=6), unique=True, max_size=30),
       st.sampled_from(["hash_ring", "least_loaded", "random"]))
def test_place_owners_are_admitted_nodes_as_members(member_ids: list[str], child_ids: list[str],
                                           name: str) -> None:
    west = Requirements(labels={"region": "us-west"})
    children = {c: Placing(i, west if i % 2 else Requirements())
                for i, c in enumerate(child_ids)}
    live = nodes_as_members(*member_ids)
    owners = place(make_strategy(name), children, live)
    by_id = {m.id: m for m in live}
    for child_id, owner in owners.items():
        assert children[child_id].requirements.admits(by_id[owner])
    has_west = any(m.startswith("w") for m in member_ids)
    assert set(owners) == {c for c, p in children.items()
                           if has_west or not p.requirements.labels}
