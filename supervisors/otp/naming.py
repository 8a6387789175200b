"""Naming a supervisor's children in the registry: ``<supervisor>/<id>`` -> current incarnation.

A supervisor registers each incarnation it starts (so ``via("<supervisor>/<id>")`` finds the
current one) and unregisters it when it stops; the name of a child that crashed is handed to its
replacement in one write (``register`` with ``previous``: a compare-and-set on the dead
incarnation's epoch), or unregistered if it is not restarted. The registry also drops the names
of a child it sees die. The registry is reached through its asyncio client (``AsyncRegistry``),
so the supervisor's event loop keeps serving its children meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.exceptions import RayError

from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.registry import AbsentOr, AsyncRegistry, EpochConflict, Registration

__all__ = ["ChildNames"]

log = get_logger("herd.supervisors.otp.naming")


class ChildNames:
    """The registry names of one supervisor's children (``registry=None``: no names)."""

    def __init__(self, supervisor: str, registry: str | None) -> None:
        self.supervisor = supervisor
        self.registry = registry
        self._client: AsyncRegistry | None = None

    def key(self, child_id: str) -> str:
        return f"{self.supervisor}/{child_id}"

    async def register(self, child_id: str, handle: Any, info: dict[str, Any],
                       previous: Registration | None = None) -> Registration | None:
        """Register ``handle`` as the holder of the child's name (raises ``RegistryError``);
        with ``previous`` (the record of the incarnation it replaces, whose process is gone),
        take that record over in one write (whether or not the registry has dropped it yet).
        None without a registry."""
        if self.registry is None:
            return None
        meta = {"supervisor": self.supervisor, "child_id": child_id, **info}
        registry = await self._registry()
        if previous is not None:
            try:
                return await registry.compare_and_set(
                    self.key(child_id), AbsentOr(previous.epoch), handle=handle, meta=meta,
                    holder_node=info.get("node_id"))
            except EpochConflict:  # another holder has it: register says who
                pass
        return await registry.register(self.key(child_id), handle, meta)

    async def unregister(self, child_id: str, handle: Any) -> None:
        """Drop the child's name if ``handle`` still holds it. Best effort: a failure is
        logged, not raised (the registry also drops the names of holders it sees end)."""
        if self.registry is None:
            return
        try:
            registry = await self._registry()
            await registry.unregister(self.key(child_id), handle)
        except (HerdError, RayError) as exc:
            log.warning("unregister_failed", key=self.key(child_id), error=repr(exc))

    async def clear(self, child_ids: Iterable[str]) -> None:
        """Remove these names whoever holds them (best effort): after Ray restarted a root
        supervisor, the holders are the children of its previous process, which died with it."""
        if self.registry is None:
            return
        for child_id in child_ids:
            try:
                registry = await self._registry()
                await registry.remove(self.key(child_id))
            except (HerdError, RayError) as exc:
                log.warning("remove_failed", key=self.key(child_id), error=repr(exc))

    async def _registry(self) -> AsyncRegistry:
        if self._client is None:
            self._client = await AsyncRegistry.start(self.registry or "default")
        return self._client
