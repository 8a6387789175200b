"""One chaos run against a ``LocalCluster`` that is already up: the client thread works while
the nemesis injects the planned faults one after the other; at the end the children settle,
the final state is observed, the supervisor stops, the cluster is shut down and checked for
leftover processes, and the checker reads the history.

    result = run(ChaosConfig(seed=3, duration_s=120), cluster, Path("/tmp/x.ledger"))
    assert not result.violations, result.summary["replay"]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.chaos import ledger
from herd.chaos.checker import Violation, check
from herd.chaos.config import ChaosConfig
from herd.chaos.errors import HeadLost
from herd.chaos.faults import Nemesis
from herd.chaos.history import History
from herd.chaos.metrics import chaos_metrics
from herd.chaos.observe import alive_pids, final_state, leftover_processes, run_pids, wait_answering
from herd.chaos.schedule import plan_faults
from herd.chaos.summary import is_fault, summarize
from herd.chaos.workload import Client
from herd.platform.local.cluster import LocalCluster
from herd.platform.logging import get_logger
from herd.supervisors import DynamicSupervisor

__all__ = ["RunResult", "run"]

log = get_logger("herd.chaos.runner")

Progress = Callable[[str], None]
SETUP_TIMEOUT_S = 90.0
PROGRESS_EVERY_S = 1.0


@dataclass
class RunResult:
    config: ChaosConfig
    history: History
    violations: list[Violation]
    summary: dict[str, Any]


def run(config: ChaosConfig, cluster: LocalCluster, ledger_path: Path,
        progress: Progress | None = None, shutdown: bool = True) -> RunResult:
    """The whole run; with ``shutdown`` the cluster is stopped at the end (and checked for
    leftover processes: the ``teardown`` rule needs it)."""
    say = progress or (lambda _text: None)
    began = time.monotonic()
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    ledger_path.write_text("")
    history = History()
    history.record("runner", "config", config.model_dump(mode="json"))
    say("starting the supervisor and its anchor children")
    sup = DynamicSupervisor.start(config.supervisor, reconcile_interval_s=0.5,
                                  timeout=SETUP_TIMEOUT_S)
    client = Client(config, sup, history, ledger_path)
    client.start_anchors()
    nemesis = Nemesis(config, cluster, history, ledger_path, client)
    client.begin()
    lost: HeadLost | None = None
    try:
        _drive(config, nemesis, history, say)
    except HeadLost as exc:
        lost = exc
    finally:  # after a lost head the client's calls hang until their timeouts: do not wait
        client.end(1.0 if lost is not None else config.op_timeout_s * 2 + 5)
    if client.error is not None:
        history.record("runner", "client_error", repr(client.error))
    if lost is not None:  # nothing answers any more: report before Ray ends this driver
        say(f"aborted: {lost}")
        history.record("observer", "final", {"error": f"run aborted: {lost}"})
    else:
        say("settling: waiting for every child to answer")
        tags = client.live_tags()
        _settle(config, tags, client.doubtful, ledger_path)
        history.record("observer", "final", final_state(
            config.supervisor, tags, ledger.read(ledger_path), config.recovery_bound_s))
        _stop_supervisor(client.sup, history)
    if shutdown or lost is not None:
        say("shutting the cluster down")
        _teardown(cluster, ledger.read(ledger_path), history)
    else:
        history.record("observer", "teardown", {"skipped": True, "leftover_pids": []})
    log_end = ledger.read(ledger_path)
    violations = check(history, log_end, config.recovery_bound_s)
    if client.error is not None:
        violations.append(Violation("harness", "client", f"the client thread failed: "
                                                         f"{client.error!r}"))
    summary = summarize(config, history, violations, time.monotonic() - began, log_end)
    chaos_metrics().finished(len(violations))
    return RunResult(config, history, violations, summary)


def _drive(config: ChaosConfig, nemesis: Nemesis, history: History, say: Progress) -> None:
    """Run the planned faults in order (each only after the previous one recovered) until the
    duration is over, or until a fault is not recovered from within the bound."""
    start = time.monotonic()
    end = start + config.duration_s
    for planned in plan_faults(config):
        due = time.monotonic() + planned.gap_s
        while time.monotonic() < min(end, due):
            say(progress_line(history, start, config.duration_s))
            time.sleep(min(PROGRESS_EVERY_S, max(0.0, min(end, due) - time.monotonic())))
        if time.monotonic() >= end:
            return
        say(progress_line(history, start, config.duration_s,
                          f"fault {planned.index}: {planned.kind}"))
        recovered = nemesis.run(planned)
        chaos_metrics().fault(planned.kind, recovered)
        if not recovered:
            # More faults would only bury the first failure (and stretch the run): check now.
            log.warning("chaos_not_recovered", fault=planned.index, kind=planned.kind)
            return
    while time.monotonic() < end:
        say(progress_line(history, start, config.duration_s))
        time.sleep(min(PROGRESS_EVERY_S, max(0.0, end - time.monotonic())))


def progress_line(history: History, start: float, duration_s: float, doing: str = "") -> str:
    """``t 35/120 s | faults 3 | ops 120 ok 110 fail 2 info 8 | <doing or last recovery>``."""
    faults = 0
    outcomes: Counter[str] = Counter()
    last = ""
    for invoke, outcome in history.completions():
        kind = outcome.type if outcome is not None else "open"
        if invoke.process == "client":
            outcomes[kind] += 1
        elif invoke.f == "recover" and outcome is not None:
            last = (f"fault {outcome.value['fault']} ({outcome.value['kind']}) "
                    f"{'recovered' if kind == 'ok' else 'NOT recovered'} in "
                    f"{outcome.value['seconds']:.1f} s")
        elif invoke.process == "nemesis" and is_fault(invoke.f) and kind != "fail":
            faults += 1
    ops = sum(outcomes.values())
    elapsed = min(time.monotonic() - start, duration_s)
    return (f"t {elapsed:.0f}/{duration_s:.0f} s | faults {faults} | ops {ops} ok "
            f"{outcomes['ok']} fail {outcomes['fail']} info {outcomes['info']} | "
            f"{doing or last}")


def _settle(config: ChaosConfig, tags: list[str], doubtful: set[str],
            ledger_path: Path) -> None:
    """Before the final look: every child answers, no incarnation has a twin still running,
    and the processes of children terminated (Ray reports an actor dead as soon as it is
    killed: its process may take a moment more to exit) are gone; bounded by the recovery
    bound (what is still wrong then is the checker's)."""
    deadline = time.monotonic() + config.recovery_bound_s
    wait_answering(config.supervisor, tags, deadline)
    running = set(tags) | doubtful
    while time.monotonic() < deadline:
        log_now = ledger.read(ledger_path)
        if all(len(alive_pids(log_now, tag)) <= (1 if tag in running else 0)
               for tag in log_now.tags):
            return
        time.sleep(0.2)


def _stop_supervisor(sup: DynamicSupervisor, history: History) -> None:
    op = history.invoke("runner", "stop_supervisor", {"supervisor": sup.name})
    try:
        sup.stop(timeout=SETUP_TIMEOUT_S)
    except Exception as exc:
        op.info({"error": f"{type(exc).__name__}: {exc}"})
    else:
        op.ok()


def _teardown(cluster: LocalCluster, log_now: ledger.LedgerLog, history: History) -> None:
    before = run_pids(cluster, log_now)
    error = None
    try:
        cluster.shutdown()
    except Exception as exc:  # survivors are listed below either way
        error = f"{type(exc).__name__}: {exc}"
    history.record("observer", "teardown",
                   {"leftover_pids": leftover_processes(before, cluster), "error": error})
