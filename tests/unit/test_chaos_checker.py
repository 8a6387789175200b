"""The chaos checker, schedule and CLI input checks, without Ray: synthetic histories that break
each guarantee are caught (and a clean one passes), a seed always gives the same plan, and bad
flags of ``herd chaos`` fail with one line before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from herd.chaos.checker import check
from herd.chaos.config import ChaosConfig, parse_duration, parse_faults
from herd.chaos.history import History
from herd.chaos.ledger import LedgerLog, Start, Write, append, read
from herd.chaos.schedule import plan_faults
from herd.chaos.summary import percentile, summarize
from herd.cli import chaos as chaos_cli
from herd.cli.main import main
from herd.platform.errors import ConfigError

BOUND_S = 30.0


# ------------------------------------------------------------------------------ builders
def client(history: History, f: str, value: dict[str, Any], outcome: str = "ok",
           result: dict[str, Any] | None = None) -> None:
    op = history.invoke("client", f, value)
    getattr(op, outcome)(result if result is not None else value)


def fault(history: History, index: int, kind: str = "kill", seconds: float | None = 2.0,
          recovered: bool = True, zombies: list[int] | None = None) -> None:
    history.invoke("nemesis", kind, {"fault": index}).ok({"fault": index, "node": "worker-1"})
    if seconds is None:
        return
    recover = history.invoke("nemesis", "recover", {"fault": index, "kind": kind})
    value = {"fault": index, "kind": kind, "seconds": seconds, "zombies": zombies or []}
    if recovered:
        recover.ok(value)
    else:
        recover.fail({**value, "missing": ["a-0"]})


def running(pid: int) -> dict[str, Any]:
    return {"alive_pids": [pid], "registered": True, "answers": True}


def clean_history() -> tuple[History, LedgerLog]:
    """Two children started (one terminated), a name registered, a kill that recovered; the
    first child failed over once (epoch 3 -> 7), one stale write in flight is allowed."""
    history = History()
    client(history, "start_child", {"child": "a-0"})
    client(history, "start_child", {"child": "c-1"})
    client(history, "register", {"name": "n-1"})
    client(history, "register", {"name": "n-2"})
    client(history, "unregister", {"name": "n-2"})
    client(history, "register", {"name": "n-3"}, "info")  # unknown: either way is fine
    fault(history, 0)
    client(history, "terminate_child", {"child": "c-1"})
    history.record("observer", "final", {
        "children": {"a-0": running(200), "c-1": {"alive_pids": [], "registered": False}},
        "names": {"n-1": True}, "gcs_alive": 1})
    history.record("observer", "teardown", {"leftover_pids": []})
    ledger = LedgerLog(
        starts=[Start("a-0", 100, 1, "n1", 0), Start("a-0", 200, 2, "n2", 5),
                Start("c-1", 300, 3, "n1", 1)],
        writes=[Write("a-0", 3, 100, 1), Write("a-0", 3, 100, 2), Write("a-0", 7, 200, 6),
                Write("a-0", 3, 100, 7), Write("a-0", 7, 200, 8), Write("c-1", 4, 300, 3)])
    return history, ledger


def rules(history: History, ledger: LedgerLog) -> list[str]:
    return [v.rule for v in check(history, ledger, BOUND_S)]


def with_final(history: History, **changes: Any) -> History:
    """``history`` with its final observation changed."""
    final = dict(history.last("final").value)
    final.update(changes)
    events = [e for e in history.events if e.f not in ("final", "teardown")]
    changed = History(events)
    changed.record("observer", "final", final)
    changed.record("observer", "teardown", history.last("teardown").value)
    return changed


# ------------------------------------------------------------------------------- checker
def test_clean_history_passes() -> None:
    history, ledger = clean_history()
    assert check(history, ledger, BOUND_S) == []


def test_two_holders_with_one_epoch_are_caught() -> None:
    history, ledger = clean_history()
    ledger.writes.append(Write("a-0", 7, 100, 9))
    violations = check(history, ledger, BOUND_S)
    assert [v.rule for v in violations] == ["fencing"]
    assert "processes 200 and 100 both wrote as holder with epoch 7" in str(violations[0])


def test_a_superseded_holder_that_keeps_writing_is_caught() -> None:
    history, ledger = clean_history()
    ledger.writes += [Write("a-0", 3, 100, 9), Write("a-0", 3, 100, 10)]
    violations = check(history, ledger, BOUND_S)
    assert [v.rule for v in violations] == ["fencing"]
    assert "process 100 kept writing" in violations[0].detail
    assert "3 stale writes" in violations[0].detail


def test_a_lost_permanent_child_is_caught() -> None:
    history, ledger = clean_history()
    lost = with_final(history, children={"a-0": {"alive_pids": [], "registered": False,
                                                 "answers": False},
                                         "c-1": {"alive_pids": []}}, gcs_alive=0)
    found = check(lost, ledger, BOUND_S)
    assert {v.subject for v in found} == {"a-0"}
    assert any("lost" in v.detail for v in found)


def test_a_duplicate_child_is_caught() -> None:
    history, ledger = clean_history()
    twin = with_final(history, children={"a-0": {**running(200), "alive_pids": [100, 200]},
                                         "c-1": {"alive_pids": []}}, gcs_alive=2)
    found = check(twin, ledger, BOUND_S)
    assert [v.rule for v in found] == ["children"]
    assert "duplicate" in found[0].detail


def test_a_terminated_child_still_running_is_caught() -> None:
    history, ledger = clean_history()
    alive = with_final(history, children={"a-0": running(200), "c-1": running(300)},
                       gcs_alive=2)
    found = check(alive, ledger, BOUND_S)
    assert [(v.rule, v.subject) for v in found] == [("children", "c-1")]


def test_a_gcs_count_that_differs_from_the_processes_is_caught() -> None:
    history, ledger = clean_history()
    assert rules(with_final(history, gcs_alive=3), ledger) == ["children"]


def test_an_unanswering_or_unregistered_child_is_caught() -> None:
    history, ledger = clean_history()
    silent = with_final(history, children={"a-0": {**running(200), "answers": False,
                                                   "error": "HerdTimeoutError: late"},
                                           "c-1": {"alive_pids": []}})
    found = check(silent, ledger, BOUND_S)
    assert [v.subject for v in found] == ["a-0"] and "HerdTimeoutError" in found[0].detail
    unregistered = with_final(history, children={"a-0": {**running(200), "registered": False},
                                                 "c-1": {"alive_pids": []}})
    assert rules(unregistered, ledger) == ["children"]


def test_an_unknown_start_may_or_may_not_have_happened() -> None:
    history, ledger = clean_history()
    client(history, "start_child", {"child": "c-2"}, "info")
    for seen in ({"alive_pids": []}, running(400)):
        final = dict(history.last("final").value)
        children = {**final["children"], "c-2": seen}
        gcs = 1 + len(seen["alive_pids"])
        assert check(with_final(history, children=children, gcs_alive=gcs), ledger,
                     BOUND_S) == []


def test_a_missing_acknowledged_registration_is_caught() -> None:
    history, ledger = clean_history()
    found = check(with_final(history, names={}), ledger, BOUND_S)
    assert [(v.rule, v.subject) for v in found] == [("names", "n-1")]


def test_an_unregistered_name_still_present_is_caught() -> None:
    history, ledger = clean_history()
    found = check(with_final(history, names={"n-1": True, "n-2": True}), ledger, BOUND_S)
    assert [(v.rule, v.subject) for v in found] == [("names", "n-2")]


def test_an_unknown_registration_may_be_present_or_not() -> None:
    history, ledger = clean_history()
    assert check(with_final(history, names={"n-1": True, "n-3": True}), ledger, BOUND_S) == []


def test_a_slow_or_missing_recovery_is_caught() -> None:
    for seconds, recovered in ((BOUND_S + 1, True), (BOUND_S, False), (None, True)):
        history, ledger = clean_history()
        fault(history, 1, "pause", seconds=seconds, recovered=recovered)
        found = check(history, ledger, BOUND_S)
        assert [(v.rule, v.subject) for v in found] == [("recovery", "fault 1 (pause)")]


def test_a_fault_that_was_not_injected_needs_no_recovery() -> None:
    history, ledger = clean_history()
    history.invoke("nemesis", "kill", {"fault": 1}).fail({"fault": 1, "error": "no target"})
    assert check(history, ledger, BOUND_S) == []


def test_zombies_after_heal_are_caught() -> None:
    history, ledger = clean_history()
    fault(history, 1, "partition", zombies=[4242])
    found = check(history, ledger, BOUND_S)
    assert [v.rule for v in found] == ["fencing"] and "4242" in found[0].detail


def test_leftover_processes_and_missing_observations_are_caught() -> None:
    history, ledger = clean_history()
    history.record("observer", "teardown", {"leftover_pids": [31337]})
    found = check(history, ledger, BOUND_S)
    assert [v.rule for v in found] == ["teardown"] and "31337" in found[0].detail
    bare = History()
    assert rules(bare, LedgerLog([], [])) == ["children", "teardown"]
    blind = with_final(history, error="the registry could not be read: HerdTimeoutError")
    assert [str(v) for v in check(blind, ledger, BOUND_S)][0] == (
        "[children] run: no final observation: the registry could not be read: "
        "HerdTimeoutError")


# ----------------------------------------------------------------------- ledger, summary
def test_ledger_round_trip_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    append(path, {"kind": "start", "tag": "a-0", "pid": 1, "ticks": 2, "node": "n"})
    append(path, {"kind": "write", "tag": "a-0", "epoch": 3, "pid": 1})
    with path.open("a") as handle:
        handle.write('{"kind": "write", "tag"')  # a writer killed mid-line
    log = read(path)
    assert [s.tag for s in log.starts] == ["a-0"] and [w.epoch for w in log.writes] == [3]


def test_summary_counts_faults_operations_and_recovery_percentiles() -> None:
    history, ledger = clean_history()
    fault(history, 1, "kill", seconds=4.0)
    fault(history, 2, "pause", seconds=6.0)
    history.invoke("nemesis", "replace_node", {"fault": 1}).ok({})
    summary = summarize(ChaosConfig(seed=5), history, check(history, ledger, BOUND_S), 12.0)
    assert summary["faults"] == {"kill": 2, "pause": 1}
    assert summary["operations"]["register"] == {"info": 1, "ok": 2}
    assert summary["recovery"]["kill"] == {"count": 2, "p50_s": 2.0, "p99_s": 4.0, "max_s": 4.0}
    assert summary["violations"] == [] and "--seed 5" in summary["replay"]
    assert percentile([], 50) is None and percentile([1, 2, 3, 4], 50) == 2


# ------------------------------------------------------------------------------ schedule
def test_the_schedule_is_deterministic_for_a_seed() -> None:
    config = ChaosConfig(seed=11, duration_s=600, faults=["kill", "pause", "child"])
    first, again = plan_faults(config), plan_faults(config)
    assert first == again and len(first) > 20
    assert {f.kind for f in first} == {"kill", "pause", "child"}
    assert all(0 < f.at_s < 600 and 2.0 <= f.hold_s <= 6.0 and 0 <= f.pick < 1 for f in first)
    assert [f.index for f in first] == list(range(len(first)))
    other = plan_faults(config.model_copy(update={"seed": 12}))
    assert [f.to_dict() for f in other] != [f.to_dict() for f in first]


def test_a_planned_fault_picks_among_candidates() -> None:
    plan = plan_faults(ChaosConfig(seed=3, duration_s=300))
    assert all(f.choose(["x", "y", "z"]) in ("x", "y", "z") for f in plan)
    assert plan[0].choose([]) is None


# -------------------------------------------------------------------------------- config
@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600),
                                               ("500ms", 0.5), ("45", 45), ("1.5m", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "ten", "5 days", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_fault_lists() -> None:
    assert parse_faults("kill, pause,kill") == ["kill", "pause"]
    assert len(parse_faults("all")) == 6
    with pytest.raises(ConfigError, match="unknown fault kind 'explode'"):
        parse_faults("kill,explode")
    with pytest.raises(ConfigError, match="hold_s"):
        ChaosConfig.build(hold_s=(5, 1))
    with pytest.raises(ConfigError, match="duration_s"):
        ChaosConfig.build(duration_s=0)


# ----------------------------------------------------------------------------------- CLI
class NoCluster:
    """Stands in for LocalCluster in the CLI module: bad input must fail before one starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cluster was started despite bad input")


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "kill,meteor"], "--faults: unknown fault kind 'meteor'"),
    (["--duration", "0"], "--duration: must be positive"),
    (["--duration", "-10m"], "--duration: must be positive"),
    (["--duration", "soon"], "--duration: not a duration"),
    (["--out", "/nonexistent-dir/x.json"], "--out: cannot write /nonexistent-dir/x.json"),
    (["--out", "/proc/chaos.json"], "--out: cannot write /proc/chaos.json"),
])
def test_cli_bad_input_fails_at_once(args: list[str], message: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_cli, "LocalCluster", NoCluster)
    result = CliRunner().invoke(main, ["chaos", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herd: error: ") and message in lines[0]


def test_cli_out_that_is_a_directory_fails_at_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_cli, "LocalCluster", NoCluster)
    result = CliRunner().invoke(main, ["chaos", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"herd: error: --out: {tmp_path} is a directory, not a file"
    assert list(tmp_path.iterdir()) == []
