"""herd.replication: CRDT stores replicated across regions, one replica per region.

    from herd.replication import ReplicatedStore
    store = ReplicatedStore.start("sessions", regions=["us-east", "us-west"], kind="lww_map")
    store.put("user-1", {"cart": 3}, consistency="quorum")

* ``protocol.py``: the versioned wire messages and the ``receive(bytes) -> bytes`` contract.
* ``core.py`` (+ ``peers.py``, ``state.py``): the pure protocol core (delta intervals with
  sequence numbers and acks, digest repair, rejection of bad messages).
* ``replica.py`` (+ ``sync.py``, ``durability.py``, ``transport.py``): the replica actor.
* ``store.py`` (+ ``supervision.py``, ``models.py``): the driver API.
"""

from herd.replication.core import CoreConfig, ReplicaCore
from herd.replication.errors import (
    ConsistencyUnavailable,
    InvalidValue,
    QuorumNotAchieved,
    ReplicationError,
    ReplicaUnavailable,
    StoreExists,
    StoreNotFound,
    UnknownRegion,
    ValueTooLarge,
    WrongValueType,
)
from herd.replication.models import StoreSettings, TransportSpec
from herd.replication.store import ReplicatedStore
from herd.replication.transport import PeerTransport, PeerUnreachable

__all__ = ["ConsistencyUnavailable", "CoreConfig", "InvalidValue", "PeerTransport",
           "PeerUnreachable", "QuorumNotAchieved", "ReplicaCore", "ReplicaUnavailable",
           "ReplicatedStore", "ReplicationError", "StoreExists", "StoreNotFound",
           "StoreSettings", "TransportSpec", "UnknownRegion", "ValueTooLarge",
           "WrongValueType"]
