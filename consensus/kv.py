"""``KV``: a replicated key-value machine with versions and revisions (etcd's data model in
small): put, delete, compare-and-set on a key's version, get, prefix range, and watch from a
revision (the events after it, while they are kept)."""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

__all__ = ["KV", "KVCommand", "KVQuery"]

EVENTS_KEPT = 10_000


class Put(BaseModel):
    op: Literal["put"] = "put"
    key: str = Field(min_length=1)
    value: Any = None


class Delete(BaseModel):
    op: Literal["delete"] = "delete"
    key: str = Field(min_length=1)


class CompareAndSet(BaseModel):
    """Write ``value`` if the key's version is ``version`` (0: the key must be absent)."""

    op: Literal["cas"] = "cas"
    key: str = Field(min_length=1)
    version: int = Field(ge=0)
    value: Any = None


class Get(BaseModel):
    op: Literal["get"] = "get"
    key: str = Field(min_length=1)


class Range(BaseModel):
    op: Literal["range"] = "range"
    prefix: str = ""
    limit: int = Field(default=1000, ge=1)


class Watch(BaseModel):
    op: Literal["watch"] = "watch"
    prefix: str = ""
    revision: int = Field(default=0, ge=0)


KVCommand = Annotated[Put | Delete | CompareAndSet, Field(discriminator="op")]
KVQuery = Annotated[Get | Range | Watch, Field(discriminator="op")]


class KV:
    command_model = KVCommand
    query_model = KVQuery

    def __init__(self) -> None:
        self.data: dict[str, tuple[Any, int, int]] = {}  # key -> (value, version, mod revision)
        self.revision = 0
        self.events: deque[tuple[int, str, str, Any]] = deque(maxlen=EVENTS_KEPT)

    def apply(self, command: Put | Delete | CompareAndSet) -> dict[str, Any]:
        if isinstance(command, Put):
            return self._write(command.key, command.value)
        if isinstance(command, Delete):
            if command.key not in self.data:
                return {"deleted": False, "revision": self.revision}
            self.revision += 1
            del self.data[command.key]
            self.events.append((self.revision, "delete", command.key, None))
            return {"deleted": True, "revision": self.revision}
        current = self.data.get(command.key)
        version = current[1] if current else 0
        if version != command.version:
            return {"ok": False, "version": version, "revision": self.revision}
        return {"ok": True, **self._write(command.key, command.value)}

    def _write(self, key: str, value: Any) -> dict[str, Any]:
        self.revision += 1
        current = self.data.get(key)
        version = (current[1] if current else 0) + 1
        self.data[key] = (value, version, self.revision)
        self.events.append((self.revision, "put", key, value))
        return {"version": version, "revision": self.revision}

    def query(self, query: Get | Range | Watch) -> Any:
        if isinstance(query, Get):
            current = self.data.get(query.key)
            if current is None:
                return None
            return {"value": current[0], "version": current[1], "revision": current[2]}
        if isinstance(query, Range):
            keys = sorted(k for k in self.data if k.startswith(query.prefix))[:query.limit]
            return {k: self.data[k][0] for k in keys}
        oldest = self.events[0][0] if self.events else self.revision + 1
        return {"compacted": bool(self.events) and query.revision + 1 < oldest,
                "revision": self.revision,
                "events": [{"revision": rev, "type": kind, "key": key, "value": value}
                           for rev, kind, key, value in self.events
                           if rev > query.revision and key.startswith(query.prefix)]}

    def snapshot(self) -> dict[str, Any]:
        return {"data": dict(self.data), "revision": self.revision,
                "events": list(self.events)}

    def restore(self, state: dict[str, Any]) -> None:
        self.data = {k: tuple(v) for k, v in state["data"].items()}
        self.revision = state["revision"]
        self.events = deque((tuple(e) for e in state["events"]),
                            maxlen=EVENTS_KEPT)
