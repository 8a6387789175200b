"""The leader's plan for keeping a group whole (pure): restart dead processes on live nodes,
remove a dead node's voter, add a learner on a free node (another region first), promote a
caught-up learner; one membership change per round."""

from __future__ import annotations

import pytest

from herd.consensus.errors import MachineInvalid
from herd.consensus.planner import Action, MemberView, plan
from herd.consensus.spec import GroupOptions
from herd.platform.errors import ConfigError


def view(member: str, node: str, voter: bool = True, node_alive: bool = True,
         process_alive: bool = True, match: int = 100) -> MemberView:
    return MemberView(member, node, voter, node_alive, process_alive, match)


def test_a_whole_group_needs_nothing() -> None:
    members = [view("m1", "a"), view("m2", "b"), view("m3", "c")]
    assert plan(members, "m1", 100, 3, ["d"], "m4", 10) == []


def test_a_dead_process_on_a_live_node_is_restarted_there() -> None:
    members = [view("m1", "a"), view("m2", "b", process_alive=False), view("m3", "c")]
    assert plan(members, "m1", 100, 3, [], "m4", 10) == [Action("restart", "m2", "b")]


def test_a_dead_nodes_voter_is_removed_then_a_learner_added_then_promoted() -> None:
    members = [view("m1", "a"), view("m2", "b", node_alive=False, process_alive=False),
               view("m3", "c")]
    assert plan(members, "m1", 100, 3, ["d"], "m4", 10) == [Action("remove", "m2")]
    shrunk = [members[0], members[2]]
    assert plan(shrunk, "m1", 100, 3, ["d"], "m4", 10) == [Action("add_learner", "m4", "d")]
    behind = [*shrunk, view("m4", "d", voter=False, match=20)]
    assert plan(behind, "m1", 100, 3, [], "m5", 10) == []
    caught_up = [*shrunk, view("m4", "d", voter=False, match=95)]
    assert plan(caught_up, "m1", 100, 3, [], "m5", 10) == [Action("promote", "m4")]


def test_a_new_learner_goes_to_a_region_the_group_lacks() -> None:
    members = [view("m1", "a"), view("m2", "b")]
    regions = {"a": "east", "b": "east", "c": "east", "d": "west"}
    assert plan(members, "m1", 100, 3, ["c", "d"], "m3", 10, regions) == [
        Action("add_learner", "m3", "d")]


def test_no_free_node_leaves_the_group_smaller() -> None:
    members = [view("m1", "a"), view("m3", "c")]
    assert plan(members, "m1", 100, 3, [], "m4", 10) == []


def test_group_options_refuse_even_sizes_and_bad_names() -> None:
    with pytest.raises(ValueError, match="odd"):
        GroupOptions(name="g", replicas=4)
    with pytest.raises(ValueError, match="letters"):
        GroupOptions(name="bad name")
    assert GroupOptions(name="g").raft_config("m1").election_ticks == 6
    assert issubclass(MachineInvalid, ConfigError)
