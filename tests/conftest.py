"""Shared fixtures. Cluster fixtures start real ``ray start`` nodes bound to 127.0.0.1 (the suite
runs inside a private network namespace, see the Makefile) and are shared per module.

Actors' output stays in the clusters' log files instead of flooding pytest's: drivers connect
with ``log_to_driver`` off (``RAY_LOG_TO_DRIVER=0`` for every driver of the run, set before Ray
is imported). When a test that used a cluster fails, its report gets a "cluster logs" section:
the paths and tails of the log files the cluster wrote to during the test.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_LOG_TO_DRIVER", "0")  # read once, when Ray is imported

import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from shared_cluster import (  # noqa: E402
    SharedCluster,
    group_for_workers,
    order_items,
    owns_its_cluster,
)
from worker_network import isolate_worker  # noqa: E402

from herd.platform.cluster import LocalCluster  # noqa: E402
from herd.supervisors.dynamic.supervisor import DynamicSupervisor  # noqa: E402

REGIONS = ["us-east", "us-west"]
LOG_TAIL_LINES = 25
LOG_SECTION_CHARS = 20_000
RAY_LOGS = ("worker-*.out", "worker-*.err", "raylet.out", "raylet.err", "gcs_server.out",
            "gcs_server.err", "python-core-worker-*.log")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-long", action="store_true", default=False,
                     help="also run the long end-to-end and soak tests (marked `long`; "
                          "`make test-long`)")


_SHARED = SharedCluster(lambda: start_cluster(3))


def pytest_configure(config: pytest.Config) -> None:
    isolate_worker()  # each xdist worker in a network namespace of its own


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _SHARED.remaining = order_items(items)
    group_for_workers(items, _SHARED.remaining)
    if config.getoption("--run-long"):
        return
    skip = pytest.mark.skip(reason="long: runs with --run-long (make test-long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _SHARED.close()


def start_cluster(nodes: int = 3, **kwargs: object) -> LocalCluster:
    cluster = LocalCluster(nodes=nodes, regions=kwargs.pop("regions", REGIONS), **kwargs)  # type: ignore[arg-type]
    try:
        cluster.connect(log_to_driver=False)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A connected 3-node, 2-region cluster for the tests of one module. Modules without
    options share one across modules (see shared_cluster.py); a module that sets
    ``CLUSTER_OPTIONS`` (LocalCluster keyword arguments, e.g. ``health_check``) or
    ``OWN_CLUSTER = True`` (it needs a fresh cluster) gets its own."""
    if not owns_its_cluster(request.module):
        try:
            yield _SHARED.acquire()
        finally:
            _SHARED.release(request.node.nodeid)
        return
    c = start_cluster(3, **getattr(request.module, "CLUSTER_OPTIONS", {}))
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def dynamic_sups() -> Iterator[list[DynamicSupervisor]]:
    """Dynamic supervisors a test starts (append them); each is stopped at the end, whatever
    happened."""
    started: list[DynamicSupervisor] = []
    yield started
    for sup in started:
        sup.stop(timeout=60.0)


def cluster_log_files(cluster: LocalCluster, since: float) -> list[Path]:
    """The node launch logs and Ray's per-node logs (workers, raylet, GCS) of ``cluster``
    written to at or after ``since`` (a ``time.time()``), oldest first."""
    candidates = list((cluster.run_dir / "logs").glob("*.log"))
    for session_logs in cluster.ray_tmp.glob("*/session_latest/logs"):
        for pattern in RAY_LOGS:
            candidates += session_logs.glob(pattern)
    fresh = []
    for path in candidates:
        try:
            modified = path.stat().st_mtime
        except OSError:
            continue
        if modified >= since and path.stat().st_size > 0:
            fresh.append((modified, path))
    return [path for _, path in sorted(fresh)]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def cluster_logs_section(clusters: list[LocalCluster], since: float) -> str:
    parts = []
    for cluster in clusters:
        for path in cluster_log_files(cluster, since):
            parts.append(f"--- {path} (last {LOG_TAIL_LINES} lines)\n{_tail(path, LOG_TAIL_LINES)}")
    text = "\n".join(parts)
    if len(text) > LOG_SECTION_CHARS:
        text = "... (earlier lines cut)\n" + text[-LOG_SECTION_CHARS:]
    return text


_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.stash[_STARTED] = time.time()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    clusters = [value for value in funcargs.values() if isinstance(value, LocalCluster)]
    if not clusters:
        return
    section = cluster_logs_section(clusters, item.stash.get(_STARTED, 0.0) - 1.0)
    if section:
        report.sections.append(("cluster logs", section))
