"""Registry errors: all are ``RegistryError``s (``herd.platform.errors`` holds the base tree)."""

from __future__ import annotations

from typing import Any

from herd.platform.errors import ConfigError, HerdError
from herd.registry.records import AbsentOr, Expected, MetaMatch


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
    """A compare-and-set lost: the record's epoch was not the expected one (or, when the
    expectation was a :class:`MetaMatch`, its meta did not have those values). ``actual``:
    the record's epoch, None when it is absent."""

    def __init__(self, key: str, expected: Expected, actual: int | None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        if isinstance(expected, MetaMatch):
            found = "no record" if actual is None else f"epoch {actual} without those values"
            super().__init__(f"epoch conflict on {key!r}: expected meta {expected.values}, "
                             f"found {found}")
        elif isinstance(expected, AbsentOr):
            super().__init__(f"epoch conflict on {key!r}: expected no record or epoch "
                             f"{expected.epoch}, found {actual}")
        else:
            super().__init__(f"epoch conflict on {key!r}: expected {expected}, found {actual}")


class UnknownRegistry(RegistryError):
    """No registry of that name has been started."""


class RegistryInputError(RegistryError, ConfigError):
    """Bad input to a registry operation (key, meta, handle, timeout, ...): names the field and
    the value. Raised in the caller's process before anything reaches the registry."""

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        ConfigError.__init__(self, message, source="registry", field=field, value=value)


class KeyModeError(RegistryError):
    """The operation does not fit the registry's key mode (e.g. ``dispatch`` on a unique
    registry, ``compare_and_set`` on a duplicate one, or ``Registry.start`` with another mode
    than the existing registry of that name)."""


class HolderDead(RegistryError):
    """The actor offered as a holder is already dead, so it was not registered."""

    def __init__(self, key: str, holder: Any = None) -> None:
        self.key = key
        self.holder = holder
        super().__init__(f"cannot register {key!r}: holder {holder} is dead")
