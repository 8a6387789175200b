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


class ClusterUnavailable(ClusterError, HerdTimeoutError):
    """No cluster answered: at an address within the connect timeout (nothing listening, a dead
    or hung GCS, another network namespace), or, for a call of a connected process, because the
    GCS stopped answering (the head is down; with GCS fault tolerance it may come back). The
    message names the address and what was tried. A ``HerdTimeoutError`` too, so code that
    handles a call's timeout handles an outage the same way."""


class NotConnectedError(HerdError):
    """An operation needs Ray but ``herd.platform.cluster.connect`` has not been called."""


class NoQuorum(HerdError):
    """The member set has no majority of its static member list."""


class ClockSkewError(HerdError):
    """A remote hybrid-logical-clock timestamp is further ahead of local physical time than the
    configured maximum drift; accepting it would drag this clock forward."""
