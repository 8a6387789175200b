"""The client side of a chaos run: children that write to the fencing ledger, and a client
thread that starts and terminates children, registers and unregisters names and calls children
by name, recording every operation in the history.

Outcomes follow the history's rules: ``ok`` when the operation was acknowledged, ``fail`` only
for errors that say it did not happen (e.g. ``ChildAlreadyStarted``, ``AlreadyRegistered``),
``info`` for everything else (timeouts, lost holders, an unavailable cluster): unknown.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import ray

from herd.chaos import ledger
from herd.chaos.config import ChaosConfig
from herd.chaos.errors import ChaosError
from herd.chaos.history import History, OpenOp
from herd.chaos.schedule import workload_rng
from herd.platform.errors import NoQuorum
from herd.platform.logging import get_logger
from herd.registry import AlreadyRegistered, HolderDead, Registry, via
from herd.supervisors import ChildSpec, DynamicSupervisor
from herd.supervisors.errors import (
    ChildAlreadyStarted,
    ChildNotFound,
    StartChildError,
    SupervisorStopped,
)
from herd.supervisors.fencing import Superseded, check

__all__ = ["NAME_PREFIX", "ChaosChild", "Client", "NameHolder", "child_name"]

log = get_logger("herd.chaos.workload")

NAME_PREFIX = "chaos-names/"
SUPERSEDED_BACKOFF_S = 1.0
#: Errors after which the operation certainly did not take effect.
START_FAILED = (ChildAlreadyStarted, StartChildError, NoQuorum, SupervisorStopped)


class ChaosChild:
    """A permanent child: logs its start to the ledger, then writes its fencing epoch there
    every ``write_every_s`` while ``check`` says it holds its name."""

    def __init__(self, ledger_path: str, tag: str, name: str, write_every_s: float) -> None:
        self.ledger_path, self.tag, self.name = ledger_path, tag, name
        self.write_every_s = write_every_s
        self.epoch: int | None = None
        pid = os.getpid()
        ledger.append(ledger_path, {"kind": "start", "tag": tag, "pid": pid,
                                    "ticks": ledger.process_start_ticks(pid) or 0,
                                    "node": ray.get_runtime_context().get_node_id()})
        threading.Thread(target=self._write_forever, daemon=True).start()

    def ping(self) -> dict[str, Any]:
        return {"tag": self.tag, "pid": os.getpid(), "epoch": self.epoch}

    def _write_forever(self) -> None:
        while True:
            try:
                self.epoch = check(self.name)
            except Superseded:  # not (or no longer) the holder: no side effect
                time.sleep(SUPERSEDED_BACKOFF_S)
                continue
            except Exception:  # the registry is briefly unreachable: try again
                time.sleep(self.write_every_s)
                continue
            ledger.append(self.ledger_path, {"kind": "write", "tag": self.tag,
                                             "epoch": self.epoch, "pid": os.getpid()})
            time.sleep(self.write_every_s)


@ray.remote(num_cpus=0, max_restarts=0)
class NameHolder:
    """Holds the names the client registers (records are kept, without holder, if it dies)."""

    def ping(self) -> int:
        return os.getpid()


def child_name(config: ChaosConfig, tag: str) -> str:
    return f"{config.supervisor}/{tag}"


class Client:
    """Runs the workload against ``sup`` until ``stop`` is set, one operation at a time."""

    def __init__(self, config: ChaosConfig, sup: DynamicSupervisor, history: History,
                 ledger_path: Path) -> None:
        self.config, self.sup, self.history = config, sup, history
        self.ledger_path = str(ledger_path)
        self.registry = Registry.start("default")
        self.rng = workload_rng(config.seed)
        self.anchors = [f"a-{i}" for i in range(config.anchor_children)]
        self.churn: list[str] = []  # churn children started (acknowledged or unknown)
        # churn children whose last start or terminate has an unknown outcome: they may or may
        # not run, so recovery does not wait for them (the checker allows either)
        self.doubtful: set[str] = set()
        self.names: dict[str, bool] = {}  # name -> believed registered
        self.next_churn = 0
        self.holder: Any = None
        # Held for each operation; the nemesis takes it to reconnect this driver (head restart).
        self.driver_lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-client", daemon=True)
        self.error: BaseException | None = None

    # ----------------------------------------------------------------------------- driving
    def start_anchors(self) -> None:
        """The children that run for the whole run; ``ChaosError`` if one cannot start."""
        for tag in self.anchors:
            if self.start_child(tag) != "ok":
                raise ChaosError(f"anchor child {tag} did not start (see the history)")

    def begin(self) -> None:
        self.thread.start()

    def end(self, timeout_s: float) -> None:
        self.stop.set()
        self.thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                with self.driver_lock:
                    self.step()
                self.stop.wait(self.config.op_gap_s)
        except BaseException as exc:  # noqa: B036 -- reported by the runner, not lost
            self.error = exc
            log.exception("chaos_client_failed")

    def live_tags(self) -> list[str]:
        """Children the client knows run (anchors first)."""
        return self.anchors + [tag for tag in self.churn if tag not in self.doubtful]

    def reconnected(self) -> None:
        """After this driver reconnected (a new Ray job): handles from before are useless, and
        the name holder, owned by the old job, is gone (its names stay, without holder)."""
        self.sup = DynamicSupervisor.get(self.config.supervisor)
        self.registry = Registry.start("default")
        self.holder = None

    def step(self) -> None:
        """One operation, chosen by the seeded random source."""
        choice = self.rng.random()
        if choice < 0.15 and len(self.churn) < self.config.churn_children:
            self.next_churn += 1
            self.start_child(f"c-{self.next_churn}")
        elif choice < 0.25 and self.churn:
            self.terminate_child(self.churn[self.rng.randrange(len(self.churn))])
        elif choice < 0.45 and self.config.names:
            name = f"{NAME_PREFIX}n-{self.rng.randrange(self.config.names)}"
            if self.names.get(name):
                self.unregister(name)
            else:
                self.register(name)
        else:
            tags = self.anchors + self.churn
            self.call(tags[self.rng.randrange(len(tags))])

    # --------------------------------------------------------------------------- operations
    def start_child(self, tag: str) -> str:
        op = self.history.invoke("client", "start_child", {"child": tag})
        spec = ChildSpec(id=tag, actor=ChaosChild, restart="permanent", shutdown=2000,
                         args=(self.ledger_path, tag, child_name(self.config, tag),
                               self.config.write_every_s))
        try:
            info = self.sup.start_child(spec, timeout=self.config.op_timeout_s)
        except START_FAILED as exc:
            op.fail({"child": tag, "error": _short(exc)})
            return "fail"
        except Exception as exc:
            return self._unknown(op, {"child": tag}, exc, churn=tag)
        if tag not in self.anchors:
            self.churn.append(tag)
        op.ok({"child": tag, "node": (info.node_id or "")[:12], "epoch": info.epoch})
        return "ok"

    def terminate_child(self, tag: str) -> str:
        op = self.history.invoke("client", "terminate_child", {"child": tag})
        try:
            self.sup.terminate_child(tag, timeout=self.config.op_timeout_s)
        except ChildNotFound as exc:
            self.churn.remove(tag)
            self.doubtful.discard(tag)
            op.fail({"child": tag, "error": _short(exc)})
            return "fail"
        except Exception as exc:
            return self._unknown(op, {"child": tag}, exc, churn=tag)
        self.churn.remove(tag)
        self.doubtful.discard(tag)
        op.ok({"child": tag})
        return "ok"

    def call(self, tag: str) -> str:
        op = self.history.invoke("client", "call", {"child": tag})
        try:
            answer = via(child_name(self.config, tag),
                         timeout=self.config.op_timeout_s).ping.call()
        except Exception as exc:
            return self._unknown(op, {"child": tag}, exc)
        op.ok(answer)
        return "ok"

    def register(self, name: str) -> str:
        op = self.history.invoke("client", "register", {"name": name})
        try:
            holder = self._holder()
            self.registry.register(name, holder, on_holder_death="clear",
                                   timeout=self.config.op_timeout_s)
        except AlreadyRegistered as exc:
            self.names[name] = True
            op.fail({"name": name, "already": True, "error": _short(exc)})
            return "fail"
        except HolderDead as exc:
            self.holder = None
            op.fail({"name": name, "error": _short(exc)})
            return "fail"
        except Exception as exc:
            self.names[name] = True  # perhaps: unregister it next time to settle it
            return self._unknown(op, {"name": name}, exc)
        self.names[name] = True
        op.ok({"name": name})
        return "ok"

    def unregister(self, name: str) -> str:
        op = self.history.invoke("client", "unregister", {"name": name})
        try:
            removed = self.registry.remove(name, timeout=self.config.op_timeout_s)
        except Exception as exc:
            return self._unknown(op, {"name": name}, exc)
        self.names[name] = False
        op.ok({"name": name, "removed": removed})
        return "ok"

    # ----------------------------------------------------------------------------- helpers
    def _holder(self) -> Any:
        if self.holder is None:
            self.holder = NameHolder.remote()
        return self.holder

    def _unknown(self, op: OpenOp, value: dict[str, Any], exc: Exception,
                 churn: str | None = None) -> str:
        if churn is not None:
            self.doubtful.add(churn)
            if churn not in self.churn:
                self.churn.append(churn)  # it may run: terminate it later to settle it
        op.info({**value, "error": _short(exc)})
        return "info"


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
