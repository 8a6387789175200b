"""The errors of herd.consensus, all ``HerdError``s."""

from __future__ import annotations

from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError

__all__ = [
    "CommandInvalid", "ConsensusError", "GroupUnavailable", "MachineInvalid", "NotLockHolder",
    "OutcomeUnknown",
]


class ConsensusError(HerdError):
    """Base class of the consensus layer's errors."""


class CommandInvalid(ConfigError, ConsensusError):
    """A command or query does not validate against the machine's models (nothing was sent)."""


class MachineInvalid(ConfigError, ConsensusError):
    """The class given as ``machine=`` lacks ``apply``, ``snapshot`` or ``restore``."""


class OutcomeUnknown(ConsensusError, HerdTimeoutError):
    """The command may or may not have been applied (the leader died or the deadline passed
    after it was appended). It is applied at most once: retries carried the same client id and
    sequence number, which the machine deduplicates."""

    def __init__(self, message: str, *, client: str, sequence: int) -> None:
        super().__init__(message)
        self.client, self.sequence = client, sequence


class GroupUnavailable(ConsensusError, HerdTimeoutError):
    """No leader could be reached before the deadline (the command was not appended)."""


class NotLockHolder(ConsensusError):
    """A lock was released (or used) by a client that does not hold it, or whose lease ran out."""
