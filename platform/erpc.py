"""Erlang ``erpc``-style calls to nodes: ``call``, ``cast``, ``multicall``, ``spawn_on``.

A target is a node id or a label selector (``{"region": "eu"}``). Each node runs one executor
actor, ``herd/erpc/<node_id>`` (detached, hard-pinned, no CPU, created on first use), that runs
the shipped function in a thread (or awaits it, if it is a coroutine function) under the
caller's remaining deadline (``herd.platform.deadline``): an erpc call made inside a called
function inherits what is left. ``multicall`` sends to every target at once and waits once, for
one deadline, answering ``(results by node, bad nodes with reasons)``.

Each calling process keeps a circuit breaker per target node (``herd.platform.breaker``):
timeouts and dead executors count as failures (an exception raised by the function itself does
not). Calls declared ``idempotent`` are retried with exponential backoff and full jitter while
the deadline allows. These names live here, not in ``herd.platform.rpc``, whose ``call`` (an
actor method with a deadline) predates them.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from herd.platform import rpc
from herd.platform.breaker import BreakerConfig, BreakerOpen, CircuitBreaker, RetryPolicy
from herd.platform.control_plane import control_plane_options, pinned_options, require_ray
from herd.platform.deadline import check_timeout, remaining, scope
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.gcs import NodeInfo, nodes
from herd.platform.logging import get_logger

ACTOR_PREFIX = "herd/erpc/"
Target = str | Mapping[str, str]

log = get_logger("herd.erpc")

__all__ = ["BadNode", "MulticallResult", "NoMatchingNodes", "RpcExecutor", "Target",
           "UnknownNode", "breaker_state", "call", "cast", "configure", "multicall",
           "resolve", "spawn_on"]


class UnknownNode(ConfigError):
    """A node id that is not a live node of the cluster."""


class NoMatchingNodes(ConfigError):
    """A target list that is empty, or a label selector no live node matches."""


@dataclass(frozen=True)
class BadNode:
    reason: str  # "timeout" | "breaker_open" | "node_down" | "error"
    detail: str


@dataclass
class MulticallResult:
    results: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, BadNode] = field(default_factory=dict)


def _run_scoped(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                budget_s: float) -> Any:
    with scope(budget_s):
        return fn(*args, **kwargs)


@ray.remote
class RpcExecutor:
    """Runs shipped functions on its node (async: calls run concurrently)."""

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  budget_s: float) -> Any:
        if inspect.iscoroutinefunction(fn):
            with scope(budget_s):
                return await asyncio.wait_for(fn(*args, **kwargs), budget_s)
        return await rpc.blocking(_run_scoped, fn, args, kwargs, budget_s)

    async def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


class _Process:
    """This process's executor handles, breakers and policies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executors: dict[str, Any] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.breaker_config = BreakerConfig()
        self.retry = RetryPolicy()
        self.rng = random.Random()

    def executor(self, node_id: str) -> Any:
        with self.lock:
            handle = self.executors.get(node_id)
        if handle is None:
            handle = RpcExecutor.options(**control_plane_options(
                f"{ACTOR_PREFIX}{node_id}", node_id=node_id)).remote()
            with self.lock:
                handle = self.executors.setdefault(node_id, handle)
        return handle

    def breaker(self, node_id: str) -> CircuitBreaker:
        with self.lock:
            breaker = self.breakers.get(node_id)
            if breaker is None:
                breaker = self.breakers[node_id] = CircuitBreaker(self.breaker_config)
            return breaker

    def admit(self, node_id: str) -> None:
        now = time.monotonic()
        breaker = self.breaker(node_id)
        with self.lock:
            if not breaker.allow(now):
                raise BreakerOpen(node_id, breaker.retry_in(now))

    def record(self, node_id: str, ok: bool) -> None:
        breaker = self.breaker(node_id)
        with self.lock:
            (breaker.record_success if ok else breaker.record_failure)(time.monotonic())


_process = _Process()


def configure(breaker: BreakerConfig | None = None, retry: RetryPolicy | None = None) -> None:
    """Set this process's breaker thresholds (resetting every breaker) and retry policy."""
    with _process.lock:
        if breaker is not None:
            _process.breaker_config = breaker
            _process.breakers.clear()
        if retry is not None:
            _process.retry = retry


def breaker_state(node_id: str) -> str:
    breaker = _process.breaker(node_id)
    with _process.lock:
        return breaker.state(time.monotonic())


def _matches(node: NodeInfo, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(key) == value for key, value in selector.items())


def resolve(targets: Target | Sequence[Target]) -> list[str]:
    """Node ids of ``targets`` (a node id, a selector, or a list of them), live nodes only.
    ``UnknownNode`` for an id that is no live node, ``NoMatchingNodes`` when none is left."""
    require_ray()
    listed = [targets] if isinstance(targets, (str, Mapping)) else list(targets)
    if not listed:
        raise NoMatchingNodes("needs at least one node", source="erpc", field="nodes",
                              value=targets)
    alive = [n for n in nodes() if n.alive]
    found: list[str] = []
    for target in listed:
        if isinstance(target, str):
            if target not in {n.node_id for n in alive}:
                raise UnknownNode("not a live node of the cluster", source="erpc",
                                  field="node", value=target)
            matched = [target]
        elif isinstance(target, Mapping):
            matched = [n.node_id for n in alive if _matches(n, target)]
        else:
            raise ConfigError("must be a node id or a label selector", source="erpc",
                              field="node", value=target)
        if not matched:
            raise NoMatchingNodes("no live node matches the selector", source="erpc",
                                  field="node", value=target)
        found += [m for m in matched if m not in found]
    return found


def _failure(exc: BaseException) -> BadNode | None:
    """How a failed call counts for the target's breaker (None: the function itself raised)."""
    if isinstance(exc, RayTaskError):
        return None
    if isinstance(exc, (HerdTimeoutError, GetTimeoutError)):
        return BadNode("timeout", str(exc))
    if isinstance(exc, RayActorError):
        return BadNode("node_down", type(exc).__name__)
    return None


def _check_fn(fn: Any) -> None:
    if not callable(fn):
        raise ConfigError("must be callable", source="erpc", field="fn", value=fn)


def _once(node_id: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          budget: float) -> Any:
    _process.admit(node_id)
    ref = _process.executor(node_id).run.remote(fn, args, kwargs, budget)
    try:
        result = rpc.get(ref, timeout=budget, what=f"erpc call on {node_id[:12]}")
    except Exception as exc:
        _process.record(node_id, _failure(exc) is None)
        raise
    _process.record(node_id, True)
    return result


def call(node: Target, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
         idempotent: bool = False, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on ``node`` (a selector picks the first matching node whose
    breaker admits calls) and return its result. Raises what ``fn`` raised, ``BreakerOpen``, or
    ``HerdTimeoutError`` once the deadline (``timeout``, cut to the inherited one) passes.
    ``idempotent`` calls are retried after timeouts, dead executors and open breakers."""
    _check_fn(fn)
    budget = remaining(None if timeout is None else check_timeout(timeout),
                       rpc.DEFAULT_TIMEOUT_S)
    deadline = time.monotonic() + budget
    candidates = resolve(node)
    attempts = _process.retry.attempts if idempotent else 1
    for attempt in range(1, attempts + 1):
        chosen = _pick(candidates)
        try:
            return _once(chosen, fn, args, kwargs, max(deadline - time.monotonic(), 0.001))
        except (BreakerOpen, HerdTimeoutError, RayActorError) as exc:
            pause = _process.retry.delay(attempt, _process.rng)
            if attempt == attempts or time.monotonic() + pause >= deadline:
                raise
            log.info("erpc_retry", node_id=chosen, attempt=attempt, error=repr(exc))
            time.sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _pick(candidates: list[str]) -> str:
    now = time.monotonic()
    for node_id in candidates:
        breaker = _process.breaker(node_id)
        with _process.lock:
            if breaker.state(now) != "open":
                return node_id
    return candidates[0]


def cast(node: Target, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` on every node ``node`` names, without waiting (returns at once; errors are
    not reported). ``BreakerOpen`` when a target's breaker is open."""
    _check_fn(fn)
    budget = remaining(None, rpc.DEFAULT_TIMEOUT_S)
    for node_id in resolve(node):
        _process.admit(node_id)
        _process.executor(node_id).run.remote(fn, args, kwargs, budget)


def multicall(targets: Target | Sequence[Target], fn: Callable[..., Any], *args: Any,
              timeout: float | None = None, **kwargs: Any) -> MulticallResult:
    """Run ``fn`` on every target node under one deadline; never raises for a node's failure:
    a node that failed, timed out or was refused by its breaker is in ``bad`` with why."""
    _check_fn(fn)
    budget = remaining(None if timeout is None else check_timeout(timeout),
                       rpc.DEFAULT_TIMEOUT_S)
    deadline = time.monotonic() + budget
    outcome = MulticallResult()
    refs: dict[str, Any] = {}
    for node_id in resolve(targets):
        try:
            _process.admit(node_id)
        except BreakerOpen as exc:
            outcome.bad[node_id] = BadNode("breaker_open", str(exc))
            continue
        refs[node_id] = _process.executor(node_id).run.remote(fn, args, kwargs, budget)
    if refs:
        ray.wait(list(refs.values()), num_returns=len(refs),
                 timeout=max(deadline - time.monotonic(), 0.0))
    for node_id, ref in refs.items():
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            ray.cancel(ref, force=False)
            outcome.bad[node_id] = BadNode("timeout", f"no answer within {budget:.3f} s")
            _process.record(node_id, False)
            continue
        try:
            outcome.results[node_id] = rpc.get(ref, timeout=0.1, what="erpc multicall")
        except Exception as exc:
            failure = _failure(exc)
            outcome.bad[node_id] = failure or BadNode("error", repr(exc))
            _process.record(node_id, failure is None)
            continue
        _process.record(node_id, True)
    return outcome


def spawn_on(node: Target, cls: Any, *args: Any, timeout: float | None = None,
             options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Start an actor of ``cls`` (a class or a ``ray.remote`` class) pinned to ``node`` (the
    first node a selector matches) and return its handle once it is up."""
    budget = remaining(None if timeout is None else check_timeout(timeout),
                       rpc.DEFAULT_TIMEOUT_S)
    if not inspect.isclass(cls) and not isinstance(cls, ray.actor.ActorClass):
        raise ConfigError("must be a class", source="erpc", field="cls", value=cls)
    node_id = resolve(node)[0]
    actor_class = cls if isinstance(cls, ray.actor.ActorClass) else ray.remote(cls)
    handle = actor_class.options(**{**(options or {}), **pinned_options(node_id)}).remote(
        *args, **kwargs)
    try:
        rpc.get(handle.__ray_ready__.remote(), timeout=budget, what=f"spawn on {node_id[:12]}")
    except (HerdError, RayActorError):
        ray.kill(handle)
        raise
    return handle
