"""Starting and stopping a store's replicas under herd's dynamic supervisors.

One dynamic supervisor per region (``herd-replication-<region>``, members restricted to that
region's nodes with ``members={"region": region}``), shared by every store: a replica is placed,
and after a node death re-placed, only on a node of its region, and the member actors are paid
once per node and region rather than once per store. Each replica is a permanent child
registered as ``herd-replication-<region>/<store>.<region>``.
"""

from __future__ import annotations

import contextlib

from herd.platform import kv
from herd.platform.waiting import deadline_in, time_left
from herd.registry import via
from herd.replication.durability import KVDurability
from herd.replication.models import StoreSettings, replica_id, replica_name, supervisor_name
from herd.replication.replica import Replica, epoch_key
from herd.supervisors import ChildAlreadyStarted, ChildSpec, DynamicSupervisor
from herd.supervisors.errors import ChildNotFound, SupervisorError

MAX_RESTARTS = 10
MAX_SECONDS = 60.0


def region_supervisor(region: str, timeout: float) -> DynamicSupervisor:
    return DynamicSupervisor.start(supervisor_name(region), members={"region": region},
                                   distribution="hash_ring", max_restarts=MAX_RESTARTS,
                                   max_seconds=MAX_SECONDS, timeout=timeout)


def ensure_replicas(settings: StoreSettings, timeout: float) -> None:
    """Start the replica of every local region unless it runs; wait until each answers."""
    deadline = deadline_in(timeout)
    for region in settings.local_regions:
        supervisor = region_supervisor(region, time_left(deadline))
        spec = ChildSpec(id=replica_id(settings.name, region), actor=Replica,
                         args=(settings.model_dump(mode="json"), region),
                         restart="permanent", shutdown=5000)
        with contextlib.suppress(ChildAlreadyStarted):
            supervisor.start_child(spec, timeout=time_left(deadline))
    for region in settings.local_regions:
        via(replica_name(settings.name, region), timeout=time_left(deadline)).ready.call()


def stop_replicas(settings: StoreSettings, timeout: float, forget_data: bool) -> None:
    deadline = deadline_in(timeout)
    for region in settings.local_regions:
        try:
            supervisor = DynamicSupervisor.get(supervisor_name(region))
            supervisor.terminate_child(replica_id(settings.name, region),
                                       timeout=time_left(deadline))
        except (ChildNotFound, SupervisorError):
            pass
        if forget_data:
            KVDurability(settings.name, region).destroy()
            kv.delete(epoch_key(settings.name, region))
