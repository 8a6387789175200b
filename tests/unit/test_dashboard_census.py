"""The dashboard's census without Ray: transitions as timeline events, coalesced failovers,
summaries that stay small, pages, a child's history and last exit."""

from __future__ import annotations

from dataclasses import replace

from herd.cli.dashboard.census import (
    COALESCE_ABOVE,
    Census,
    ChildRow,
    Event,
    NodeRow,
    coalesce,
    transition,
)


def row(child_id: str, node: str = "n1", incarnation: int = 1, failovers: int = 0,
        sup: str = "s") -> ChildRow:
    return ChildRow(sup, child_id, "actor", "running", node, "us-east", 1, incarnation, 0,
                    failovers)


def test_transitions_name_what_happened() -> None:
    first = row("a")
    assert transition(None, first, 1.0).kind == "started"  # type: ignore[union-attr]
    assert transition(first, replace(first, epoch=2), 1.0) is None
    restarted = transition(first, row("a", incarnation=2), 1.0)
    assert restarted is not None and restarted.kind == "restarted"
    moved = transition(first, row("a", node="n2", incarnation=2), 1.0)
    assert moved is not None and (moved.kind, moved.from_node) == ("moved", "n1")
    failed = transition(first, row("a", node="n2", incarnation=2, failovers=1), 1.0)
    assert failed is not None and failed.kind == "failed_over" and failed.node_id == "n2"


def test_a_mass_failover_is_one_timeline_line() -> None:
    events = [Event("failed_over", 1.0, "s", f"c-{i}", "n2", "n1") for i in range(10_000)]
    events.append(Event("node_down", 1.0, node_id="n1"))
    folded = coalesce(events)
    assert [e.kind for e in folded] == ["failed_over", "node_down"]
    assert folded[0].count == 10_000 and folded[0].children[:2] == ["c-0", "c-1"]
    few = events[:COALESCE_ABOVE]
    assert coalesce(few) == few


def test_summary_is_per_supervisor_and_node_not_per_child() -> None:
    census = Census()
    census.node(NodeRow("n1", "us-east", True, head=True))
    census.node(NodeRow("n2", "us-west", True))
    for i in range(10_000):
        census.upsert(row(f"c-{i}", node="n1" if i % 2 else "n2"))
    summary = census.summary()
    assert summary["children"] == 10_000
    [sup] = summary["supervisors"]
    assert sup["by_node"] == {"n1": 5000, "n2": 5000} and sup["by_status"] == {"running": 10_000}
    assert [n["children"] for n in summary["nodes"]] == [5000, 5000]
    assert len(str(summary)) < 2000  # what is pushed each time counts change stays small


def test_pages_search_and_bounds() -> None:
    census = Census()
    for i in range(120):
        census.upsert(row(f"c-{i:03d}", node="n1" if i < 100 else "n9"))
    page = census.page(offset=50, limit=50)
    assert page["total"] == 120 and [r["id"] for r in page["rows"]][:1] == ["c-050"]
    assert census.page(query="n9")["total"] == 20
    assert census.page(supervisor="other")["total"] == 0
    assert len(census.page(limit=10_000)["rows"]) == 120  # limit capped at PAGE_LIMIT_MAX
    assert len(census.page(limit=10_000, query="c-")["rows"]) <= 200


def test_node_events_only_on_change() -> None:
    census = Census()
    assert census.node(NodeRow("n1", "us-east", True)) is None  # first sight of a live node
    assert census.node(NodeRow("n1", "us-east", True)) is None
    down = census.node(NodeRow("n1", "us-east", False), now=5.0)
    assert down is not None and (down.kind, down.at) == ("node_down", 5.0)
    up = census.node(NodeRow("n1", "us-east", True))
    assert up is not None and up.kind == "node_up"


def test_child_page_has_history_and_last_exit() -> None:
    census = Census()
    census.upsert(row("a"), now=1.0)
    census.exited("s", "a", "holder exited: killed", now=2.0)
    census.upsert(row("a", incarnation=2), now=2.5)
    child = census.child("s", "a")
    assert child is not None
    assert [h["kind"] for h in child["history"]] == ["started", "restarted"]
    assert (child["last_exit"], child["last_exit_at"]) == ("holder exited: killed", 2.0)
    removed = census.remove("s", "a")
    assert removed is not None and removed.kind == "removed"
    assert census.child("s", "a") is None and census.remove("s", "a") is None


def test_static_tree_replaced_as_polled() -> None:
    census = Census()
    rows = [replace(row(i, sup="t"), static=True) for i in ("a", "b")]
    assert [e.kind for e in census.replace_static("t", rows)] == ["started", "started"]
    events = census.replace_static("t", rows[:1])
    assert [(e.kind, e.child_id) for e in events] == [("removed", "b")]
    census.stopped["t"] = "shutdown: reached_max_restart_intensity"
    sup = next(s for s in census.summary()["supervisors"] if s["name"] == "t")
    assert sup["kind"] == "static" and sup["stopped"].startswith("shutdown")


def test_a_supervisor_that_does_not_answer_keeps_its_rows_and_says_why() -> None:
    census = Census()
    census.replace_static("t", [replace(row("a", sup="t"), static=True)])
    census.unavailable["t"] = "SupervisorRestarting: supervisor 't' has not started yet"
    sup = next(s for s in census.summary()["supervisors"] if s["name"] == "t")
    assert sup["children"] == 1 and sup["unavailable"].startswith("SupervisorRestarting")
    assert "stopped" not in sup
