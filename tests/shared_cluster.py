"""One healthy 3-node, 2-region cluster shared by every test module that asks for the plain
``cluster`` fixture (no ``CLUSTER_OPTIONS``, no ``OWN_CLUSTER = True``, no ``cluster`` fixture
of its own). Starting and stopping a cluster costs 10-20 s, so the suite orders those modules
next to each other, on one pytest-xdist worker (``order_items``, ``group_for_workers``; those
that set ``DISTURBS_CLUSTER = True``, as they kill or add nodes, last) and starts the cluster
once for all of them.

After each module the cluster is checked: a module that killed, paused, partitioned or added a
node (or whose driver left it) leaves it in a state the next module must not inherit, so it is
shut down and the next module gets a fresh one. The last module that uses it shuts it down, so
it does not sit idle beside the clusters of later modules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import ray

from herd.platform.local.cluster import LocalCluster

NODES = 3


def owns_its_cluster(module: object) -> bool:
    """Whether a module starts its own cluster for the ``cluster`` fixture."""
    names = vars(module)
    return bool(names.get("CLUSTER_OPTIONS")) or bool(names.get("OWN_CLUSTER")) \
        or "cluster" in names


def uses_shared_cluster(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return (module is not None and "cluster" in getattr(item, "fixturenames", ())
            and not owns_its_cluster(module))


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def order_items(items: list[pytest.Item]) -> list[str]:
    """Reorder ``items`` in place: first the modules on the shared cluster, one after another
    (those that set ``DISTURBS_CLUSTER = True`` last), then the other cluster and chaos modules,
    then the unit tests (small units that fill the workers at the end of a parallel run). Every
    module keeps its own test order. Returns the shared modules' node ids, in run order."""
    shared = [item for item in items if uses_shared_cluster(item)]
    disturbs = {module_of(item): bool(getattr(item.module, "DISTURBS_CLUSTER", False))
                for item in shared}
    # modules that add or kill nodes go last: only the module after one needs a fresh cluster
    modules = sorted(dict.fromkeys(module_of(item) for item in shared),
                     key=lambda module: disturbs[module])
    rank = {module: i for i, module in enumerate(modules)}
    chosen = set(modules)
    shared.sort(key=lambda item: rank[module_of(item)])
    others = [item for item in items if module_of(item) not in chosen]
    unit = [item for item in others if "/unit/" in f"/{module_of(item)}"]
    cluster = [item for item in others if "/unit/" not in f"/{module_of(item)}"]
    items[:] = shared + cluster + unit
    return modules


def group_for_workers(items: list[pytest.Item], shared_modules: list[str]) -> None:
    """Mark each test with its pytest-xdist group (``--dist loadgroup``): a module runs whole on
    one worker (module fixtures start its cluster once), and the shared-cluster modules run
    together on one worker (they share its cluster)."""
    shared = set(shared_modules)
    for item in items:
        module = module_of(item)
        item.add_marker(pytest.mark.xdist_group("shared-cluster" if module in shared
                                                else module))


class SharedCluster:
    """The shared cluster: started on first use, checked after each module, stopped after the
    last module that uses it (or when found unhealthy)."""

    def __init__(self, start: Callable[[], LocalCluster]) -> None:
        self.start = start
        self.cluster: LocalCluster | None = None
        self.node_ids: frozenset[str] = frozenset()
        self.remaining: list[str] = []

    def acquire(self) -> LocalCluster:
        if self.cluster is None:
            self.cluster = self.start()
            self.node_ids = frozenset(node.node_id for node in self.cluster.nodes)
        elif not connected_to(self.cluster):
            self.cluster.connect(log_to_driver=False)
        return self.cluster

    def release(self, module: str) -> None:
        if module in self.remaining:
            self.remaining.remove(module)
        if self.cluster is not None and (not self.remaining or not self.healthy()):
            self.close()

    def healthy(self) -> bool:
        cluster = self.cluster
        if cluster is None or len(cluster.nodes) != NODES:
            return False
        if any(node.state != "running" or not node.alive for node in cluster.nodes):
            return False
        if not connected_to(cluster):
            return False
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        return alive == self.node_ids

    def close(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.shutdown()


def connected_to(cluster: LocalCluster) -> bool:
    if not ray.is_initialized():
        return False
    try:
        return bool(ray.get_runtime_context().gcs_address == cluster.address)
    except Exception:  # a driver half torn down by another module's cluster
        return False
