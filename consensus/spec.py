"""The options of a consensus group (validated at the boundary: one ``ConfigError`` naming the
field) and the timing they give the Raft core."""

from __future__ import annotations

import re
import zlib

from pydantic import BaseModel, ConfigDict, Field, field_validator

from herd.consensus.raft import RaftConfig
from herd.supervisors.strategies.placement import MemberSelector

__all__ = ["GroupOptions", "group_key", "member_name"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
KEY_PREFIX = "herd/consensus/groups/"


class GroupOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    replicas: int = Field(default=3, ge=1, le=9)
    members: MemberSelector = "all"
    tick_s: float = Field(default=0.05, gt=0, le=1)
    election_ticks: int = Field(default=6, ge=3)
    max_batch: int = Field(default=512, ge=1)
    snapshot_every: int = Field(default=20_000, ge=100)
    catch_up_lag: int = Field(default=64, ge=0)
    wal_dir: str = "/tmp/herd-consensus"
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("letters, digits, '_', '.', '-' (at most 63), starting with a letter "
                             "or digit")
        return value

    @field_validator("replicas")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd: {value} voters tolerate no more failures than "
                             f"{value - 1}, and a tie splits the vote")
        return value

    def raft_config(self, member_id: str) -> RaftConfig:
        return RaftConfig(election_ticks=self.election_ticks, heartbeat_ticks=1,
                          max_entries_per_message=self.max_batch,
                          seed=zlib.crc32(f"{self.seed}/{member_id}".encode()))


def group_key(name: str) -> str:
    return KEY_PREFIX + name


def member_name(group: str, member_id: str) -> str:
    return f"herd/consensus/{group}/{member_id}"
