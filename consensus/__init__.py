"""herd.consensus: Raft groups on Ray (a pure core, supervised members, KV, locks, election).

* ``raft/``: the pure Raft core (``RaftNode``: ticks and messages in; messages, entries to
  persist and entries to apply out);
* ``wal``: the per-node write-ahead log (fsync, group commit, recovery);
* ``machine``: the user machine contract and the host that deduplicates commands;
  ``kv``, ``locks`` (``Lock``, ``Election``), ``counter``: the built-in machines;
* ``member``: the member actor; ``reconcile`` + ``planner``: the leader keeps the group whole;
  ``hosting``: where members run; ``group``: the client (``Group.start``, ``command``,
  ``query``, ``status``).
"""

from herd.consensus.counter import Counter
from herd.consensus.errors import (
    CommandInvalid,
    ConsensusError,
    GroupUnavailable,
    MachineInvalid,
    NotLockHolder,
    OutcomeUnknown,
)
from herd.consensus.group import CommandFailed, Group
from herd.consensus.kv import KV
from herd.consensus.locks import Election, Lock

__all__ = [
    "KV", "CommandFailed", "CommandInvalid", "ConsensusError", "Counter", "Election", "Group",
    "GroupUnavailable", "Lock", "MachineInvalid", "NotLockHolder", "OutcomeUnknown",
]
