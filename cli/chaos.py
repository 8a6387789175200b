"""``herd chaos``: a seeded nemesis against a local cluster this command starts (like
``herd demo``), with a live progress line; writes the history and a JSON summary to ``--out``
and exits 1 when the checker found a violation. Bad flags fail at once, before anything
starts."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from herd.chaos.config import ChaosConfig, parse_duration, parse_faults
from herd.chaos.faults import check_supported, cluster_options
from herd.chaos.runner import run
from herd.chaos.summary import write_report
from herd.cli.chaos_consensus import run_consensus_chaos
from herd.cli.chaos_services import run_services_chaos
from herd.cli.common import DEFAULT_LOG_DIR, echo, one_line_errors, ray_output_to
from herd.platform.errors import ConfigError
from herd.platform.local.cluster import LocalCluster

QUIET_PROGRESS_EVERY_S = 15.0
#: Workloads besides the supervisor's: name -> runner(seed, duration, faults, out, workers).
WORKLOADS: dict[str, Callable[[int, str, str, Path | None, int], None]] = {
    "consensus": run_consensus_chaos,
    "services": run_services_chaos,
}
DEFAULT_FAULTS = {"consensus": "kill,pause,partition", "services": "kill"}


def check_writable(out: Path) -> None:
    """``ConfigError`` unless ``out`` can be written: opened for appending (which does not
    harm an existing file); a file created by the probe is removed again."""
    if out.is_dir():
        raise ConfigError(f"{out} is a directory, not a file", field="--out", value=str(out))
    existed = out.exists()
    try:
        with out.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}", field="--out",
                          value=str(out)) from None
    if not existed:
        out.unlink()


class ProgressLine:
    """One line rewritten in place on a terminal; elsewhere a line every 15 s."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.last = 0.0
        self.open = False

    def __call__(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            echo(f"\r\033[K{text[:width]}", nl=False)
            self.open = True
        elif time.monotonic() - self.last >= QUIET_PROGRESS_EVERY_S:
            echo(text)
            self.last = time.monotonic()

    def close(self) -> None:
        if self.open:
            echo()
            self.open = False


@click.command("chaos")
@click.option("--seed", type=int, default=None, help="seed of the schedule (default: random)")
@click.option("--duration", default="2m", show_default=True, help="e.g. 30s, 10m, 1h")
@click.option("--faults", default=None,
              help="comma-separated: kill, pause, child, control, head, partition (or all); "
                   "default: kill,pause,child,control (consensus: kill,pause,partition)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON file for the history and summary (default chaos-SEED.json)")
@click.option("--workers", type=click.IntRange(2, 3), default=3, show_default=True,
              help="worker nodes beside the head")
@click.option("--workload", type=click.Choice(["supervisor", *sorted(WORKLOADS)]),
              default="supervisor",
              show_default=True, help="what the clients work and the checker checks")
@one_line_errors
def chaos(seed: int | None, duration: str, faults: str | None, out: Path | None,
          workers: int, workload: str) -> None:
    """Inject seeded random faults into a local cluster while a client works, then check
    herd's guarantees over the recorded history (replay a run with the same --seed)."""
    seed = seed if seed is not None else int.from_bytes(os.urandom(3), "big")
    faults = faults or DEFAULT_FAULTS.get(workload, "kill,pause,child,control")
    if workload != "supervisor":
        WORKLOADS[workload](seed, duration, faults, out, workers)
        return
    config = ChaosConfig.build(seed=seed, duration_s=parse_duration(duration, "--duration"),
                               faults=parse_faults(faults, "--faults"))
    check_supported(list(config.faults))
    out = out or Path(f"chaos-{seed}.json")
    check_writable(out)
    ledger_path = out.with_name(out.name + ".ledger")
    log_path = DEFAULT_LOG_DIR / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.log"
    progress = ProgressLine(sys.stdout.isatty())
    with ray_output_to(log_path):
        echo(f"herd chaos: seed {seed}, {config.duration_s:g} s, faults "
             f"{','.join(config.faults)} (logs: {log_path})")
        cluster = LocalCluster(nodes=1 + workers, **cluster_options(list(config.faults)))
        try:
            cluster.connect(log_to_driver=False)
            result = run(config, cluster, ledger_path, progress=progress, shutdown=True)
        except BaseException:
            progress.close()
            cluster.shutdown()
            raise
        progress.close()
    write_report(out, result.summary, result.history)
    summary = result.summary
    echo(f"faults {json.dumps(summary['faults'])}; operations "
         f"{sum(sum(c.values()) for c in summary['operations'].values())}")
    for kind, stats in summary["recovery"].items():
        echo(f"  recovery {kind}: p50 {stats['p50_s']:.1f} s, p99 {stats['p99_s']:.1f} s "
             f"({stats['count']})")
    echo(f"history and summary: {out} (ledger: {ledger_path})")
    if result.violations:
        for violation in result.violations:
            echo(f"VIOLATION {violation}", err=True)
        echo(f"herd chaos: {len(result.violations)} violations; replay with: "
             f"{config.replay}", err=True)
        sys.exit(1)
    echo(f"no violations (seed {seed})")
