"""The lightweight children runtime of one host, in a plain event loop (no Ray)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from herd.supervisors.errors import ChildNotFound, StartChildError
from herd.supervisors.lightweight.runtime import STUCK, HostRuntime
from herd.supervisors.otp.exit import KILLED, NORMAL, SHUTDOWN, exit


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.terminated: list[str] = []

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    async def slow_incr(self, delay: float) -> int:
        current = self.value
        await asyncio.sleep(delay)
        self.value = current + 1
        return self.value

    def fail(self) -> None:
        raise ValueError("boom")

    def leave(self, reason: str) -> str:
        exit(reason)
        return "left"

    def terminate(self, reason: str) -> None:
        TERMINATED.append(reason)


TERMINATED: list[str] = []


class Looper:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.ticks = 0

    async def run(self) -> None:
        if self.mode == "return":
            return
        if self.mode == "raise":
            raise RuntimeError("loop broke")
        if self.mode == "exit":
            exit("shutdown:done")
            await asyncio.sleep(10)
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)


class Stubborn:
    """Swallows the cancellations of stop (graceful, then forced); gives in to the third, so
    that the test's event loop can close."""

    async def run(self) -> None:
        for _ in range(2):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue
        await asyncio.sleep(10)


class Broken:
    def __init__(self) -> None:
        raise KeyError("no config")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _exits(runtime: HostRuntime, after: int = 0) -> list[tuple[int, str, int, str]]:
    return await runtime.next_exits(after, 2.0)


def test_calls_to_one_child_are_serialised_and_children_run_concurrently() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (), {})
        runtime.start("b", Counter, (), {})
        started = time.monotonic()
        # Without a mailbox, 5 concurrent read-sleep-write calls would all read 0.
        results = await asyncio.gather(
            *(runtime.call("a", "slow_incr", (0.05,), {}) for _ in range(5)),
            *(runtime.call("b", "slow_incr", (0.05,), {}) for _ in range(5)))
        elapsed = time.monotonic() - started
        assert sorted(results[:5]) == [1, 2, 3, 4, 5]
        assert sorted(results[5:]) == [1, 2, 3, 4, 5]
        assert 0.25 <= elapsed < 0.45  # a and b in parallel, each one call at a time
        assert await runtime.call("a", "incr", (10,), {}) == 15
    run(main())


def test_a_method_that_raises_returns_the_error_and_crashes_the_child() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        inc = runtime.start("a", Counter, (), {})
        with pytest.raises(ValueError, match="boom"):
            await runtime.call("a", "fail", (), {})
        assert "a" not in runtime.children
        assert await _exits(runtime) == [(1, "a", inc, "error: ValueError: boom")]
    run(main())


def test_crash_on_error_false_keeps_the_child() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (5,), {}, crash_on_error=False)
        with pytest.raises(ValueError):
            await runtime.call("a", "fail", (), {})
        assert await runtime.call("a", "incr", (), {}) == 6
        assert runtime.children["a"].errors == 1
        assert await runtime.next_exits(0, 0.05) == []
    run(main())


def test_exit_ends_only_the_calling_child() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (), {})
        inc_b = runtime.start("b", Counter, (), {})
        assert await runtime.call("b", "leave", ("shutdown:bye",), {}) == "left"
        assert await _exits(runtime) == [(1, "b", inc_b, "shutdown:bye")]
        assert await runtime.call("a", "incr", (), {}) == 1
        with pytest.raises(ChildNotFound):
            await runtime.call("b", "incr", (), {})  # a normal exit: nobody waits for a restart
    run(main())


@pytest.mark.parametrize(("mode", "reason"), [("return", NORMAL),
                                              ("raise", "error: RuntimeError: loop broke"),
                                              ("exit", "shutdown:done")])
def test_the_run_loop_ending_is_the_childs_exit(mode: str, reason: str) -> None:
    async def main() -> None:
        runtime = HostRuntime()
        inc = runtime.start("loop", Looper, (mode,), {})
        assert await _exits(runtime) == [(1, "loop", inc, reason)]
        assert runtime.children == {}
    run(main())


def test_a_call_during_a_restart_reaches_the_new_incarnation() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (), {})
        with pytest.raises(ValueError):
            await runtime.call("a", "fail", (), {})
        waiting = asyncio.ensure_future(runtime.call("a", "incr", (), {}))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        runtime.start("a", Counter, (100,), {})  # what its supervisor does
        assert await waiting == 101
    run(main())


def test_calls_queued_behind_a_crash_go_to_the_next_incarnation() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (), {})
        first = asyncio.ensure_future(runtime.call("a", "slow_incr", (0.05,), {}))
        await asyncio.sleep(0)
        crash = asyncio.ensure_future(runtime.call("a", "fail", (), {}))
        later = asyncio.ensure_future(runtime.call("a", "incr", (), {}))
        assert await first == 1
        with pytest.raises(ValueError):
            await crash
        await asyncio.sleep(0.02)
        runtime.start("a", Counter, (7,), {})
        assert await later == 8
    run(main())


def test_stop_runs_terminate_after_the_call_in_progress() -> None:
    async def main() -> None:
        TERMINATED.clear()
        runtime = HostRuntime()
        inc = runtime.start("a", Counter, (), {})
        call = asyncio.ensure_future(runtime.call("a", "slow_incr", (0.05,), {}))
        await asyncio.sleep(0)
        assert await runtime.stop("a", inc, SHUTDOWN, 1.0) == SHUTDOWN
        assert await call == 1
        assert TERMINATED == [SHUTDOWN]
        assert await _exits(runtime) == [(1, "a", inc, SHUTDOWN)]
        assert await runtime.stop("a", inc, SHUTDOWN, 1.0) is None  # already gone
    run(main())


def test_stop_cancels_a_run_loop_and_a_stubborn_child_is_reported_stuck() -> None:
    async def main() -> None:
        runtime = HostRuntime(kill_grace_s=0.1)
        inc = runtime.start("loop", Looper, ("forever",), {})
        await asyncio.sleep(0.01)
        assert await runtime.stop("loop", inc, SHUTDOWN, 1.0) == SHUTDOWN
        inc = runtime.start("stubborn", Stubborn, (), {})
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await runtime.stop("stubborn", inc, SHUTDOWN, 0.1) == STUCK
        assert time.monotonic() - started < 1.0
        events = await _exits(runtime)
        assert [e[1:] for e in events] == [("loop", 1, SHUTDOWN), ("stubborn", inc, KILLED)]
    run(main())


def test_kill_cancels_the_call_in_progress() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        inc = runtime.start("a", Counter, (), {})
        call = asyncio.ensure_future(runtime.call("a", "slow_incr", (5.0,), {}))
        await asyncio.sleep(0.01)
        assert await runtime.kill("a", inc) == KILLED
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await _exits(runtime) == [(1, "a", inc, KILLED)]
    run(main())


def test_bad_starts_leave_no_record() -> None:
    async def main() -> None:
        runtime = HostRuntime(max_children=2)
        with pytest.raises(StartChildError, match="its constructor raised KeyError: 'no config'"):
            runtime.start("x", Broken, (), {})
        runtime.start("a", Counter, (), {})
        runtime.start("b", Counter, (), {})
        with pytest.raises(StartChildError, match="max_children_per_host=2"):
            runtime.start("c", Counter, (), {})
        with pytest.raises(StartChildError, match="already runs"):
            runtime.start("a", Counter, (), {})
        assert sorted(runtime.children) == ["a", "b"]
        assert runtime.starts == 2
    run(main())


def test_status_counts_calls_and_estimates_memory() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("small", Counter, (), {})
        runtime.start("big", Counter, (), {})
        runtime.children["big"].instance.blob = [str(i) * 10 for i in range(1000)]
        for _ in range(3):
            await runtime.call("small", "incr", (), {})
        status = runtime.status()
        by_key = {s["key"]: s for s in status["by_child"]}
        assert by_key["small"]["calls"] == 3 and by_key["big"]["calls"] == 0
        assert by_key["big"]["memory_bytes"] > 50_000 > by_key["small"]["memory_bytes"]
        assert status["calls"] == 3 and status["children"] == 2
    run(main())


def test_calls_to_private_or_unknown_methods_fail_without_crashing() -> None:
    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("a", Counter, (), {})
        with pytest.raises(AttributeError):
            await runtime.call("a", "_secret", (), {})
        with pytest.raises(AttributeError):
            await runtime.call("a", "nope", (), {})
        assert await runtime.call("a", "incr", (), {}) == 1
    run(main())


def test_calls_to_expected_children_wait_for_their_own_start_only() -> None:
    """Thousands of calls waiting for expected children (a failover: the registry names the
    host before the children start) are each woken by their own child's start, not by every
    start: starting children with a call waiting on each costs about what starting them and
    then calling them does (before: every start woke every waiting call, 1.7 s against 0.2 s
    for 10 000 here)."""
    async def start_all(runtime: HostRuntime, keys: list[str]) -> None:
        for first in range(0, len(keys), 200):  # as the host does: yield every 200 starts
            for key in keys[first:first + 200]:
                runtime.start(key, Counter, (), {})
            await asyncio.sleep(0)

    async def timed(waiting_first: bool) -> float:
        runtime = HostRuntime(max_children=10_000)
        keys = [f"c{i}" for i in range(10_000)]
        # CPU time of this process, not wall time: other processes on a loaded machine must not
        # decide the ratio (the old wake-everyone loop cost ~8x the CPU of the plain path)
        began = time.process_time()
        if waiting_first:
            runtime.expect(keys)
            waiting = [asyncio.ensure_future(runtime.call(k, "incr", (), {})) for k in keys]
            await asyncio.sleep(0)
            assert not any(w.done() for w in waiting)
            await start_all(runtime, keys)
        else:
            await start_all(runtime, keys)
            waiting = [asyncio.ensure_future(runtime.call(k, "incr", (), {})) for k in keys]
        assert await asyncio.gather(*waiting) == [1] * len(keys)
        return time.process_time() - began

    async def main() -> None:
        # the old wake-everyone loop cost ~8x; a collection landing in one run costs up to ~3x
        assert await timed(True) < 5 * await timed(False)
        runtime = HostRuntime()
        with pytest.raises(ChildNotFound):  # not expected: fails at once
            await runtime.call("other", "incr", (), {})
    run(main())
