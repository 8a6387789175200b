"""Members, placement requirements and the distribution strategy interface (pure, no Ray)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from herd.platform.errors import ConfigError, NoQuorum
from herd.supervisors.errors import PlacementError

__all__ = [
    "DistributionStrategy",
    "Member",
    "Requirements",
    "RequirementsOf",
    "stable_hash",
]

#: How many members a ``PlacementError`` message lists before eliding the rest.
_MAX_MEMBERS_IN_ERROR = 10


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is identical in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def _fmt_mapping(mapping: Mapping[str, object]) -> str:
    return "{" + ", ".join(f"{k}={mapping[k]!r}" for k in sorted(mapping)) + "}"


@dataclass(frozen=True)
class Member:
    """One supervisor member (one per Ray node) that children can be placed on."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    load: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("member id must be a non-empty string", field="id", value=self.id)
        if isinstance(self.load, bool) or not isinstance(self.load, int) or self.load < 0:
            raise ConfigError("member load must be an int >= 0", field="load", value=self.load)
        # Private plain-dict copies: callers' dicts may change later; dicts pickle (Ray).
        object.__setattr__(self, "labels", dict(self.labels or {}))
        object.__setattr__(self, "resources", dict(self.resources or {}))

    def __hash__(self) -> int:
        return hash((self.id, self.load, frozenset(self.labels.items()),
                     frozenset(self.resources.items())))

    @property
    def region(self) -> str | None:
        """The ``region`` label, if any."""
        return self.labels.get("region")

    @property
    def zone(self) -> str | None:
        """The ``zone`` label, if any."""
        return self.labels.get("zone")

    def describe(self) -> str:
        """A short one-line description for error messages."""
        return (f"{self.id} (labels={_fmt_mapping(self.labels)}, "
                f"resources={_fmt_mapping(self.resources)}, load={self.load})")


@dataclass(frozen=True)
class Requirements:
    """Placement constraints of a child: exact label matches and per-child resource demand."""

    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", dict(self.labels or {}))
        object.__setattr__(self, "resources", dict(self.resources or {}))
        for name, amount in self.resources.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ConfigError("resource demand must be a number >= 0",
                                  field=f"resources.{name}", value=amount)

    def __hash__(self) -> int:
        return hash((frozenset(self.labels.items()), frozenset(self.resources.items())))

    @property
    def is_empty(self) -> bool:
        """True when every member is admitted."""
        return not self.labels and not self.resources

    def admits(self, member: Member) -> bool:
        """True when ``member`` has every required label value and enough total resources."""
        for key, value in self.labels.items():
            if member.labels.get(key) != value:
                return False
        for name, amount in self.resources.items():
            if member.resources.get(name, 0.0) < amount:
                return False
        return True

    def unmet(self, member: Member) -> list[str]:
        """Human-readable reasons why ``member`` is not admitted (empty when it is)."""
        reasons: list[str] = []
        for key in sorted(self.labels):
            have = member.labels.get(key)
            if have != self.labels[key]:
                reasons.append(f"label {key}={have!r} != {self.labels[key]!r}")
        for name in sorted(self.resources):
            have_amount = member.resources.get(name, 0.0)
            if have_amount < self.resources[name]:
                reasons.append(f"resource {name}={have_amount} < {self.resources[name]}")
        return reasons

    def describe(self) -> str:
        """A short one-line description for error messages."""
        return f"labels={_fmt_mapping(self.labels)}, resources={_fmt_mapping(self.resources)}"


#: How ``owners`` learns each child's requirements: a mapping, a function, or None for none.
RequirementsOf = Mapping[str, Requirements | None] | Callable[[str], Requirements | None] | None


class DistributionStrategy(ABC):
    """Chooses which member owns a child. Subclasses implement ``_select``."""

    name: ClassVar[str]
    #: When True, ``owners`` counts each assignment into the chosen member's load.
    load_aware: ClassVar[bool] = False

    @staticmethod
    def eligible(members: Iterable[Member], requirements: Requirements | None = None
                 ) -> list[Member]:
        """Members admitted by ``requirements``, in input order, first occurrence of each id."""
        seen: set[str] = set()
        result: list[Member] = []
        for member in members:
            if member.id in seen:
                continue
            seen.add(member.id)
            if requirements is None or requirements.admits(member):
                result.append(member)
        return result

    def has_quorum(self, members: Sequence[Member]) -> bool:
        """Whether ``members`` (the live ones) may place and run children. Default: always."""
        return True

    def should_stop_local_children(self, members: Sequence[Member]) -> bool:
        """True when a member seeing ``members`` as live must stop its children (no quorum)."""
        return not self.has_quorum(members)

    def choose(self, child_id: str, members: Sequence[Member],
               requirements: Requirements | None = None) -> Member:
        """The member that should own ``child_id``.

        Raises ``NoQuorum`` when ``has_quorum(members)`` is False and ``PlacementError`` when no
        member satisfies ``requirements``.
        """
        if not self.has_quorum(members):
            raise self._no_quorum(members)
        return self._choose_eligible(child_id, members, requirements)

    def owners(self, child_ids: Iterable[str], members: Sequence[Member],
               requirements_of: RequirementsOf = None) -> dict[str, str]:
        """Map every child id to its owner's member id (raises like ``choose``)."""
        if not self.has_quorum(members):
            raise self._no_quorum(members)
        lookup = _requirements_lookup(requirements_of)
        current = list(members)
        index = {m.id: i for i, m in reversed(list(enumerate(current)))}
        result: dict[str, str] = {}
        for child_id in child_ids:
            chosen = self._choose_eligible(child_id, current, lookup(child_id))
            result[child_id] = chosen.id
            if self.load_aware:
                i = index[chosen.id]
                current[i] = replace(current[i], load=current[i].load + 1)
        return result

    def _choose_eligible(self, child_id: str, members: Sequence[Member],
                         requirements: Requirements | None) -> Member:
        eligible = self.eligible(members, requirements)
        if not eligible:
            raise self._placement_error(child_id, members, requirements)
        return self._select(child_id, eligible)

    @abstractmethod
    def _select(self, child_id: str, eligible: Sequence[Member]) -> Member:
        """Pick one of ``eligible`` (non-empty, unique ids, all admitted) for ``child_id``."""

    def _placement_error(self, child_id: str, members: Sequence[Member],
                         requirements: Requirements | None) -> PlacementError:
        req = requirements.describe() if requirements is not None else "none"
        if not members:
            considered = "no members"
        else:
            shown = [f"{m.describe()}: {'; '.join(requirements.unmet(m)) if requirements else ''}"
                     for m in members[:_MAX_MEMBERS_IN_ERROR]]
            more = len(members) - len(shown)
            considered = f"{len(members)} member(s): " + ", ".join(shown)
            if more > 0:
                considered += f", ... and {more} more"
        error = PlacementError(
            f"no eligible member for child {child_id!r} (strategy {self.name}); "
            f"requirements: {req}; considered {considered}")
        error.child_id = child_id  # type: ignore[attr-defined]
        error.requirements = requirements  # type: ignore[attr-defined]
        error.members = [m.id for m in members]  # type: ignore[attr-defined]
        return error

    def _no_quorum(self, members: Sequence[Member]) -> NoQuorum:
        ids = sorted({m.id for m in members})
        error = NoQuorum(f"strategy {self.name}: live members {ids} are not a majority")
        error.members = ids  # type: ignore[attr-defined]
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _requirements_lookup(requirements_of: RequirementsOf
                         ) -> Callable[[str], Requirements | None]:
    if requirements_of is None:
        return lambda _child_id: None
    if isinstance(requirements_of, Mapping):
        mapping = requirements_of
        return lambda child_id: mapping.get(child_id)
    if callable(requirements_of):
        return requirements_of
    raise ConfigError("requirements_of must be a mapping, a callable or None",
                      field="requirements_of", value=requirements_of)
