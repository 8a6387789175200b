"""herd's global registry: cluster-unique names on Ray, with fencing epochs and cached lookups.

    from herd.registry import AsyncRegistry, Registry, via

    reg = Registry.start("default")                  # or keys="duplicate", shards=N
    reg.register("counter-1", handle, meta={"role": "primary"})
    reg.lookup("counter-1")                          # a dict read after the first lookup
    ray.get(via("counter-1").incr.remote())
    reg.unregister("counter-1", handle)              # the caller's own; reg.remove(key): anyone's

    # in an asyncio actor: the same operations as coroutines (or reg.aio of a Registry)
    registry = await AsyncRegistry.start("default")
    await registry.compare_and_set("child-1", 0, meta={"owner": node_id})

* One control-plane actor per shard (``herd.registry.actor``) is the linearizable arbiter; its
  state is written through to the GCS KV store and survives its restart.
* Every change of a record raises its ``epoch`` (fencing token); ``compare_and_set`` is the
  primitive supervisors use to claim a child exactly once.
* Holders are watched: records of an actor that exits or dies are removed (or, with
  ``on_holder_death="clear"``, kept without holder) and watchers are told
  (``herd.registry.holders`` states the bounds).
* ``watch`` streams ``Registered`` / ``Unregistered`` / ``Updated`` events to drivers;
  ``subscribe`` pushes them to actors.
"""

from herd.registry.aio import AsyncRegistry
from herd.registry.client import Registry
from herd.registry.errors import (
    AlreadyRegistered,
    EpochConflict,
    HolderDead,
    KeyModeError,
    NotRegistered,
    RegistryError,
    RegistryInputError,
    UnknownRegistry,
)
from herd.registry.records import (
    AbsentOr,
    Event,
    EventBatch,
    MetaMatch,
    Registered,
    Registration,
    Snapshot,
    Unregistered,
    Updated,
    Written,
)
from herd.registry.via import Via, via
from herd.registry.watch import Watch

__all__ = [
    "AlreadyRegistered",
    "AsyncRegistry",
    "EpochConflict",
    "Event",
    "EventBatch",
    "HolderDead",
    "KeyModeError",
    "AbsentOr",
    "MetaMatch",
    "NotRegistered",
    "Registered",
    "Registration",
    "Registry",
    "RegistryError",
    "RegistryInputError",
    "Snapshot",
    "Unregistered",
    "UnknownRegistry",
    "Updated",
    "Via",
    "Watch",
    "Written",
    "via",
]
