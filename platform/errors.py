"""The one exception hierarchy of herd: every error herd raises is a ``HerdError``."""

from __future__ import annotations

from typing import Any


class HerdError(Exception):
    """Base class of every error herd raises on purpose."""


class ConfigError(HerdError, ValueError):
    """Invalid configuration or spec: names the source, the field path and the bad value."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 value: Any = None) -> None:
        self.source = source
        self.field = field
        self.value = value
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(field)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ClusterError(HerdError):
    """A Ray cluster could not be started, reached or stopped."""


class HerdTimeoutError(HerdError, TimeoutError):
    """A remote call or a wait passed its deadline."""


class NotConnectedError(HerdError):
    """An operation needs Ray but ``herd.platform.cluster.connect`` has not been called."""


class RegistryError(HerdError):
    """Base class of registry errors."""


class AlreadyRegistered(RegistryError):
    """A unique key is held by another actor."""

    def __init__(self, key: str, holder: Any = None) -> None:
        self.key = key
        self.holder = holder
        super().__init__(f"key {key!r} is already registered (holder: {holder})")


class NotRegistered(RegistryError, KeyError):
    """No live holder is registered under the key."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"key {key!r} is not registered" + (f": {detail}" if detail else ""))

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class EpochConflict(RegistryError):
    """A compare-and-set lost: the record's epoch was not the expected one."""

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"epoch conflict on {key!r}: expected {expected}, found {actual}")


class UnknownRegistry(RegistryError):
    """No registry of that name has been started."""


class SupervisorError(HerdError):
    """Base class of supervisor errors."""


class StartChildError(SupervisorError):
    """A child could not be started (its constructor raised, or it could not be placed)."""


class PlacementError(StartChildError):
    """No member/node satisfies a child's resources or labels."""


class NoQuorum(HerdError):
    """The member set has no majority of its static member list."""


class ClockSkewError(HerdError):
    """A remote hybrid-logical-clock timestamp is further ahead of local physical time than the
    configured maximum drift; accepting it would drag this clock forward."""


class ChildNotFound(SupervisorError, KeyError):
    """No child with that id under this supervisor."""

    def __str__(self) -> str:
        return str(self.args[0])


class SupervisorStopped(SupervisorError):
    """The supervisor has exited (intensity exceeded, auto_shutdown or stop)."""
