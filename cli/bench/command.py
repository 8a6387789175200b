"""``herd bench [NAME | all]``: run benchmarks, print each as a table, write JSON with --out."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import click
import yaml

from herd.cli.bench import BENCHMARKS, BenchRun, load
from herd.cli.common import DEFAULT_LOG_DIR, echo, one_line_errors, ray_output_to
from herd.platform.errors import ConfigError

LOG_FILE = "herd-bench.log"


@click.command("bench")
@click.argument("name", required=False)
@click.option("--children", type=int, default=None, help="K children (failover/spawn)")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="a parameter of the benchmark's run(), e.g. -o keys=100000 (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="also write the reports here as JSON")
@one_line_errors
def bench(name: str | None, children: int | None, options: tuple[str, ...],
          out: Path | None) -> None:
    """Run benchmark NAME (or `all`); without NAME, list them."""
    if name is None:
        for bench_name, (_, description) in BENCHMARKS.items():
            echo(f"{bench_name:<12} {description}")
        return
    names = list(BENCHMARKS) if name == "all" else [name]
    runs = [(bench_name, load(bench_name)) for bench_name in names]
    extra = parse_options(options, [run for _, run in runs])
    reports = []
    with ray_output_to(DEFAULT_LOG_DIR / LOG_FILE) as log_path:
        echo(f"(Ray's and herd's logs of the benchmarks: {log_path})", err=True)
        for bench_name, run in runs:
            accepted = inspect.signature(run).parameters
            kwargs = {key: value for key, value in extra.items() if key in accepted}
            if children is not None and "children" in inspect.signature(run).parameters:
                kwargs["children"] = children
            echo(f"running {bench_name} ...", err=True)
            report = run(**kwargs)
            echo(report.render_table())
            reports.append(report.to_json())
    if out is not None:
        out.write_text(json.dumps({"reports": reports}, indent=2))
        echo(f"wrote {out}", err=True)


def parse_options(options: tuple[str, ...], runs: list[BenchRun]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as YAML scalars), each a parameter of some ``run``."""
    known = {param for run in runs for param in inspect.signature(run).parameters}
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise ConfigError("expected KEY=VALUE", field="--option", value=option)
        if key not in known:
            raise ConfigError(f"no benchmark here takes it; choose from {sorted(known)}",
                              field="--option", value=key)
        parsed[key] = yaml.safe_load(raw)
    return parsed
