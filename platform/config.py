"""Cluster configuration: the pydantic v2 models of a cluster (nodes, health check, timeouts).

Every failure to load or validate a config raises :class:`herd.platform.errors.ConfigError`
naming the source (file path or ``"<dict>"``), the field path (``nodes[1].num_cpus``) and the
bad value; the generic helpers that do it live in :mod:`herd.platform.validation`.

Example::

    cfg = ClusterConfig.from_yaml("configs/cluster-local.yaml")
    ray_system_config = cfg.health_check.to_system_config()
    for spec in cfg.worker_specs():   # one NodeSpec per worker node (``count`` expanded)
        ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from herd.platform.validation import field_error, format_loc, load_yaml_model, validate_model

__all__ = [
    "ClusterConfig",
    "HealthCheckConfig",
    "NodeSpec",
    "TimeoutConfig",
]


# Ray label values: at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending
# with an alphanumeric.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_HOST_PORT = re.compile(rf"^{_HOST}:(?P<port>[0-9]{{1,5}})$")
_RAY_CLIENT = re.compile(rf"^ray://{_HOST}:(?P<port>[0-9]{{1,5}})$")
_DNS = re.compile(
    r"^dns:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

_PositiveInt = Annotated[int, Field(gt=0)]
_PositiveSeconds = Annotated[float, Field(gt=0)]
_NonNegativeFloat = Annotated[float, Field(ge=0)]


class HealthCheckConfig(BaseModel):
    """Ray's GCS node health check (how fast a dead node is detected). Set on the head node.

    The defaults (1000/500/500/3) detect a SIGKILLed node in ~1.2 s on the test machines;
    Ray's own defaults (5000/3000/10000/5) take ~14 s.
    """

    model_config = ConfigDict(extra="forbid")

    initial_delay_ms: _PositiveInt = 1000
    period_ms: _PositiveInt = 500
    timeout_ms: _PositiveInt = 500
    failure_threshold: _PositiveInt = 3

    def to_system_config(self) -> dict[str, int]:
        """The keys for ``ray.init(_system_config=...)`` / ``ray start --system-config``."""
        return {
            "health_check_initial_delay_ms": self.initial_delay_ms,
            "health_check_period_ms": self.period_ms,
            "health_check_timeout_ms": self.timeout_ms,
            "health_check_failure_threshold": self.failure_threshold,
        }

    def to_env(self) -> dict[str, str]:
        """The same settings as ``RAY_health_check_*`` environment variables (for ``ray start``)."""
        return {f"RAY_{key}": str(value) for key, value in self.to_system_config().items()}

    def expected_detection_s(self) -> float:
        """Rough upper bound, in seconds, on how long Ray takes to declare a dead node dead.

        ``failure_threshold`` consecutive checks must fail, one every ``period_ms``, and the
        last one may wait ``timeout_ms`` before failing:
        ``(period_ms * failure_threshold + timeout_ms) / 1000``. Excludes ``initial_delay_ms``
        (only relevant right after a node starts) and the time herd's membership poll adds.
        """
        return (self.period_ms * self.failure_threshold + self.timeout_ms) / 1000


class NodeSpec(BaseModel):
    """One kind of Ray node: its resources and labels, and how many identical nodes to start."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: _NonNegativeFloat = 1
    resources: dict[str, _NonNegativeFloat] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    zone: str | None = None
    count: Annotated[int, Field(ge=1)] = 1

    @field_validator("region", "zone")
    @classmethod
    def _label_value(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_VALUE.match(value):
            raise ValueError("must be 1-63 characters of letters, digits, '-', '_' or '.', "
                             "starting and ending with a letter or digit")
        return value

    @field_validator("resources", "labels")
    @classmethod
    def _non_empty_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.strip():
                raise ValueError(f"keys must be non-empty, got {key!r}")
        return value

    @model_validator(mode="after")
    def _no_label_conflict(self) -> NodeSpec:
        for key in ("region", "zone"):
            own = getattr(self, key)
            if own is not None and key in self.labels and self.labels[key] != own:
                raise field_error(("labels", key), self.labels[key],
                                  f"conflicts with {key}={own!r}; set it in one place")
        return self

    def all_labels(self) -> dict[str, str]:
        """``labels`` plus ``region`` and ``zone`` (as Ray node labels of those names)."""
        merged = dict(self.labels)
        if self.region is not None:
            merged["region"] = self.region
        if self.zone is not None:
            merged["zone"] = self.zone
        return merged


class TimeoutConfig(BaseModel):
    """Default deadlines, in seconds."""

    model_config = ConfigDict(extra="forbid")

    call_s: _PositiveSeconds = 30.0
    """Default timeout of a remote call (``ray.get``) in library code."""
    connect_s: _PositiveSeconds = 30.0
    """Joining a cluster at an address: ``connect()`` gives up after it with
    ``ClusterUnavailable``."""
    placement_s: _PositiveSeconds = 30.0
    """An actor waiting for a node that satisfies its resources/labels (Ray never gives up)."""


class ClusterConfig(BaseModel):
    """A Ray cluster for herd.

    ``mode``:
      * ``embedded``: ``ray.init()`` starts a single-node cluster inside the driver (``head``).
      * ``local``: real ``ray start`` processes on 127.0.0.1: a head (``head``) and the worker
        nodes of ``nodes`` (each spec started ``count`` times).
      * ``address``: connect to an existing cluster at ``address``: ``auto``, ``host:port``,
        ``ray://host:port`` (Ray Client) or ``dns:NAME[:PORT]``. ``address`` is required in this
        mode and rejected in the others (so that a forgotten ``mode: address`` is not silently
        ignored). ``head``/``nodes`` only document the cluster there.

    ``regions``: when non-empty, every node's ``region`` must be one of them. When empty it is
    filled in from the regions the nodes name (head first, then workers, in order of first
    appearance), so ``cfg.regions`` is always the list of known regions.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["embedded", "local", "address"] = "embedded"
    address: str | None = None
    namespace: str = "herd"
    regions: list[str] = Field(default_factory=list)
    head: NodeSpec = Field(default_factory=NodeSpec)
    nodes: list[NodeSpec] = Field(default_factory=list)
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    auth: Literal["token", "disabled"] = "token"
    gcs_fault_tolerance: bool = True
    """``local`` mode: the GCS keeps its state in RocksDB so the head can be restarted with it
    (``LocalCluster.restart_head``); ``false`` opts out."""
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    log_level: str = "INFO"

    @field_validator("address")
    @classmethod
    def _address_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value == "auto":
            return value
        match = _RAY_CLIENT.match(value) or _HOST_PORT.match(value) or _DNS.match(value)
        if match is None:
            raise ValueError("address must be 'auto', 'host:port', 'ray://host:port' or "
                             "'dns:NAME[:PORT]'")
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range 1-65535")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_format(cls, value: str) -> str:
        if not _NAMESPACE.match(value):
            raise ValueError("namespace must be non-empty letters, digits, '_', '.' or '-'")
        return value

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, region in enumerate(value):
            if not _LABEL_VALUE.match(region):
                raise field_error((index,), region,
                                  "region names are 1-63 characters of letters, digits, '-', "
                                  "'_' or '.', starting and ending with a letter or digit")
            if region in seen:
                raise field_error((index,), region, f"duplicate region {region!r}")
            seen.add(region)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @model_validator(mode="after")
    def _cross_checks(self) -> ClusterConfig:
        if self.mode == "address" and self.address is None:
            raise field_error(("address",), None,
                              "address is required when mode is 'address' "
                              "('auto', 'host:port', 'ray://host:port' or 'dns:NAME[:PORT]')")
        if self.mode != "address" and self.address is not None:
            raise field_error(("address",), self.address,
                              f"address is only used with mode 'address' (mode is "
                              f"{self.mode!r}); set mode: address or remove address")
        if self.head.count != 1:
            raise field_error(("head", "count"), self.head.count, "a cluster has one head node")
        located = [(("head",), self.head)] + [(("nodes", i), n) for i, n in enumerate(self.nodes)]
        if self.regions:
            for loc, node in located:
                if node.region is not None and node.region not in self.regions:
                    where = format_loc(loc)
                    raise field_error(loc + ("region",), node.region,
                                      f"unknown region reference: {where} names region "
                                      f"{node.region!r}, not one of regions {self.regions}")
        else:
            collected: list[str] = []
            for _, node in located:
                if node.region is not None and node.region not in collected:
                    collected.append(node.region)
            self.regions = collected
        return self

    def worker_specs(self) -> list[NodeSpec]:
        """One ``NodeSpec`` (``count=1``) per worker node: ``nodes`` with ``count`` expanded."""
        return [spec.model_copy(update={"count": 1}, deep=True)
                for spec in self.nodes for _ in range(spec.count)]

    def node_count(self) -> int:
        """Total number of nodes: the head plus every worker."""
        return 1 + sum(spec.count for spec in self.nodes)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClusterConfig:
        """Load a cluster config from a YAML file (raises ``ConfigError``)."""
        return load_yaml_model(cls, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ClusterConfig:
        """Validate a cluster config from a mapping (raises ``ConfigError``)."""
        return validate_model(cls, data, source=source)
