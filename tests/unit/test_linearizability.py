"""The linearizability checker: known non-linearizable histories (stale read, lost write,
double lock grant) fail it with their window; correct concurrent histories, including ones with
unknown outcomes, pass; a 10 000-operation history checks in seconds."""

from __future__ import annotations

import math
import random
import time

from herd.chaos.history import History
from herd.chaos.linearizability import Operation, check_operations, operations_from_history
from herd.chaos.linearizability_models import KV_MODEL, LOCK_MODEL, UNKNOWN


def op(i: int, client: str, call: float, ret: float, input: tuple, output: object) -> Operation:
    return Operation(i, client, call, ret, input, output)


def test_sequential_kv_history_is_linearizable() -> None:
    history = [op(1, "a", 0, 1, ("put", "k", 1), "ok"), op(2, "b", 2, 3, ("get", "k"), 1),
               op(3, "a", 4, 5, ("cas", "k", 1, 2), True), op(4, "b", 6, 7, ("get", "k"), 2),
               op(5, "a", 8, 9, ("cas", "k", 1, 3), False),
               op(6, "b", 10, 11, ("delete", "k"), "ok"),
               op(7, "a", 12, 13, ("get", "k"), None)]
    assert check_operations(KV_MODEL, history).ok


def test_compare_and_set_on_versions() -> None:
    history = [op(1, "a", 0, 1, ("put", "k", "x"), "ok"),
               op(2, "a", 2, 3, ("vcas", "k", 1, "y"), True),
               op(3, "b", 4, 5, ("vcas", "k", 1, "z"), False), op(4, "b", 6, 7, ("get", "k"), "y")]
    assert check_operations(KV_MODEL, history).ok
    wrong = history[:2] + [op(3, "b", 4, 5, ("vcas", "k", 1, "z"), True)]
    assert not check_operations(KV_MODEL, wrong).ok, "two writers won the same version"


def test_a_lock_re_granted_to_its_holder_after_its_lease_ran_out() -> None:
    history = [op(1, "a", 0, 1, ("acquire", "L", "a"), (True, 1, None)),
               op(2, "a", 2, 3, ("acquire", "L", "a"), (True, 1, None)),
               op(3, "a", 4, 5, ("acquire", "L", "a"), (True, 2, "a"))]
    assert check_operations(LOCK_MODEL, history).ok


def test_stale_read_fails_with_its_window() -> None:
    history = [op(1, "a", 0, 1, ("put", "k", 1), "ok"), op(2, "a", 2, 3, ("put", "k", 2), "ok"),
               op(3, "b", 4, 5, ("get", "k"), 1)]
    result = check_operations(KV_MODEL, history)
    assert not result.ok and result.failed_partition == "k"
    assert any("get('k') -> 1" in line for line in result.window)


def test_lost_write_fails() -> None:
    history = [op(1, "a", 0, 1, ("put", "k", 1), "ok"), op(2, "b", 0.5, 2, ("put", "j", 5), "ok"),
               op(3, "c", 3, 4, ("get", "k"), None)]
    result = check_operations(KV_MODEL, history)
    assert not result.ok and result.failed_partition == "k"


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    history = [op(1, "a", 0, 10, ("put", "k", 1), "ok"), op(2, "b", 1, 9, ("put", "k", 2), "ok"),
               op(3, "c", 11, 12, ("get", "k"), 1)]
    assert check_operations(KV_MODEL, history).ok


def test_unknown_outcome_may_take_effect_or_not() -> None:
    took = [op(1, "a", 0, math.inf, ("put", "k", 7), UNKNOWN), op(2, "b", 5, 6, ("get", "k"), 7)]
    never = [op(1, "a", 0, math.inf, ("put", "k", 7), UNKNOWN),
             op(2, "b", 5, 6, ("get", "k"), None)]
    assert check_operations(KV_MODEL, took).ok and check_operations(KV_MODEL, never).ok
    flicker = never + [op(3, "b", 7, 8, ("get", "k"), 7), op(4, "b", 9, 10, ("get", "k"), None)]
    assert not check_operations(KV_MODEL, flicker).ok, "it cannot happen and then un-happen"


def test_an_unknown_write_cannot_be_read_before_it_was_called() -> None:
    history = [op(1, "b", 0, 1, ("get", "k"), 7), op(2, "a", 2, math.inf, ("put", "k", 7), UNKNOWN)]
    assert not check_operations(KV_MODEL, history).ok


def test_double_lock_grant_fails() -> None:
    history = [op(1, "a", 0, 1, ("acquire", "L", "a"), (True, 1, None)),
               op(2, "b", 2, 3, ("acquire", "L", "b"), (True, 2, None))]
    result = check_operations(LOCK_MODEL, history)
    assert not result.ok and len(result.window) >= 1


def test_lock_handover_with_release_and_with_an_expired_lease() -> None:
    history = [op(1, "a", 0, 1, ("acquire", "L", "a"), (True, 1, None)),
               op(2, "b", 2, 3, ("acquire", "L", "b"), (False, 0, None)),
               op(3, "a", 4, 5, ("release", "L", "a"), "released"),
               op(4, "b", 6, 7, ("acquire", "L", "b"), (True, 2, None)),
               op(5, "c", 8, 9, ("acquire", "L", "c"), (True, 3, "b")),
               op(6, "b", 10, 11, ("release", "L", "b"), "not_holder")]
    assert check_operations(LOCK_MODEL, history).ok


def test_fencing_tokens_must_grow() -> None:
    history = [op(1, "a", 0, 1, ("acquire", "L", "a"), (True, 5, None)),
               op(2, "a", 2, 3, ("release", "L", "a"), "released"),
               op(3, "b", 4, 5, ("acquire", "L", "b"), (True, 5, None))]
    assert not check_operations(LOCK_MODEL, history).ok


def test_operations_from_history_reads_invoke_ok_fail_info() -> None:
    history = History()
    put = history.invoke("c1", "put", ["put", "k", 1])
    put.ok("ok")
    lost = history.invoke("c2", "put", ["put", "k", 2])
    lost.fail("refused")
    unknown = history.invoke("c2", "put", ["put", "k", 3])
    unknown.info("timeout")
    history.invoke("c1", "get", ["get", "k"]).ok(3)
    operations = operations_from_history(history, ["put", "get"])
    assert [o.input for o in operations] == [("put", "k", 1), ("put", "k", 3), ("get", "k")]
    assert operations[1].output is UNKNOWN and operations[1].ret == math.inf
    assert check_operations(KV_MODEL, operations).ok


def correct_history(count: int, clients: int, keys: int, seed: int) -> list[Operation]:
    """Clients on a real atomic register: each operation takes effect at a random point inside
    its interval; a few outcomes are forgotten (unknown)."""
    rng = random.Random(seed)
    pending: list[tuple[float, float, float, str, tuple]] = []
    clock = {f"c{i}": 0.0 for i in range(clients)}
    for i in range(count):
        client = f"c{i % clients}"
        call = clock[client] + rng.random()
        effect = call + rng.random()
        ret = effect + rng.random()
        clock[client] = ret
        key = f"k{rng.randrange(keys)}"
        choice = rng.random()
        if choice < 0.4:
            inp: tuple = ("get", key)
        elif choice < 0.8:
            inp = ("put", key, rng.randrange(5))
        else:
            inp = ("cas", key, rng.randrange(5), rng.randrange(5))
        pending.append((effect, call, ret, client, inp))
    state: dict[str, object] = {}
    operations = []
    for position, (_, call, ret, client, inp) in enumerate(sorted(pending)):
        current = state.get(inp[1])
        if inp[0] == "get":
            output: object = current
        elif inp[0] == "put":
            state[inp[1]], output = inp[2], "ok"
        else:
            output = current == inp[2]
            if output:
                state[inp[1]] = inp[3]
        if rng.random() < 0.01:
            operations.append(Operation(position, client, call, math.inf, inp, UNKNOWN))
        else:
            operations.append(Operation(position, client, call, ret, inp, output))
    return operations


def test_ten_thousand_operations_check_in_seconds() -> None:
    operations = correct_history(10_000, clients=8, keys=10, seed=1)
    started = time.monotonic()
    result = check_operations(KV_MODEL, operations)
    elapsed = time.monotonic() - started
    assert result.ok and result.operations == 10_000
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_a_corrupted_read_in_a_long_history_is_found() -> None:
    operations = correct_history(2_000, clients=5, keys=4, seed=2)
    reads = [o for o in operations if o.input[0] == "get" and o.output is not UNKNOWN]
    victim = reads[len(reads) // 2]
    operations[operations.index(victim)] = Operation(
        victim.id, victim.client, victim.call, victim.ret, victim.input, "never-written")
    result = check_operations(KV_MODEL, operations)
    assert not result.ok and result.failed_partition == victim.input[1]
    assert any("never-written" in line for line in result.window)
