"""Settings of a replicated store (validated at the boundary; stored in the GCS KV store)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from herd.platform.validation import validate_model
from herd.replication.protocol import DEFAULT_MAX_MESSAGE_BYTES, check_name

CONSISTENCY = ("local", "quorum", "all")
Consistency = Literal["local", "quorum", "all"]


class TransportSpec(BaseModel):
    """How local replicas reach a region served by another cluster: ``transport`` is an
    import path ``"package.module:Class"`` of a :class:`~herd.replication.transport.PeerTransport`
    built with ``options`` (e.g. a federation gateway client)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    transport: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: dict[str, Any] = Field(default_factory=dict)


class StoreSettings(BaseModel):
    """Everything that defines a store; a second ``start`` must give the same settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    regions: tuple[str, ...] = Field(min_length=1)
    kind: Literal["lww_map", "ormap"] = "lww_map"
    sync_interval_ms: int = Field(default=1000, ge=20, le=600_000)
    durability: Literal["kv", "file"] = "kv"
    file_dir: str = "/tmp/herd/replication"
    max_value_bytes: int = Field(default=1024 * 1024, ge=64)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=4096)
    batch_ms: int = Field(default=20, ge=0, le=1000)
    remote_regions: dict[str, TransportSpec] = Field(default_factory=dict)
    """Regions served by replicas in other Ray clusters (no replica starts here for them)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not check_name(value) or "/" in value:
            raise ValueError("must be a name like 'sessions' (letters, digits, . _ : -)")
        return value

    @field_validator("regions")
    @classmethod
    def _check_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if not check_name(region):
                raise ValueError(f"region {region!r} must be a name like 'us-east'")
        if len(set(value)) != len(value):
            raise ValueError("regions must be distinct")
        return value

    @model_validator(mode="after")
    def _check_remote(self) -> StoreSettings:
        unknown = set(self.remote_regions) - set(self.regions)
        if unknown:
            raise ValueError(f"remote_regions {sorted(unknown)} are not among regions")
        if not self.local_regions:
            raise ValueError("at least one region must be served by this cluster")
        return self

    @property
    def local_regions(self) -> tuple[str, ...]:
        return tuple(r for r in self.regions if r not in self.remote_regions)

    @classmethod
    def build(cls, **fields: Any) -> StoreSettings:
        return validate_model(cls, fields, source="ReplicatedStore")


def supervisor_name(region: str) -> str:
    """The dynamic supervisor that runs the replicas of every store in ``region``."""
    return f"herd-replication-{region}"


def replica_id(store: str, region: str) -> str:
    """The child id of a store's replica in its region's supervisor."""
    return f"{store}.{region}"


def replica_name(store: str, region: str) -> str:
    """The registry name (``via``) of a store's replica in ``region``."""
    return f"{supervisor_name(region)}/{replica_id(store, region)}"
