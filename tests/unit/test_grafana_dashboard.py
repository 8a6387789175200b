"""The Grafana dashboard in configs/grafana/ queries only series herd exports, and herd's metric
definitions follow ``herd_<area>_<what>_<unit>`` with bounded tags.

The exported names are read from the metric modules themselves (every ``Gauge``, ``Counter``,
``Histogram`` and ``TotalsCounter`` they construct), with Ray's ``ray_`` prefix and a histogram's
``_bucket`` / ``_count`` / ``_sum`` series; tests/cluster/test_dashboard.py scrapes them live.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "configs" / "grafana" / "herd-dashboard.json"
METRIC_MODULES = [*REPO.glob("*/metrics.py"), *REPO.glob("*/*/metrics.py"),
                  REPO / "platform" / "membership_metrics.py"]
KINDS = {"Gauge", "Counter", "Histogram", "TotalsCounter"}
UNITS = ("count", "total", "seconds", "milliseconds", "bytes", "ratio", "writes")
UNBOUNDED_TAGS = {"child_id", "child", "key", "name", "id", "pid", "epoch", "incarnation"}
SERIES = re.compile(r"\bray_herd_\w+")


def definitions() -> dict[str, tuple[str, list[str]]]:
    """``herd_...`` name -> (kind, tag keys) of every metric a metric module constructs."""
    found: dict[str, tuple[str, list[str]]] = {}
    for path in METRIC_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in KINDS and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            tags: list[str] = []
            for value in [*node.args[2:], *(k.value for k in node.keywords
                                            if k.arg == "tag_keys")]:
                if isinstance(value, ast.Tuple):
                    tags += [e.value for e in value.elts if isinstance(e, ast.Constant)]
            found[node.args[0].value] = (node.func.id, tags)
    return found


def exported_series() -> set[str]:
    series = set()
    for name, (kind, _) in definitions().items():
        if kind == "Histogram":
            series |= {f"ray_{name}_bucket", f"ray_{name}_count", f"ray_{name}_sum"}
        else:
            series.add(f"ray_{name}")
    return series


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_metric_modules_define_the_areas() -> None:
    areas = {name.split("_")[1] for name in definitions()}
    assert areas >= {"dsup", "sup", "lw", "registry", "membership", "repl", "fed", "chaos"}


def test_names_follow_the_convention_and_tags_are_bounded() -> None:
    for name, (kind, tags) in definitions().items():
        assert re.fullmatch(r"herd_[a-z]+_[a-z_]+", name), name
        assert name.endswith(UNITS), f"{name}: no unit suffix"
        assert (kind in ("Counter", "TotalsCounter")) == name.endswith("_total"), name
        assert not UNBOUNDED_TAGS & set(tags), f"{name}: unbounded tag in {tags}"


def test_every_dashboard_expression_names_an_exported_series() -> None:
    exported = exported_series()
    exprs = expressions()
    assert exprs
    for expr in exprs:
        named = SERIES.findall(expr)
        assert named, f"expression names no herd series: {expr}"
        unknown = set(named) - exported
        assert not unknown, f"{expr}: not exported: {sorted(unknown)}"


def test_the_dashboard_shows_every_metric_family() -> None:
    used = {series for expr in expressions() for series in SERIES.findall(expr)}
    suffixes = ("_bucket", "_count", "_sum")
    unshown = [name for name, (kind, _) in definitions().items()
               if not ({f"ray_{name}{s}" for s in suffixes} if kind == "Histogram"
                       else {f"ray_{name}"}) & used]
    assert not unshown, unshown


def test_panels_have_unique_ids_and_a_prometheus_datasource() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["datasource"]["type"] == "prometheus" for p in panels)
