"""The driver's handles on the members of a dynamic supervisor, and its view of the nodes."""

from __future__ import annotations

import threading
from typing import Any

from herd.platform.gcs import NodeInfo
from herd.platform.membership import Membership
from herd.supervisors.dynamic.member import ensure_member, member_handle


class MemberHandles:
    """Member handles by node id, created on demand and cached (thread-safe: ``start_child``
    may be called from several threads at once)."""

    def __init__(self, supervisor: str) -> None:
        self.supervisor = supervisor
        self._membership: Membership | None = None
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def nodes(self, timeout: float | None = None) -> list[NodeInfo]:
        """The live nodes, as membership sees them."""
        if self._membership is None:
            self._membership = Membership.start()
        return self._membership.nodes(timeout=timeout)

    def live_ids(self, timeout: float | None = None) -> set[str]:
        return {node.node_id for node in self.nodes(timeout)}

    def get(self, node_id: str) -> Any:
        """The member on ``node_id`` (created if it does not exist)."""
        with self._lock:
            handle = self._handles.get(node_id)
        if handle is None:
            handle = member_handle(self.supervisor, node_id) or ensure_member(self.supervisor,
                                                                              node_id)
            with self._lock:
                self._handles[node_id] = handle
        return handle

    def running(self, timeout: float | None = None) -> list[Any]:
        """The members that exist now, on any live node (none is created)."""
        found = (member_handle(self.supervisor, n.node_id) for n in self.nodes(timeout))
        return [handle for handle in found if handle is not None]

    def forget(self, node_id: str | None = None) -> None:
        """Drop the cached handle of ``node_id`` (every one when None): its member is gone."""
        with self._lock:
            if node_id is None:
                self._handles.clear()
            else:
                self._handles.pop(node_id, None)
