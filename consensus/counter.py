"""``Counter``: named counters and sequences (each ``next`` hands out a number exactly once)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

__all__ = ["Counter"]


class Add(BaseModel):
    op: Literal["add"] = "add"
    name: str = Field(min_length=1)
    by: int = 1


class Next(BaseModel):
    op: Literal["next"] = "next"
    name: str = Field(min_length=1)


class Value(BaseModel):
    op: Literal["value"] = "value"
    name: str = Field(min_length=1)


class Counter:
    command_model = Annotated[Add | Next, Field(discriminator="op")]
    query_model = Value

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def apply(self, command: Add | Next) -> int:
        by = command.by if isinstance(command, Add) else 1
        self.values[command.name] = self.values.get(command.name, 0) + by
        return self.values[command.name]

    def query(self, query: Value) -> int:
        return self.values.get(query.name, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self.values)

    def restore(self, state: dict[str, int]) -> None:
        self.values = dict(state)
