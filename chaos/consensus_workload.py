"""``herd chaos --workload consensus``: clients work a KV group and a lock group while the
nemesis kills, pauses and cuts off members' nodes; the history of every operation (``ok``,
``fail`` when it certainly did not happen, ``info`` when its outcome is unknown) is then checked
by the linearizability checker against the KV and lock models."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herd.chaos.config import ChaosConfig
from herd.chaos.consensus_nemesis import SUPPORTED, ConsensusNemesis
from herd.chaos.history import History, OpenOp
from herd.chaos.linearizability import check_operations, operations_from_history
from herd.chaos.linearizability_models import KV_MODEL, LOCK_MODEL
from herd.chaos.schedule import workload_rng
from herd.consensus import KV, Group, GroupUnavailable, Lock
from herd.platform.errors import ConfigError
from herd.platform.local.cluster import LocalCluster
from herd.platform.logging import get_logger

__all__ = ["HEALTH_CHECK", "ConsensusChaosResult", "check_faults", "run_consensus"]

log = get_logger("herd.chaos.consensus")

HEALTH_CHECK = {"initial_delay_ms": 1000, "period_ms": 1000, "timeout_ms": 1000,
                "failure_threshold": 5}
REPLICAS = 3
KEYS = ("x", "y", "z")
KV_CLIENTS = 4
LOCK_CLIENTS = 3
LOCK_TTL_S = 2.0
OP_TIMEOUT_S = 4.0
Progress = Callable[[str], None]


@dataclass
class ConsensusChaosResult:
    history: History
    violations: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def check_faults(config: ChaosConfig) -> None:
    """``ConfigError`` for a fault kind the consensus nemesis does not inject."""
    unsupported = [kind for kind in config.faults if kind not in SUPPORTED]
    if unsupported:
        raise ConfigError(f"the consensus workload injects {', '.join(SUPPORTED)}",
                          field="faults", value=",".join(unsupported))


def run_consensus(config: ChaosConfig, cluster: LocalCluster,
                  progress: Progress | None = None) -> ConsensusChaosResult:
    check_faults(config)
    say = progress or (lambda _text: None)
    began = time.monotonic()
    history = History()
    history.record("runner", "config", config.model_dump(mode="json"))
    say("starting the groups")
    suffix = f"{config.seed}"
    kv = Group.start(f"chaos-kv-{suffix}", machine=KV, replicas=REPLICAS, members="auto")
    locks = Group.start(f"chaos-lock-{suffix}", machine=Lock, replicas=REPLICAS,
                        members="auto")
    stop = threading.Event()
    rng = workload_rng(config.seed)
    workers = [threading.Thread(target=kv_client, daemon=True,
                                args=(Group.connect(kv.name), f"kv-{i}", history, stop,
                                      rng.random(), config.op_gap_s))
               for i in range(KV_CLIENTS)]
    workers += [threading.Thread(target=lock_client, daemon=True,
                                 args=(Group.connect(locks.name), f"lock-{i}", history, stop,
                                       rng.random(), config.op_gap_s))
                for i in range(LOCK_CLIENTS)]
    for worker in workers:
        worker.start()
    nemesis = ConsensusNemesis(config, cluster, history, [kv, locks], REPLICAS)
    end = began + config.duration_s
    try:
        nemesis.run(end, stop)
        while time.monotonic() < end:
            say(progress_line(history, began, config.duration_s))
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=OP_TIMEOUT_S * 3)
    say("checking linearizability")
    checked = time.monotonic()
    kv_result = check_operations(KV_MODEL, operations_from_history(history, ["get", "put",
                                                                             "vcas"]))
    lock_result = check_operations(LOCK_MODEL, operations_from_history(
        history, ["acquire", "release"]))
    check_s = time.monotonic() - checked
    violations = [f"{result.failed_partition!r} not linearizable: " + " | ".join(result.window)
                  for result in (kv_result, lock_result) if not result.ok]
    recovered = [e for e in history.events if e.f == "recover" and e.type == "fail"]
    violations += [f"not recovered: {e.value}" for e in recovered]
    for group in (kv, locks):
        group.stop()
    counts = Counter((e.f, e.type) for e in history.events
                     if e.process.startswith(("kv-", "lock-")) and e.type != "invoke")
    summary = {
        "seed": config.seed, "duration_s": round(time.monotonic() - began, 1),
        "faults": dict(Counter(e.f for e in history.events
                               if e.process == "nemesis" and e.type == "ok" and e.f in SUPPORTED)),
        "operations": {f"{f}:{t}": n for (f, t), n in sorted(counts.items())},
        "kv": kv_result.to_dict(), "lock": lock_result.to_dict(),
        "check_s": round(check_s, 3), "recoveries_s": nemesis.recoveries,
        "violations": violations,
    }
    return ConsensusChaosResult(history, violations, summary)


def progress_line(history: History, began: float, duration_s: float) -> str:
    outcomes = Counter(e.type for e in history.events if e.process.startswith(("kv-", "lock-")))
    faults = sum(1 for e in history.events if e.process == "nemesis" and e.f in SUPPORTED
                 and e.type == "ok")
    return (f"t {time.monotonic() - began:.0f}/{duration_s:.0f} s | faults {faults} | ops "
            f"ok {outcomes['ok']} fail {outcomes['fail']} info {outcomes['info']}")


def attempt(history: History, process: str, recorded: tuple[Any, ...],
            call: Callable[..., Any], payload: tuple[Any, ...]) -> tuple[Any, OpenOp] | None:
    """Run ``call(payload)`` and record it as ``recorded`` (the model's input): completed by
    the caller with ``ok``; ``fail`` when it certainly did not happen (no leader took it);
    ``info`` when its outcome is unknown."""
    op = history.invoke(process, recorded[0], list(recorded))
    try:
        return call(payload, timeout=OP_TIMEOUT_S), op
    except GroupUnavailable as exc:
        op.fail(str(exc)[:80])
    except Exception as exc:  # OutcomeUnknown, a timeout, a lost connection: unknown
        op.info(f"{type(exc).__name__}: {str(exc)[:80]}")
    return None


def kv_client(group: Group, process: str, history: History, stop: threading.Event,
              seed: float, gap_s: float) -> None:
    rng = workload_rng(int(seed * 1_000_000))
    values = itertools.count(1)
    versions: dict[str, int] = {}
    while not stop.is_set():
        key, choice, value = rng.choice(KEYS), rng.random(), f"{process}:{next(values)}"
        if choice < 0.4:  # half of the reads by ReadIndex, half on the leader's lease
            read = functools.partial(group.query,
                                     consistency="linearizable" if choice < 0.2 else "lease")
            done = attempt(history, process, ("get", key), read, ("get", key))
            if done:
                result, op = done
                versions[key] = result["version"] if result else 0
                op.ok(result["value"] if result else None)
        elif choice < 0.75:
            done = attempt(history, process, ("put", key, value), group.command,
                           ("put", key, value))
            if done:
                done[1].ok("ok")
        else:
            version = versions.get(key, 0)
            done = attempt(history, process, ("vcas", key, version, value), group.command,
                           ("cas", key, version, value))
            if done:
                done[1].ok(done[0]["ok"])
        stop.wait(gap_s * rng.random())


def lock_client(group: Group, process: str, history: History, stop: threading.Event,
                seed: float, gap_s: float) -> None:
    rng = workload_rng(int(seed * 1_000_000))
    while not stop.is_set():
        if rng.random() < 0.6:
            done = attempt(history, process, ("acquire", "L", process), group.command,
                           ("acquire", "L", process, LOCK_TTL_S))
            if done:
                result, op = done
                op.ok([result["granted"], result["token"], result["displaced"]])
        else:
            done = attempt(history, process, ("release", "L", process), group.command,
                           ("release", "L", process))
            if done:
                done[1].ok(done[0])
        stop.wait(gap_s * rng.random())
