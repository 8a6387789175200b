"""Registry errors that ``herd.platform.errors`` does not define; all are ``RegistryError``s."""

from __future__ import annotations

from typing import Any

from herd.platform.errors import ConfigError, RegistryError


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
