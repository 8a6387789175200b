"""LocalCluster: real `ray start` nodes, stopped without strays; token auth refuses strangers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from herd.platform.cluster import LocalCluster, connect, disconnect
from herd.platform.gcs import nodes
from herd.platform.local import processes
from herd.platform.membership import Membership
from herd.platform.waiting import wait_until


def test_start_label_and_shutdown_leaves_no_process() -> None:
    cluster = LocalCluster(nodes=2, regions=["us-east", "us-west"])
    try:
        assert len(cluster.nodes) == 2 and all(n.node_id for n in cluster.nodes)
        worker = cluster.worker_nodes[0]
        assert worker.labels == {"region": "us-west", "zone": "us-west-a"}
        assert worker.resources["region:us-west"] > 0
        pids = cluster.pids
        assert len(pids) >= 6  # gcs, raylets, agents, ...
        assert os.stat(cluster.token_path).st_mode & 0o777 == 0o600
        # GCS fault tolerance is on by default: the GCS keeps its tables in the run dir.
        assert cluster.head_process.fault_tolerant
        assert any(cluster.head_process.storage_path.iterdir())
        cluster.connect()
        labels = {n.node_id: n.region for n in nodes() if n.alive}
        assert labels[worker.node_id] == "us-west"
    finally:
        cluster.shutdown()
    assert cluster.pids == []
    assert not [p for p in pids if processes.is_running(p)]


def test_client_without_token_is_refused() -> None:
    with LocalCluster(nodes=1) as cluster:
        script = textwrap.dedent(f"""
            import ray
            try:
                ray.init(address="{cluster.address}")
            except Exception as exc:
                print("REFUSED", type(exc).__name__)
            else:
                print("CONNECTED")
        """)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        # a refused connect is retried once a second, 20 times by default: 3 are enough here
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64,
                    "RAY_gcs_rpc_server_connect_timeout_s": "5",
                    "RAY_gcs_server_port_wait_time_s": "3"})
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=120)
        assert "REFUSED" in out.stdout, out.stdout + out.stderr[-2000:]
        assert "InvalidAuthToken" in out.stderr or "Unauthenticated" in out.stderr
        env["RAY_AUTH_TOKEN"] = cluster.token_path.read_text().strip()
        ok = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
        assert "CONNECTED" in ok.stdout, ok.stdout + ok.stderr[-2000:]


def test_embedded_single_node_membership() -> None:
    info = connect()
    try:
        assert info.mode == "embedded" and info.namespace == "herd"
        assert connect().address == info.address  # idempotent
        nodes = Membership.start().nodes()
        assert len(nodes) == 1 and nodes[0].is_head and nodes[0].alive
    finally:
        disconnect()


def test_owned_cluster_dies_with_its_owner(tmp_path: Any) -> None:
    """A process that starts a cluster and is SIGKILLed leaves no Ray process behind."""
    script = textwrap.dedent(f"""
        import json, os, signal
        from herd.platform.cluster import LocalCluster
        cluster = LocalCluster(nodes=2, run_dir="{tmp_path / 'owned'}")
        print(json.dumps(cluster.pids), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=180)
    pids = json.loads(out.stdout.strip().splitlines()[-1])
    assert pids
    wait_until(lambda: not [p for p in pids if processes.is_running(p)], 30, interval=0.2,
               what="reaper stops the orphaned cluster")


FAILING_TEST = '''
import time
import ray

@ray.remote
class Talker:
    def say(self):
        print("hello-from-an-actor", flush=True)
        return 1

def test_deliberately_fails(cluster):
    talker = Talker.remote()
    assert ray.get(talker.say.remote(), timeout=120) == 1
    time.sleep(2)  # the worker's output reaches its log file
    assert False, "deliberate failure"
'''


def test_failed_test_gets_the_cluster_logs_and_actor_output_stays_out(tmp_path: Any) -> None:
    """tests/conftest.py: actors' output is not printed by the driver, and a failed test that
    used a cluster reports the tails of the cluster's log files."""
    (tmp_path / "test_fails.py").write_text(FAILING_TEST)
    tests_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(tests_dir)}
    env.pop("RAY_LOG_TO_DRIVER", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p",
                          "no:cacheprovider", "-q", "-rN", "--rootdir", str(tmp_path),
                          str(tmp_path / "test_fails.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "deliberate failure" in out.stdout, out.stdout[-3000:]
    section = out.stdout.split("cluster logs", 1)[1]
    assert "worker-" in section and "hello-from-an-actor" in section, out.stdout[-3000:]
    before = out.stdout.split("cluster logs", 1)[0]
    assert "hello-from-an-actor" not in before  # not echoed by the driver (log_to_driver off)
