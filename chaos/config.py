"""The settings of a chaos run (pydantic), and the parsers the CLI gives its flags to.

    config = ChaosConfig(seed=7, duration_s=parse_duration("10m"),
                         faults=parse_faults("kill,pause,child"))

Invalid settings raise ``ConfigError`` naming the field and the value, before anything starts.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from herd.platform.errors import ConfigError
from herd.platform.validation import validate_model

__all__ = ["FAULT_KINDS", "ChaosConfig", "parse_duration", "parse_faults"]

#: Every fault the nemesis knows. ``kill``: SIGKILL a worker node (a replacement joins);
#: ``pause``: SIGSTOP/SIGCONT a worker node; ``child``: SIGKILL one child's process;
#: ``control``: kill a control-plane actor (Ray restarts it); ``head``: restart the head node
#: (GCS fault tolerance); ``partition``: cut a worker's link, then heal it (isolated nodes).
FAULT_KINDS: tuple[str, ...] = ("kill", "pause", "child", "control", "head", "partition")
FaultKind = Literal["kill", "pause", "child", "control", "head", "partition"]
DEFAULT_FAULTS: tuple[FaultKind, ...] = ("kill", "pause", "child", "control")

_DURATION = re.compile(r"^\s*(?P<number>[-+]?[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, field: str = "duration") -> float:
    """``"30s"``, ``"10m"``, ``"1h"``, ``"500ms"`` or a bare number of seconds, in seconds;
    ``ConfigError`` for anything else or a duration that is not positive."""
    match = _DURATION.match(str(text))
    if match is None:
        raise ConfigError("not a duration (use e.g. 30s, 10m, 1h)", field=field, value=text)
    seconds = float(match["number"]) * _UNIT_S[match["unit"] or "s"]
    if seconds <= 0:
        raise ConfigError("must be positive", field=field, value=text)
    return seconds


def parse_faults(text: str, field: str = "faults") -> list[str]:
    """A comma-separated list of fault kinds (``all`` for every kind); ``ConfigError`` naming
    the first unknown kind."""
    kinds = [part.strip() for part in str(text).split(",") if part.strip()]
    if kinds == ["all"]:
        return list(FAULT_KINDS)
    if not kinds:
        raise ConfigError("no fault kind given", field=field, value=text)
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})",
                              field=field, value=text)
    return list(dict.fromkeys(kinds))


class ChaosConfig(BaseModel):
    """One seeded run: which faults, how often, how much workload, and the bounds checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    duration_s: float = Field(120.0, gt=0)
    faults: list[FaultKind] = Field(default_factory=lambda: list(DEFAULT_FAULTS))
    #: Mean gap between one fault's recovery and the next fault.
    fault_gap_s: float = Field(8.0, gt=0)
    #: How long a pause or a partition lasts (uniform in this range).
    hold_s: tuple[float, float] = (2.0, 6.0)
    #: Each fault must be recovered from (every anchor child answers) within this bound.
    recovery_bound_s: float = Field(60.0, gt=0)
    #: Children that run for the whole run (recovery is measured on them).
    anchor_children: int = Field(4, ge=1, le=50)
    #: At most this many extra children the workload starts and terminates.
    churn_children: int = Field(3, ge=0, le=50)
    #: Names the workload registers and unregisters.
    names: int = Field(6, ge=0, le=200)
    #: Pause between two client operations.
    op_gap_s: float = Field(0.3, ge=0)
    #: Deadline of every client operation.
    op_timeout_s: float = Field(15.0, gt=0)
    #: How often each child writes to the fencing ledger.
    write_every_s: float = Field(0.25, gt=0)
    supervisor: str = "chaos"

    @field_validator("faults")
    @classmethod
    def _known_once(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one fault kind is needed")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _hold_range(self) -> ChaosConfig:
        low, high = self.hold_s
        if not 0 < low <= high:
            raise ValueError(f"hold_s must be 0 < low <= high, got {self.hold_s}")
        return self

    @classmethod
    def build(cls, **values: Any) -> ChaosConfig:
        """Validate ``values`` into a config; ``ConfigError`` naming the field otherwise."""
        return validate_model(cls, values, source="chaos")

    @property
    def replay(self) -> str:
        """The command that replays this run."""
        return (f"herd chaos --seed {self.seed} --duration {self.duration_s:g}s "
                f"--faults {','.join(self.faults)}")
