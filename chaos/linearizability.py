"""A linearizability checker in the style of Wing & Gong / Lowe and Porcupine: a depth-first
search over the history's call and return events that linearizes a pending call when the model
allows it, backtracks at a return whose call could not be placed, and memoizes (linearized set,
state) pairs. Histories split into independent partitions first (one per key or lock).
Operations whose outcome is unknown (``info``) have no return: they may take effect at any point
after their call, or never. A failure names the smallest window it could not linearize: the
operations still open at the deepest point the search reached."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from herd.chaos.history import History
from herd.chaos.linearizability_models import UNKNOWN, Model

__all__ = ["LinearizabilityResult", "Operation", "check_operations", "operations_from_history"]


@dataclass(frozen=True)
class Operation:
    """One client operation: called at ``call``, returned at ``ret`` (``math.inf`` when the
    outcome is unknown, then ``output`` is ``UNKNOWN``)."""

    id: int
    client: str
    call: float
    ret: float
    input: Any
    output: Any


@dataclass
class LinearizabilityResult:
    ok: bool
    operations: int
    partitions: int
    failed_partition: Hashable = None
    window: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "operations": self.operations, "partitions": self.partitions,
                "failed_partition": repr(self.failed_partition), "window": self.window}


class _Node:
    __slots__ = ("match", "next", "op", "position", "prev")

    def __init__(self, op: Operation, position: int) -> None:
        self.op = op
        self.position = position  # its bit in the linearized set
        self.prev: _Node | None = None
        self.next: _Node | None = None
        self.match: _Node | None = None  # a call's return (None: unknown outcome)


class _CallNode(_Node):
    """A call event; its ``match`` is its return (None when the outcome is unknown)."""


def operations_from_history(history: History, functions: Iterable[str]) -> list[Operation]:
    """The history's operations named in ``functions``: ``ok`` ones with their result, ``info``
    or never completed ones as unknown; ``fail`` ones certainly did not happen and are left out."""
    wanted = set(functions)
    operations = []
    for invoke, outcome in history.completions():
        if invoke.f not in wanted or (outcome is not None and outcome.type == "fail"):
            continue
        if outcome is not None and outcome.type == "ok":
            operations.append(Operation(invoke.op, invoke.process, invoke.time, outcome.time,
                                        _hashable(invoke.value), _hashable(outcome.value)))
        else:
            operations.append(Operation(invoke.op, invoke.process, invoke.time, math.inf,
                                        _hashable(invoke.value), UNKNOWN))
    return operations


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    return value


def check_operations(model: Model, operations: list[Operation]) -> LinearizabilityResult:
    groups: dict[Hashable, list[Operation]] = defaultdict(list)
    for operation in operations:
        groups[model.partition(operation.input)].append(operation)
    for key in sorted(groups, key=repr):
        window = _check_partition(model, groups[key])
        if window is not None:
            return LinearizabilityResult(False, len(operations), len(groups), key, window)
    return LinearizabilityResult(True, len(operations), len(groups))


def _build(operations: list[Operation]) -> _Node | None:
    events: list[tuple[float, int, int, _Node]] = []
    for position, operation in enumerate(operations):
        call = _CallNode(operation, position)
        events.append((operation.call, 0, position, call))
        if operation.ret != math.inf:
            ret = _Node(operation, -1)
            call.match = ret
            events.append((operation.ret, 1, position, ret))
    events.sort(key=lambda event: event[:3])
    head: _Node | None = None
    previous: _Node | None = None
    for *_, node in events:
        node.prev = previous
        if previous is None:
            head = node
        else:
            previous.next = node
        previous = node
    return head


def _check_partition(model: Model, operations: list[Operation]) -> list[str] | None:
    sentinel = _Node(Operation(-1, "", -math.inf, -math.inf, None, None), -2)
    sentinel.next = _build(operations)
    if sentinel.next is not None:
        sentinel.next.prev = sentinel
    state: Hashable = model.initial()
    linearized = 0
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Node, Hashable]] = []
    best_depth, best_open = -1, sentinel.next
    entry = sentinel.next
    while entry is not None:
        if isinstance(entry, _CallNode):
            legal, after = model.step(state, entry.op.input, entry.op.output)
            if legal:
                key = (linearized | (1 << entry.position), after)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = after, key[0]
                    _lift(entry)
                    entry = sentinel.next
                    continue
            entry = entry.next
            continue
        if len(stack) > best_depth:
            best_depth, best_open = len(stack), sentinel.next
        if not stack:
            return _window(model, best_open)
        call, state = stack.pop()
        linearized &= ~(1 << call.position)
        _unlift(call)
        entry = call.next
    return None


def _lift(call: _Node) -> None:
    for node in (call, call.match):
        if node is not None:
            assert node.prev is not None
            node.prev.next = node.next
            if node.next is not None:
                node.next.prev = node.prev


def _unlift(call: _Node) -> None:
    for node in (call.match, call):
        if node is not None:
            assert node.prev is not None
            node.prev.next = node
            if node.next is not None:
                node.next.prev = node


def _window(model: Model, first: _Node | None) -> list[str]:
    """The operations open at the deepest point: calls up to the first unplaceable return."""
    lines = []
    node = first
    while node is not None:
        if isinstance(node, _CallNode):
            ret = "unknown" if node.op.ret == math.inf else f"{node.op.ret:.4f}"
            lines.append(f"{node.op.client} [{node.op.call:.4f}, {ret}] "
                         f"{model.describe(node.op.input, node.op.output)}")
        else:
            break
        node = node.next
    return lines
