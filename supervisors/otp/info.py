"""What ``which_children`` reports about a child, and the text rendering of a supervision tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChildInfo", "render_tree"]


@dataclass(frozen=True)
class ChildInfo:
    """One child of a supervisor (OTP's ``{Id, Child, Type, Modules}``).

    ``status`` is ``running`` (``handle`` is the current incarnation), ``restarting`` (its
    supervisor is retrying a failed restart) or ``undefined`` (stopped; the spec is kept).
    ``children`` is filled for supervisor children when asked for the whole tree.
    """

    id: str
    status: str
    type: str
    restart: str
    significant: bool
    handle: Any = None
    pid: int | None = None
    node_id: str | None = None
    children: list[ChildInfo] | None = field(default=None)


def render_tree(name: str, children: list[ChildInfo], indent: str = "") -> str:
    """An indented text tree: one line per child with its type, restart, status and pid."""
    lines = [f"{indent}{name}"] if not indent else []
    for child in children:
        where = f" pid={child.pid}" if child.pid is not None else ""
        lines.append(f"{indent}  {child.id} [{child.type}, {child.restart}] {child.status}{where}")
        if child.children is not None:
            lines.append(render_tree(child.id, child.children, indent + "  "))
    return "\n".join(line for line in lines if line)
