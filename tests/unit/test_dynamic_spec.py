"""DynamicSupervisorSpec validation, which nodes run members and own children (the head rule),
child spec checks, and the typed child record. No Ray."""

from __future__ import annotations

import pytest

from herd.platform.errors import ConfigError
from herd.platform.gcs import NodeInfo
from herd.supervisors.dynamic.child_record import SUP_META, ChildRecord, child_name
from herd.supervisors.dynamic.spec import DynamicSupervisorSpec, check_child_spec
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec
from herd.supervisors.strategies import Member, Requirements, member_of, requirements_of


class Worker:
    pass


def members(*ids: str) -> list[Member]:
    return [Member(id=i, resources={"CPU": 1.0}) for i in ids]


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


def node(node_id: str, region: str = "us-east", head: bool = False,
         alive: bool = True) -> NodeInfo:
    return NodeInfo(node_id, "127.0.0.1", alive, {"region": region}, {"CPU": 1.0}, head)


def ids(nodes: list[NodeInfo]) -> list[str]:
    return [n.node_id for n in nodes]


def test_auto_members_keep_children_off_the_head_while_a_worker_is_eligible() -> None:
    cluster = [node("h", head=True), node("w1", "us-west"), node("w2"), node("x", alive=False)]
    auto = DynamicSupervisorSpec(name="x")
    assert ids(auto.hosts(cluster)) == ["h", "w1", "w2"]  # a member everywhere, idle on h
    assert ids(auto.eligible(cluster)) == ["w1", "w2"]
    assert ids(auto.eligible(cluster[:1])) == ["h"]  # no worker: the head takes children
    assert ids(auto.eligible([cluster[0], node("w1", alive=False)])) == ["h"]
    draining = DynamicSupervisorSpec(name="x", draining=("w1",))
    assert ids(draining.eligible(cluster)) == ["w2"]
    assert ids(draining.eligible(cluster, include_draining=True)) == ["w1", "w2"]
    only = DynamicSupervisorSpec(name="x", draining=("w1",))
    assert ids(only.eligible(cluster[:2])) == ["h"]  # draining the only worker: the head
    assert ids(DynamicSupervisorSpec(name="x", members="all").eligible(cluster)) == [
        "h", "w1", "w2"]


def test_label_filters_admit_the_head_like_any_node() -> None:
    cluster = [node("h", head=True), node("w1", "us-west"), node("w2")]
    east = DynamicSupervisorSpec(name="x", members={"region": "us-east"})
    assert ids(east.hosts(cluster)) == ids(east.eligible(cluster)) == ["h", "w2"]
    either = DynamicSupervisorSpec(name="x", members=[{"region": "eu"}, {"region": "us-west"}])
    assert ids(either.eligible(cluster)) == ["w1"]
    with pytest.raises(ConfigError):
        DynamicSupervisorSpec.build(name="x", members="workers")


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
    member = member_of(node("n1", "us-west"), load=2)
    assert (member.id, member.region, member.load, member.resources["CPU"]) == (
        "n1", "us-west", 2, 1.0)


# ------------------------------------------------------------------------- child record
def test_child_record_round_trips_through_registry_meta() -> None:
    record = ChildRecord(sup="workers", child_id="c-1", owner="n1", restart="transient",
                         start_by=12.5, requirements=Requirements(labels={"region": "eu"},
                                                                  resources={"CPU": 0.5}))
    meta = record.to_meta()
    assert meta[SUP_META] == "workers" and meta["owner"] == "n1"
    assert "epoch" not in meta and "has_holder" not in meta
    assert record.name == child_name("workers", "c-1") == "workers/c-1"

    class Reg:
        key, epoch, entry_id, handle, holder_id = "workers/c-1", 7, 3, object(), "h1"

    Reg.meta = meta  # type: ignore[attr-defined]
    back = ChildRecord.from_registration(Reg())  # type: ignore[arg-type]
    assert back == ChildRecord(**{**record.__dict__, "epoch": 7, "entry_id": 3,
                                  "has_holder": True})
    Reg.handle = None  # read by a select without handles: the holder is still known
    assert ChildRecord.from_registration(Reg()).has_holder  # type: ignore[arg-type]
    Reg.holder_id = None  # type: ignore[assignment]
    assert not ChildRecord.from_registration(Reg()).has_holder  # type: ignore[arg-type]
    assert ChildRecord.is_record_of(Reg(), "workers")  # type: ignore[arg-type]
    assert not ChildRecord.is_record_of(Reg(), "other")  # type: ignore[arg-type]


def test_records_read_back_share_one_requirements_per_value() -> None:
    metas = [ChildRecord(sup="s", child_id=f"c{i}", owner="n",
                         requirements=Requirements(labels={"zone": "a"})).to_meta()
             for i in range(3)]
    read = [ChildRecord.from_meta(m) for m in metas]
    assert read[0].requirements is read[1].requirements is read[2].requirements
    assert read[0].requirements == Requirements(labels={"zone": "a"})
    plain = ChildRecord.from_meta(ChildRecord(sup="s", child_id="d", owner="n").to_meta())
    assert plain.requirements.is_empty
    good = {**metas[0], "requires": {"labels": {}, "resources": {"CPU": 1}}}
    assert ChildRecord.from_meta(good).requirements.resources == {"CPU": 1}
    for bad in ({"CPU": -1}, {"CPU": [1]}, {"CPU": True}):  # refused as before
        meta = {**metas[0], "requires": {"labels": {}, "resources": bad}}
        with pytest.raises(ConfigError):
            ChildRecord.from_meta(meta)


def test_child_record_claims_starts_and_moves() -> None:
    record = ChildRecord(sup="s", child_id="c", owner="dead", incarnation=2, restarts=1,
                         state="running", region="us-west", started_at=5.0, start_by=9.0)
    assert record.names("dead", 2) and not record.names("dead", 3)
    claimed = record.claimed("n2", "us-east", failover=True, restarted=False)
    assert (claimed.owner, claimed.incarnation, claimed.state, claimed.start_by) == (
        "n2", 3, "starting", None)
    assert (claimed.failovers, claimed.restarts, claimed.region) == (1, 1, "us-east")
    restarted = claimed.claimed("n2", "us-east", failover=False, restarted=True)
    assert (restarted.incarnation, restarted.failovers, restarted.restarts) == (4, 1, 2)
    started = claimed.started("us-east", 42.0)
    assert (started.state, started.started_at) == ("running", 42.0)
    moving = started.moving_to("n3")
    assert (moving.owner, moving.state, moving.incarnation) == ("n3", "moving", 3)
