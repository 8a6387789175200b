"""``herd bench dashboard``: how soon an open dashboard shows a failover, and what it costs.

* latency, over ``kills`` rounds: a node joins, a lightweight probe child is started on it
  (least_loaded puts it on the empty member), the node is SIGKILLed. Timed from the GCS
  declaring the node dead (``ray.nodes()`` polled every 20 ms) to, for herd, the dashboard's
  event stream delivering the probe's ``failed_over`` event (what the page draws from; the
  browser test shows the page follows within ~0.5 s), and for the alternative, a driver polling
  ``which_children()`` once a second (a ``watch herd status`` loop) seeing it on a new node.
* cost: CPU seconds per second of every process of the cluster's nodes, and of the dashboard's
  own process: idle without the dashboard, idle with it and one page's stream open, and during
  a failover of ``children`` lightweight children without and with it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import ray

from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform.errors import HerdTimeoutError
from herd.platform.local.cluster import LocalCluster
from herd.platform.waiting import wait_until
from herd.supervisors import ChildSpec, DynamicSupervisor
from herd.supervisors.apps.examples import Counter

SUPERVISOR = "bench-dashboard"
WAIT_S = 120.0
POLL_S = 1.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """utime + stime (s) of each pid still running."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return found


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the processes of ``before`` that still run used since then."""
    return sum(now - before[pid] for pid, now in cpu_by_pid(list(before)).items())


class Stream:
    """One page's event stream: every ``event`` message with the time it arrived."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.ended: str | None = None  # why the stream stopped, once it has
        self.response = urllib.request.urlopen(f"{url}/api/stream", timeout=WAIT_S)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "event":
                    self.events.append((time.monotonic(), json.loads(line[6:])))
            self.ended = "the server closed it"
        except (OSError, ValueError, AttributeError) as exc:  # AttributeError: closed by us
            self.ended = f"{type(exc).__name__}: {exc}"

    def about(self, child_id: str) -> str:
        """What the stream said about ``child_id``, for an error message."""
        kinds = [e["kind"] for _, e in self.events
                 if e.get("child_id") == child_id or child_id in e.get("children", [])]
        every = Tally(e["kind"] for _, e in self.events)
        return (f"{len(self.events)} events in all ({dict(every)}), about {child_id}: "
                f"{kinds or 'none'}; stream "
                f"{'open' if self.ended is None else 'ended: ' + self.ended}")

    def failed_over(self, child_id: str, from_node: str, after: float) -> float | None:
        """When the stream said ``child_id`` failed over from ``from_node``: an event naming
        it, or a folded one from that node (it names only a sample of its children)."""
        return next((at for at, e in self.events if at >= after and e["kind"] == "failed_over"
                     and (e.get("child_id") == child_id or child_id in e.get("children", [])
                          or (e.get("from_node") == from_node
                              and e.get("count", 1) > len(e.get("children", []))))),
                    None)

    def close(self) -> None:
        self.response.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_dashboard(cluster: LocalCluster, log_path: Path
                     ) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    herd = str(Path(sys.executable).with_name("herd"))
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([herd, "dashboard", "--address", cluster.address, "--port",
                                    str(port)], stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, **cluster.env()})
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/state", timeout=2):
                return True
        except OSError:
            return False

    wait_until(answers, WAIT_S, interval=0.2, what="the dashboard answering")
    return process, url


def _shown_node(url: str, child_id: str) -> str | None:
    """The node the dashboard's census (what the page draws) shows ``child_id`` on."""
    query = urllib.parse.urlencode({"supervisor": SUPERVISOR, "id": child_id})
    try:
        with urllib.request.urlopen(f"{url}/api/child?{query}", timeout=5) as response:
            return json.loads(response.read()).get("node_id")
    except OSError:
        return None


def _declared_dead(node_id: str) -> float:
    wait_until(lambda: not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == node_id),
               WAIT_S, interval=0.02, what="the node declared dead")
    return time.monotonic()


def _latency_rounds(cluster: LocalCluster, sup: DynamicSupervisor, stream: Stream,
                    url: str, kills: int) -> tuple[list[float], list[float]]:
    pushed, polled = [], []
    for round_ in range(kills):
        node = cluster.add_node(region="us-west")
        wait_until(lambda n=node: any(m["node_id"] == n.node_id and m["member"]
                                      for m in sup.members()),
                   WAIT_S, interval=0.2, what="a member on the new node")
        probe = f"probe-{round_}"
        sup.start_child(ChildSpec(id=probe, actor=Counter, kind="lightweight"), timeout=WAIT_S)
        info = next(c for c in sup.which_children() if c.id == probe)
        if info.node_id != node.node_id:
            continue  # placed elsewhere: this round measures nothing
        cluster.kill_node(node)
        dead = _declared_dead(node.node_id)
        seen_by_poll = None
        while seen_by_poll is None and time.monotonic() < dead + WAIT_S:
            current = next(c for c in sup.which_children() if c.id == probe)
            if current.node_id != node.node_id and current.status == "running":
                seen_by_poll = time.monotonic()
            else:
                time.sleep(POLL_S)
        try:
            pushed_at = wait_until(
                lambda p=probe, n=node.node_id, d=dead: stream.failed_over(p, n, d - 5),
                WAIT_S, interval=0.02, what="the failover on the dashboard's stream")
            wait_until(lambda p=probe, n=node.node_id: _shown_node(url, p) not in (None, n),
                       WAIT_S, interval=0.1, what="the probe on its new node in the census")
        except HerdTimeoutError as exc:
            raise HerdTimeoutError(f"{exc} ({stream.about(probe)})") from None
        pushed.append(max(0.0, pushed_at - dead))
        polled.append((seen_by_poll or dead + WAIT_S) - dead)
    return pushed, polled


def _cpu_rate(cluster: LocalCluster, seconds: float, extra: list[int]) -> tuple[float, float]:
    """(cluster CPU s/s, extra processes' CPU s/s) over ``seconds``."""
    before, before_extra = cpu_by_pid(cluster.pids), cpu_by_pid(extra)
    time.sleep(seconds)
    return cpu_since(before) / seconds, cpu_since(before_extra) / seconds


def _failover_cpu(cluster: LocalCluster, sup: DynamicSupervisor, total: int,
                  extra: list[int]) -> tuple[float, float, float, int]:
    """Kill the worker with the most children; (cluster CPU s/s, extra CPU s/s, seconds until
    every child runs again, children moved)."""
    counts: dict[str, int] = {}
    for child in sup.which_children():
        counts[child.node_id or ""] = counts.get(child.node_id or "", 0) + 1
    workers = {n.node_id for n in cluster.worker_nodes if n.alive}
    victim = max((n for n in counts if n in workers), key=counts.__getitem__)
    survivors = [p for p in cluster.pids if p not in cluster.node_by_id(victim).pids]
    began, before, before_extra = time.monotonic(), cpu_by_pid(survivors), cpu_by_pid(extra)
    cluster.kill_node(cluster.node_by_id(victim))
    wait_until(lambda: (lambda cs: len(cs) == total and all(
        c.status == "running" and c.node_id != victim for c in cs))(sup.which_children()),
        WAIT_S * 3, interval=0.5, what="every child running again")
    took = time.monotonic() - began
    return cpu_since(before) / took, cpu_since(before_extra) / took, took, counts[victim]


def _start_lightweight(sup: DynamicSupervisor, children: int) -> None:
    for first in range(0, children, 1000):
        sup.start_children([ChildSpec(id=f"lw-{j}", actor=Counter, kind="lightweight")
                            for j in range(first, min(children, first + 1000))],
                           timeout=WAIT_S)


def run(kills: int = 10, children: int = 10_000, idle_s: float = 20.0) -> BenchReport:
    """Without the dashboard: idle, then a failover; with it: idle, a failover, the latency
    rounds (same children throughout)."""
    rows: list[dict[str, Any]] = []
    with bench_cluster(nodes=4) as cluster:
        # two of the three workers die before the latency rounds: a survivor may hold all
        # the children, and the probe must still find room
        sup = DynamicSupervisor.start(SUPERVISOR, distribution="least_loaded",
                                      lightweight={"max_children_per_host": children + kills + 1},
                                      timeout=WAIT_S)
        _start_lightweight(sup, children)
        total = len(sup.which_children())
        idle_without, _ = _cpu_rate(cluster, idle_s, [])
        without_cpu, _, without_s, moved_without = _failover_cpu(cluster, sup, total, [])
        log_path = Path(tempfile.mkdtemp(prefix="herd-bench-dashboard-")) / "dashboard.log"
        process, url = _start_dashboard(cluster, log_path)
        stream = Stream(url)
        try:
            idle_with, dash_idle = _cpu_rate(cluster, idle_s, [process.pid])
            with_cpu, dash_cpu, with_s, moved_with = _failover_cpu(
                cluster, sup, total, [process.pid])
            pushed, polled = _latency_rounds(cluster, sup, stream, url, kills)
        except HerdTimeoutError as exc:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            raise HerdTimeoutError(f"{exc}; the dashboard's log ({log_path}) ends with:\n"
                                   + "\n".join(tail)) from None
        finally:
            stream.close()
            process.terminate()
            process.wait(timeout=30)
    rows.append({"measure": "failover shown after detection",
                 **{f"sse_{k}": v for k, v in summary_ms(pushed).items()},
                 **{f"poll_1s_{k}": v for k, v in summary_ms(polled).items()}})
    rows.append({"measure": "cluster CPU s/s, idle", "without": idle_without,
                 "with_dashboard": idle_with, "dashboard_process": dash_idle,
                 "children": total})
    rows.append({"measure": "cluster CPU s/s, failover", "without": without_cpu,
                 "with_dashboard": with_cpu, "dashboard_process": dash_cpu,
                 "moved_without": moved_without, "moved_with": moved_with,
                 "took_s_without": without_s, "took_s_with": with_s})
    return BenchReport("dashboard", rows, params={"kills": kills, "children": children,
                                                  "idle_s": idle_s},
                       notes=["sse: GCS declares the node dead -> the probe's failed_over event "
                              "on the dashboard's stream; poll_1s: a driver polling "
                              "which_children() every second",
                              "CPU: utime+stime of every process of the cluster's nodes "
                              "(/proc), per second of wall time"])
