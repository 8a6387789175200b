"""``herd bench crdt``: how the delta-state CRDTs of :mod:`herd.platform.crdt` compare with
plain Python doing the same job, and how much smaller deltas are than full states. No Ray.

* ORSet merge of two replicas of ``elements`` each, overlapping by half, against ``set``
  union. Two shapes of overlap: the shared half was synced before the replicas diverged (the
  common replication case: both hold the same dots), or both replicas added it concurrently
  (every shared element ends up with two dots).
* AWLWWMap merge of two replicas of ``elements`` keys each, the shared half written
  concurrently on both sides, against a ``dict`` update keeping the greater timestamp per key.
* Bytes (``to_bytes``) of the delta of a ``change``-operation edit (half adds / puts, half
  removes) against the full state it applies to.

Each merge is timed ``repeats`` times on a fresh copy of the receiver (copies are not timed,
the garbage collector is paused while timing); the median is reported. ``herd/plain`` is the
ratio of medians.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

from herd.cli.bench.report import BenchReport
from herd.platform.clocks import HLCTimestamp
from herd.platform.crdt import CRDT, AWLWWMap, ORSet

T = TypeVar("T")
C = TypeVar("C", bound=CRDT)


def run(elements: int = 100_000, repeats: int = 5, change: int = 10) -> BenchReport:
    """Run the three measurements; ``elements`` per replica, median of ``repeats``."""
    half = elements // 2
    rows: list[dict[str, Any]] = []
    checks: dict[str, bool] = {}

    synced_a, synced_b = _orset_pair(elements, synced=True)
    rows.append(_orset_merge_row("ORSet merge, shared half synced", synced_a, synced_b,
                                 repeats, checks))
    rows.append(_orset_merge_row("ORSet merge, shared half added concurrently",
                                 *_orset_pair(elements, synced=False), repeats, checks))
    map_a, map_b = _map_pair(elements)
    rows.append(_map_merge_row("AWLWWMap merge, shared half written concurrently", map_a,
                               map_b, repeats, checks))

    merged_set = synced_a.copy().merge(synced_b)
    rows.append(_size_row(f"ORSet delta of {change} ops on {len(merged_set)} elements",
                          merged_set, lambda s, n: s.add(_key(elements + half + n)),
                          lambda s, n: s.remove(_key(n)), change))
    merged_map = map_a.copy().merge(map_b)
    stamp = HLCTimestamp(elements * 3, 0, "a")
    rows.append(_size_row(f"AWLWWMap delta of {change} ops on {len(merged_map)} keys",
                          merged_map,
                          lambda m, n: m.put(_key(n), "changed", stamp),
                          lambda m, n: m.remove(_key(half + n)), change))
    return BenchReport(
        name="crdt", rows=rows,
        params={"elements_per_replica": elements, "overlap": half, "repeats": repeats,
                "change_ops": change, "results_match_plain": checks},
        notes=["herd/plain: median merge time of herd over the plain-Python baseline "
               "(garbage collector paused while timing, as timeit does)",
               "per_s: elements (or keys) of both inputs joined per second by herd",
               "delta/full: to_bytes size of the joined deltas of the change over the full "
               "state"])


def _key(n: int) -> str:
    return f"e{n:07d}"


def _orset_pair(elements: int, synced: bool) -> tuple[ORSet, ORSet]:
    """Replica a holds keys [0, elements), b holds [elements/2, elements*3/2); the shared
    [elements/2, elements) is added on a and merged into b, or added on both."""
    half = elements // 2
    a, b = ORSet("a"), ORSet("b")
    for n in range(half, elements):
        a.add(_key(n))
        if not synced:
            b.add(_key(n))
    if synced:
        b.merge(a)
    for n in range(half):
        a.add(_key(n))
    for n in range(elements, elements + half):
        b.add(_key(n))
    return a, b


def _map_pair(elements: int) -> tuple[AWLWWMap, AWLWWMap]:
    """a puts keys [0, elements) at wall n, b puts [elements/2, elements*3/2) at wall n+1."""
    a, b = AWLWWMap("a"), AWLWWMap("b")
    for n in range(elements):
        a.put(_key(n), n, HLCTimestamp(n, 0, "a"))
    for n in range(elements // 2, elements + elements // 2):
        b.put(_key(n), -n, HLCTimestamp(n + 1, 0, "b"))
    return a, b


def _median_s(setup: Callable[[], T], action: Callable[[T], object], repeats: int) -> float:
    """Median seconds of ``action(setup())`` over ``repeats`` runs, setup not timed. The
    garbage collector is paused while timing, as ``timeit`` does: otherwise a full collection
    over the hundreds of thousands of live objects of the inputs lands at random in some runs."""
    samples = []
    for _ in range(repeats):
        subject = setup()
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            action(subject)
            samples.append(time.perf_counter() - started)
        finally:
            gc.enable()
    return statistics.median(samples)


def _timing_row(case: str, herd_s: float, plain_s: float, inputs: int) -> dict[str, Any]:
    return {"case": case, "herd_ms": herd_s * 1e3, "plain_ms": plain_s * 1e3,
            "herd/plain": herd_s / max(plain_s, 1e-9), "per_s": round(inputs / herd_s)}


def _orset_merge_row(case: str, a: ORSet, b: ORSet, repeats: int,
                     checks: dict[str, bool]) -> dict[str, Any]:
    plain_a, plain_b = set(a.value()), set(b.value())
    herd_s = _median_s(a.copy, lambda x: x.merge(b), repeats)
    plain_s = _median_s(plain_a.copy, lambda x: x.update(plain_b), repeats)
    checks[case] = a.copy().merge(b).value() == plain_a | plain_b
    return _timing_row(case, herd_s, plain_s, len(a) + len(b))


def _map_merge_row(case: str, a: AWLWWMap, b: AWLWWMap, repeats: int,
                   checks: dict[str, bool]) -> dict[str, Any]:
    plain_a = {key: (ts, value) for key, value, ts in _entries(a)}
    plain_b = {key: (ts, value) for key, value, ts in _entries(b)}
    herd_s = _median_s(a.copy, lambda x: x.merge(b), repeats)
    plain_s = _median_s(plain_a.copy, lambda x: _lww_update(x, plain_b), repeats)
    expected = plain_a.copy()
    _lww_update(expected, plain_b)
    checks[case] = a.copy().merge(b).value() == {k: v for k, (_, v) in expected.items()}
    return _timing_row(case, herd_s, plain_s, len(a) + len(b))


def _entries(state: AWLWWMap) -> list[tuple[str, Any, HLCTimestamp]]:
    """(key, value, timestamp) of a map whose keys each hold one write (the inputs here)."""
    return [(key, value, HLCTimestamp(ts[0], ts[1], ts[2]))
            for key, [[_, _, [*ts, value]]] in state.to_dict()["store"]]


def _lww_update(mine: dict[str, tuple[HLCTimestamp, Any]],
                theirs: dict[str, tuple[HLCTimestamp, Any]]) -> None:
    """The plain baseline: per key, keep the write with the greater timestamp."""
    for key, write in theirs.items():
        current = mine.get(key)
        if current is None or write[0] > current[0]:
            mine[key] = write


def _size_row(case: str, state: C, add: Callable[[C, int], Any],
              remove: Callable[[C, int], Any], change: int) -> dict[str, Any]:
    """Bytes of the joined deltas of ``change`` operations (by replica "a") against the full
    state after."""
    replica = state.copy("a")
    delta = type(replica)()
    for n in range(change):
        delta.merge(add(replica, n) if n % 2 == 0 else remove(replica, n))
    delta_bytes, full_bytes = len(delta.to_bytes()), len(replica.to_bytes())
    return {"case": case, "delta_bytes": delta_bytes, "full_bytes": full_bytes,
            "delta/full": delta_bytes / full_bytes}
