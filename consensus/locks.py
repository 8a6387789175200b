"""``Lock`` and ``Election``: leases in the replicated machine, judged by the leader's clock
stamped on each command (so every member decides the same). A grant carries a fencing token
that only grows; a holder whose lease ran out is refused. ``Election`` is a ``{:global}``-style
singleton: one leader with a token, the others' campaigns answer who leads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from herd.consensus.machine import ApplyContext

__all__ = ["Election", "Lock", "LeaseTable"]


class Acquire(BaseModel):
    op: Literal["acquire"] = "acquire"
    name: str = Field(min_length=1)
    client: str = Field(min_length=1)
    ttl: float = Field(default=10.0, gt=0)


class Release(BaseModel):
    op: Literal["release"] = "release"
    name: str = Field(min_length=1)
    client: str = Field(min_length=1)


class Holder(BaseModel):
    op: Literal["holder"] = "holder"
    name: str = Field(min_length=1)


class Campaign(Acquire):
    op: Literal["campaign"] = "campaign"  # type: ignore[assignment]


class Resign(Release):
    op: Literal["resign"] = "resign"  # type: ignore[assignment]


class Leader(Holder):
    op: Literal["leader"] = "leader"  # type: ignore[assignment]


class LeaseTable:
    """name -> (holder, token, expires at); tokens per name only grow."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str | None, int, float]] = {}

    def acquire(self, name: str, client: str, ttl: float, now: float) -> dict[str, Any]:
        holder, token, expires = self.leases.get(name, (None, 0, 0.0))
        if holder == client and expires > now:
            self.leases[name] = (client, token, now + ttl)
            return {"granted": True, "token": token, "displaced": None, "holder": client}
        if holder is not None and expires > now:
            return {"granted": False, "token": token, "displaced": None, "holder": holder}
        self.leases[name] = (client, token + 1, now + ttl)
        return {"granted": True, "token": token + 1, "displaced": holder, "holder": client}

    def release(self, name: str, client: str, now: float) -> str:
        holder, token, expires = self.leases.get(name, (None, 0, 0.0))
        if holder != client:
            return "not_holder"
        self.leases[name] = (None, token, 0.0)
        return "released" if expires > now else "expired"

    def holder(self, name: str, now: float) -> dict[str, Any]:
        holder, token, expires = self.leases.get(name, (None, 0, 0.0))
        alive = holder is not None and expires > now
        return {"holder": holder if alive else None, "token": token,
                "expires_in": max(0.0, expires - now) if alive else 0.0}

    def snapshot(self) -> dict[str, Any]:
        return {name: list(lease) for name, lease in self.leases.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.leases = {name: (lease[0], lease[1], lease[2]) for name, lease in state.items()}


class Lock:
    command_model: Any = Annotated[Acquire | Release, Field(discriminator="op")]
    query_model: Any = Holder

    def __init__(self) -> None:
        self.table = LeaseTable()

    def apply(self, command: Acquire | Release, context: ApplyContext) -> Any:
        if isinstance(command, Acquire):
            return self.table.acquire(command.name, command.client, command.ttl, context.time)
        return self.table.release(command.name, command.client, context.time)

    def query(self, query: Holder, now: float) -> dict[str, Any]:
        return self.table.holder(query.name, now)

    def snapshot(self) -> dict[str, Any]:
        return self.table.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.table.restore(state)


class Election(Lock):
    """Campaign to lead ``name``: the winner holds it with a fencing token while it renews
    (campaigns again) within ``ttl``; a campaign that loses answers the current leader."""

    command_model = Annotated[Campaign | Resign, Field(discriminator="op")]
    query_model = Leader
