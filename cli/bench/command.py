"""``herd bench [NAME | all]``: run benchmarks, print each as a table, write JSON with --out."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click

from herd.cli.bench import BENCHMARKS, load
from herd.cli.common import one_line_errors


@click.command("bench")
@click.argument("name", required=False)
@click.option("--children", type=int, default=None, help="K children (failover/spawn)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@one_line_errors
def bench(name: str | None, children: int | None, out: Path | None) -> None:
    """Run benchmark NAME (or `all`); without NAME, list them."""
    if name is None:
        for bench_name, (_, description) in BENCHMARKS.items():
            click.echo(f"{bench_name:<12} {description}")
        return
    names = list(BENCHMARKS) if name == "all" else [name]
    reports = []
    for bench_name in names:
        run = load(bench_name)
        kwargs = {}
        if children is not None and "children" in inspect.signature(run).parameters:
            kwargs["children"] = children
        click.echo(f"running {bench_name} ...", err=True)
        report = run(**kwargs)
        click.echo(report.render_table())
        click.echo(json.dumps(report.to_json()))
        reports.append(report.to_json())
    if out is not None:
        out.write_text(json.dumps({"reports": reports}, indent=2))
        click.echo(f"wrote {out}", err=True)
