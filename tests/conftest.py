"""Shared fixtures. Cluster fixtures start real ``ray start`` nodes bound to 127.0.0.1 (the suite
runs inside a private network namespace, see the Makefile) and are shared per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herd.platform.cluster import LocalCluster

REGIONS = ["us-east", "us-west"]


def start_cluster(nodes: int = 3, **kwargs: object) -> LocalCluster:
    cluster = LocalCluster(nodes=nodes, regions=kwargs.pop("regions", REGIONS), **kwargs)  # type: ignore[arg-type]
    try:
        cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A connected 3-node, 2-region cluster shared by the tests of one module; a module may set
    ``CLUSTER_OPTIONS`` (LocalCluster keyword arguments, e.g. ``health_check``)."""
    c = start_cluster(3, **getattr(request.module, "CLUSTER_OPTIONS", {}))
    try:
        yield c
    finally:
        c.shutdown()
