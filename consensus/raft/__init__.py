"""The pure Raft core: no Ray, no clock, no I/O (ticks and messages in; messages, entries to
persist and entries to apply out)."""

from herd.consensus.raft.core import RaftConfig
from herd.consensus.raft.messages import (
    ConfChange,
    Entry,
    HardState,
    Membership,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
)
from herd.consensus.raft.node import NodeStatus, RaftNode

__all__ = [
    "ConfChange", "Entry", "HardState", "Membership", "Message", "MessageType", "NodeStatus",
    "RaftConfig", "RaftNode", "ReadState", "Ready", "Snapshot",
]
