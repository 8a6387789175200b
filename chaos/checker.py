"""The checker: herd's guarantees, tested over a recorded history and the fencing ledger (pure;
no Ray). Each rule returns readable ``Violation`` records; an empty list means the run kept
every promise:

* ``fencing``: no two live holders of one name. In the ledger, two processes never write with
  the same epoch, and a superseded incarnation makes at most one write (one already in flight
  when it was replaced) after a higher epoch wrote.
* ``children``: no permanent child lost or duplicated. At the end each child whose start was
  acknowledged (and whose terminate was not) runs in exactly one process, is registered with a
  holder and answers; an acknowledged terminate leaves none; an unknown outcome at most one;
  the GCS actor table counts exactly the live child processes.
* ``names``: every acknowledged registration is present at the end, unless an unregister of it
  was acknowledged (then it is absent).
* ``recovery``: after every injected fault, every anchor child answered again within the bound;
  the old incarnations on a node the GCS declared dead stopped once it could talk again.
* ``teardown``: no process of the run is left once the cluster was shut down (unless the run
  left the cluster up: ``skipped``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from herd.chaos.history import Event, History
from herd.chaos.ledger import LedgerLog

__all__ = ["STALE_WRITES_ALLOWED", "Violation", "check"]

#: Writes a superseded incarnation may still land after its successor's first write: the one
#: it had checked its epoch for just before it was replaced.
STALE_WRITES_ALLOWED = 1

#: What an operation's outcome says about the thing it acted on.
PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"


@dataclass(frozen=True)
class Violation:
    rule: str
    subject: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}: {self.detail}"


def check(history: History, ledger: LedgerLog, recovery_bound_s: float) -> list[Violation]:
    """Every violation of every rule, in rule order."""
    return (check_fencing(ledger) + check_children(history) + check_names(history)
            + check_recovery(history, recovery_bound_s) + check_teardown(history))


# ---------------------------------------------------------------------------------- fencing
def check_fencing(ledger: LedgerLog) -> list[Violation]:
    out: list[Violation] = []
    by_tag: dict[str, list[Any]] = defaultdict(list)
    for write in ledger.writes:  # in the order they reached the ledger
        by_tag[write.tag].append(write)
    for tag, writes in sorted(by_tag.items()):
        holder_of: dict[int, int] = {}
        stale: dict[int, list[int]] = defaultdict(list)
        highest = 0
        for write in writes:
            other = holder_of.setdefault(write.epoch, write.pid)
            if other != write.pid:
                out.append(Violation("fencing", tag, f"processes {other} and {write.pid} both "
                                                     f"wrote as holder with epoch {write.epoch}"))
                holder_of[write.epoch] = write.pid
            if write.epoch < highest:
                stale[write.pid].append(write.epoch)
            highest = max(highest, write.epoch)
        for pid, epochs in sorted(stale.items()):
            if len(epochs) > STALE_WRITES_ALLOWED:
                out.append(Violation(
                    "fencing", tag, f"process {pid} kept writing as holder (epochs "
                                    f"{sorted(set(epochs))}) after a newer holder wrote: "
                                    f"{len(epochs)} stale writes, {STALE_WRITES_ALLOWED} allowed"))
    return out


# --------------------------------------------------------------------------------- children
def _fold(history: History, subject_key: str, adds: str, removes: str,
          absent_on_add_fail: bool = True) -> dict[str, str]:
    """What the client's acknowledged operations say about each subject at the end."""
    state: dict[str, str] = {}
    for invoke, outcome in history.completions("client"):
        if invoke.f not in (adds, removes) or not isinstance(invoke.value, dict):
            continue
        subject = invoke.value.get(subject_key)
        if subject is None:
            continue
        kind = outcome.type if outcome is not None else "info"
        if kind == "info":
            state[subject] = UNKNOWN
        elif invoke.f == adds:
            if kind == "ok":
                state[subject] = PRESENT
            elif absent_on_add_fail:
                already = (outcome.value or {}).get("already") if outcome else None
                state[subject] = PRESENT if already else state.get(subject, ABSENT)
        else:
            state[subject] = ABSENT  # removed, or (fail) there was nothing to remove
    return state


def _final(history: History) -> dict[str, Any] | None:
    event = history.last("final")
    return event.value if event is not None and isinstance(event.value, dict) else None


def check_children(history: History) -> list[Violation]:
    final = _final(history)
    if final is None:
        return [Violation("children", "run", "no final observation was recorded")]
    if "error" in final:
        return [Violation("children", "run", f"no final observation: {final['error']}")]
    expected = _fold(history, "child", "start_child", "terminate_child")
    seen: dict[str, dict[str, Any]] = final.get("children", {})
    out: list[Violation] = []
    live_total = 0
    for tag in sorted(set(expected) | set(seen)):
        want = expected.get(tag, ABSENT)
        got = seen.get(tag, {})
        pids = list(got.get("alive_pids", []))
        live_total += len(pids)
        if len(pids) > 1:
            out.append(Violation("children", tag, f"{len(pids)} live incarnations "
                                                  f"(pids {pids}): a duplicate"))
        if want == PRESENT:
            if not pids:
                out.append(Violation("children", tag, "acknowledged permanent child is lost: "
                                                      "no live process"))
            if not got.get("registered"):
                out.append(Violation("children", tag, "no registry record with a holder"))
            if not got.get("answers"):
                out.append(Violation("children", tag, f"does not answer by name: "
                                                      f"{got.get('error', 'no answer')}"))
        elif want == ABSENT and (pids or got.get("registered")):
            out.append(Violation("children", tag, f"terminated (or never started) but still "
                                                  f"present: pids {pids}, registered "
                                                  f"{bool(got.get('registered'))}"))
    gcs_alive = final.get("gcs_alive")
    if gcs_alive is not None and gcs_alive != live_total:
        out.append(Violation("children", "gcs", f"the GCS actor table lists {gcs_alive} live "
                                                f"chaos children, {live_total} processes run"))
    return out


# ------------------------------------------------------------------------------------ names
def check_names(history: History) -> list[Violation]:
    final = _final(history)
    if final is None or "error" in final:
        return []  # reported once, by check_children
    expected = _fold(history, "name", "register", "unregister")
    present: dict[str, bool] = final.get("names", {})
    out: list[Violation] = []
    for name, want in sorted(expected.items()):
        got = present.get(name)
        if want == PRESENT and not got:
            out.append(Violation("names", name, "acknowledged registration is missing"))
        elif want == ABSENT and got:
            out.append(Violation("names", name, "acknowledged unregistration, still present"))
    return out


# --------------------------------------------------------------------------------- recovery
def check_recovery(history: History, bound_s: float) -> list[Violation]:
    faults: dict[int, Event] = {}
    recoveries: dict[int, Event] = {}
    for invoke, outcome in history.completions("nemesis"):
        index = (invoke.value or {}).get("fault") if isinstance(invoke.value, dict) else None
        if index is None:
            continue
        if invoke.f == "recover":
            recoveries[index] = outcome if outcome is not None else invoke
        elif outcome is not None and outcome.type != "fail":  # a fault that was injected
            faults[index] = invoke
    out: list[Violation] = []
    for index, fault in sorted(faults.items()):
        subject = f"fault {index} ({fault.f})"
        recovery = recoveries.get(index)
        if recovery is None or recovery.type == "invoke":
            out.append(Violation("recovery", subject, "no recovery was recorded"))
            continue
        value = recovery.value if isinstance(recovery.value, dict) else {}
        if value.get("zombies"):
            out.append(Violation("fencing", subject, f"superseded incarnations (pids "
                                                     f"{value['zombies']}) still ran after "
                                                     f"their node could talk again"))
        seconds = value.get("seconds")
        if recovery.type != "ok" or seconds is None or seconds > bound_s:
            waiting = value.get("missing", [])
            out.append(Violation("recovery", subject, f"not recovered within {bound_s:g} s "
                                                      f"(took {seconds}, still waiting for "
                                                      f"{waiting})"))
    return out


# --------------------------------------------------------------------------------- teardown
def check_teardown(history: History) -> list[Violation]:
    event = history.last("teardown")
    if event is None or not isinstance(event.value, dict):
        return [Violation("teardown", "run", "no teardown was recorded")]
    left = event.value.get("leftover_pids", [])
    if left:
        return [Violation("teardown", "processes", f"{len(left)} processes survived the "
                                                   f"cluster shutdown: {left}")]
    return []
