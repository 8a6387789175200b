"""herd's Prometheus metrics and its dashboard, on one real 3-node, 2-region cluster.

The metrics test scrapes every node's metrics agent (``ray start --metrics-export-port``; it runs
with Ray's dashboard off) and checks that herd's series exist and that the failover series move
after a node is SIGKILLed. The panels test reads the data layers' panels (a consensus group, a
presence) from the dashboard's API; the browser test (further down) drives the page in headless
Chromium on the same cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from herd.consensus import Group
from herd.platform.cluster import LocalCluster
from herd.platform.waiting import wait_until
from herd.registry import via
from herd.replication import ReplicatedStore
from herd.replication.presence import Presence
from herd.supervisors import ChildSpec, DynamicSupervisor, Supervisor
from herd.supervisors.apps.examples import Counter

REPO = Path(__file__).resolve().parents[2]
REGIONS = ["us-east", "us-west"]
WAIT_S = 60.0
FAST_METRICS = {"RAY_metrics_report_interval_ms": "1000", "HERD_METRICS_INTERVAL_S": "1"}
#: the module's cluster (tests/conftest.py): 3 nodes, 2 regions; each test kills one worker
CLUSTER_OPTIONS = {"extra_env": FAST_METRICS}
SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")

#: What must be exported by a cluster running a dynamic supervisor (actor and lightweight
#: children), a static supervisor and a replicated store (Ray adds its ``ray_`` prefix).
REQUIRED = [
    "ray_herd_dsup_children_count", "ray_herd_dsup_intensity_used_ratio",
    "ray_herd_dsup_unplaced_children_count",
    "ray_herd_sup_children_count", "ray_herd_sup_intensity_used_ratio",
    "ray_herd_lw_children_count", "ray_herd_lw_loop_lag_seconds", "ray_herd_lw_memory_bytes",
    "ray_herd_registry_names_count", "ray_herd_registry_ops_total",
    "ray_herd_registry_commit_latency_seconds_count", "ray_herd_registry_batch_size_writes_count",
    "ray_herd_registry_watch_subscribers_count",
    "ray_herd_membership_nodes_count", "ray_herd_membership_events_total",
    "ray_herd_membership_scan_latency_seconds_count",
    "ray_herd_repl_pending_deltas_count", "ray_herd_repl_buffer_bytes",
]


@pytest.fixture(scope="module")
def workload(cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    """A dynamic supervisor with actor and lightweight children, a static supervisor, a store."""
    dsup = DynamicSupervisor.start("dash", distribution="least_loaded", reconcile_interval_s=0.5,
                                   timeout=WAIT_S)
    for i in range(4):
        dsup.start_child(ChildSpec(id=f"actor-{i}", actor=Counter), timeout=WAIT_S)
    dsup.start_children([ChildSpec(id=f"lw-{i}", actor=Counter, kind="lightweight")
                         for i in range(40)], timeout=WAIT_S)
    static = Supervisor.start("dash-static", [ChildSpec(id="one", actor=Counter)],
                              timeout=WAIT_S)
    store = ReplicatedStore.start("dash-store", regions=REGIONS, sync_interval_ms=200)
    store.put("k", 1, consistency="local")
    yield {"dsup": dsup, "static": static, "store": store}
    static.stop(timeout=WAIT_S)
    dsup.stop(timeout=WAIT_S)


def scrape(cluster: LocalCluster) -> dict[str, float]:
    """Every herd series of every live node's metrics agent: ``name{labels}`` -> value."""
    found: dict[str, float] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        try:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            continue  # a node that is going away
        for line in body.splitlines():
            match = SERIES.match(line)
            if match and match["name"].startswith("ray_herd_"):
                key = f"{match['name']}{{{match['labels'] or ''}}}"
                found[key] = found.get(key, 0.0) + float(match["value"])
    return found


def scrape_until(cluster: LocalCluster, ready: Any, timeout_s: float = WAIT_S
                 ) -> dict[str, float]:
    """Scrape once a second until ``ready(series)``; the last scrape at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        series = scrape(cluster)
        if ready(series) or time.monotonic() > deadline:
            return series
        time.sleep(1.0)


def total(series: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(value for key, value in series.items()
               if key.split("{", 1)[0] == name and all(w in key for w in wanted))


def names(series: dict[str, float]) -> set[str]:
    return {key.split("{", 1)[0] for key in series}


def test_layer_panels_show_consensus_members_and_presence_trackers(
        cluster: LocalCluster, workload: dict[str, Any], dashboard_url: str) -> None:
    """The data layers' panels find what runs by themselves: a consensus group started after
    the dashboard (a row per member, one leader) and a presence's trackers (a row per node)."""
    group = Group.start("dash-kv", replicas=3, timeout=WAIT_S)
    presence = Presence.start("dash-presence", timeout=WAIT_S)
    try:
        holder = next(c for c in workload["dsup"].which_children() if c.kind == "actor")
        presence.track(holder.handle, "room", "alice", {"at": "desk"})

        def shown() -> dict[str, Any] | None:
            with urllib.request.urlopen(f"{dashboard_url}/api/state", timeout=5) as response:
                panels = json.loads(response.read())["panels"]
            members = [r for r in panels.get("consensus", {}).get("rows", [])
                       if r.get("group") == "dash-kv"]
            trackers = [r for r in panels.get("presence", {}).get("rows", [])
                        if r.get("presence") == "dash-presence"]
            ready = (len(members) == 3 and [r["role"] for r in members].count("leader") == 1
                     and len(trackers) == 3 and sum(r.get("entries") or 0 for r in trackers)
                     >= 1)
            return panels if ready else None

        panels = wait_until(shown, WAIT_S, interval=0.5, what="the group and the trackers")
        assert {r["node"] for r in panels["consensus"]["rows"] if r.get("group") == "dash-kv"} \
            == {n.node_id[:12] for n in cluster.nodes}
        assert panels["caches"]["rows"] == []  # no cache runs: an empty table, not an error
    finally:
        group.stop(timeout=WAIT_S)


def test_metrics_are_scraped_and_move_after_a_failover(cluster: LocalCluster,
                                                       workload: dict[str, Any]) -> None:
    def settled(s: dict[str, float]) -> bool:
        return (set(REQUIRED) <= names(s) and total(s, "ray_herd_lw_children_count") == 40
                and total(s, "ray_herd_dsup_children_count", supervisor="dash") == 44)

    exported = scrape_until(cluster, settled)
    missing = set(REQUIRED) - names(exported)
    assert not missing, f"missing {sorted(missing)}; exported {sorted(names(exported))}"
    assert total(exported, "ray_herd_lw_children_count") == 40
    assert total(exported, "ray_herd_dsup_children_count", supervisor="dash") == 44
    assert total(exported, "ray_herd_sup_children_count", supervisor="dash-static") == 1
    assert total(exported, "ray_herd_membership_nodes_count", state="alive") == 3
    for key in exported:  # bounded tags: no child id ever appears in a tag
        assert "actor-" not in key and "lw-" not in key, key

    dsup: DynamicSupervisor = workload["dsup"]
    victim = next(c for c in dsup.which_children()
                  if c.kind == "actor" and c.node_id != cluster.head.node_id)
    cluster.kill_node(cluster.node_by_id(victim.node_id))
    wait_until(lambda: via(victim.name, timeout=WAIT_S).incr.call() > 0, WAIT_S,
               what="the killed node's child answering again")

    def registry_writes(series: dict[str, float]) -> float:  # the moved child's new holder
        return sum(total(series, "ray_herd_registry_ops_total", kind=kind)
                   for kind in ("register", "compare_and_set", "unregister"))

    writes_before = registry_writes(exported)

    def moved() -> dict[str, float] | None:  # each series reaches the agent on its own period
        now = scrape(cluster)
        return now if (total(now, "ray_herd_dsup_failovers_total", supervisor="dash") >= 1
                       and registry_writes(now) > writes_before
                       and total(now, "ray_herd_dsup_failover_latency_seconds_count") >= 1
                       and total(now, "ray_herd_membership_events_total", kind="NodeDown") >= 1
                       and total(now, "ray_herd_membership_nodes_count", state="alive") == 2
                       ) else None

    wait_until(moved, WAIT_S, interval=1.0,
               what="failover, membership and registry series moving after the kill")


# --------------------------------------------------------------------------- the dashboard
ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
PAGE_AFTER_DETECTION_S = 3.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def herd_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("herd")), *args]


@pytest.fixture(scope="module")
def dashboard_url(cluster: LocalCluster, workload: dict[str, Any],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``herd dashboard`` of the cluster, as a user starts it (its own process)."""
    port = free_port()
    logs = tmp_path_factory.mktemp("dashboard")
    with open(logs / "out", "w") as out:
        process = subprocess.Popen(
            herd_command("dashboard", "--address", cluster.address, "--port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env()})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/api/state") or process.poll() is not None, WAIT_S,
                   interval=0.2, what="the dashboard answering")
        assert process.poll() is None, (logs / "out").read_text()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (Debian's) through /usr/bin/chromedriver; a screenshot of the page
    goes to build/test-artifacts/ when the test fails."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    failed_before = request.session.testsfailed
    try:
        yield driver
    finally:
        if request.session.testsfailed > failed_before:  # the call failed: keep the page
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"]


def text_of(driver: Any, selector: str) -> str | None:
    """The text of the first element ``selector`` matches, read in one script (the page
    re-renders its tables while the test reads them)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector)


def node_cell_of(driver: Any, sup: str, child_id: str) -> str | None:
    return text_of(driver, f'tr[data-child="{sup}/{child_id}"] td.node')


def test_page_follows_a_failover_live_and_refuses_actions_without_the_token(
        cluster: LocalCluster, workload: dict[str, Any], dashboard_url: str,
        browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(dashboard_url)
    wait_until(lambda: "dynamic supervisor dash:" in (text_of(browser, "#trees") or "")
               and "dash-static" in (text_of(browser, "#trees") or ""), WAIT_S,
               interval=0.2, what="the trees on the page")
    assert not console_errors(browser)

    dsup: DynamicSupervisor = workload["dsup"]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    victim = min((c for c in dsup.which_children()
                  if c.node_id != cluster.head.node_id and c.node_id in alive),
                 key=lambda c: c.kind != "actor")  # an actor child if the worker has one
    search = browser.find_element(By.ID, "search")
    search.send_keys(victim.id)
    wait_until(lambda: node_cell_of(browser, "dash", victim.id) == victim.node_id[:12], WAIT_S,
               interval=0.1, what="the child's row on the page")

    cluster.kill_node(cluster.node_by_id(victim.node_id))
    killed = time.monotonic()
    detected = page_moved = None
    deadline = killed + WAIT_S
    while (detected is None or page_moved is None) and time.monotonic() < deadline:
        if detected is None and not any(n["Alive"] for n in ray.nodes()
                                        if n["NodeID"] == victim.node_id):
            detected = time.monotonic()
        shown = node_cell_of(browser, "dash", victim.id)
        if page_moved is None and shown not in (None, victim.node_id[:12]):
            page_moved = time.monotonic()
        time.sleep(0.1)
    assert detected is not None and page_moved is not None, "no failover shown on the page"
    print(f"node declared dead {detected - killed:.2f} s after the kill; page showed the new "
          f"node {page_moved - detected:.2f} s after that")
    assert page_moved - detected <= PAGE_AFTER_DETECTION_S
    new_node = next(c for c in dsup.which_children() if c.id == victim.id).node_id
    assert node_cell_of(browser, "dash", victim.id) == (new_node or "")[:12]
    timeline = text_of(browser, "#timeline") or ""
    assert f"node {victim.node_id[:12]}" in timeline and "down" in timeline, timeline
    assert "reconnecting" not in (text_of(browser, "#connection") or "")

    # an action without the token is refused, on the page and at the endpoint
    browser.execute_script("document.querySelector(arguments[0]).click()",
                           f'tr[data-child="dash/{victim.id}"] button[data-action="restart"]')
    wait_until(lambda: "refused" in (text_of(browser, "#notice") or ""), WAIT_S,
               interval=0.1, what="the refusal on the page")
    assert "missing token" in (text_of(browser, "#notice") or "")
    assert post_action(dashboard_url, "restart", "dash", victim.id, "not-the-token")[0] == 401
    before = next(c for c in dsup.which_children() if c.id == victim.id).incarnation
    status, body = post_action(dashboard_url, "restart", "dash", victim.id,
                               cluster.token_path.read_text().strip())
    assert status == 200, body
    assert next(c for c in dsup.which_children() if c.id == victim.id).incarnation > before
    # the browser logs the refused POST itself (a 401); nothing else may be an error
    assert [e for e in console_errors(browser) if "/api/actions/restart" not in e
            or "401" not in e] == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-after-failover.png"))


def post_action(url: str, action: str, sup: str, child_id: str,
                token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/api/actions/{action}", method="POST",
        data=json.dumps({"supervisor": sup, "id": child_id}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_input_gets_one_line(cluster: LocalCluster, dashboard_url: str) -> None:
    taken = dashboard_url.rsplit(":", 1)[1]
    busy = subprocess.run(herd_command("dashboard", "--address", cluster.address, "--port",
                                       taken), capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, **cluster.env()})
    assert busy.returncode == 1
    assert busy.stderr.strip() == (f"herd: error: port {taken} on 127.0.0.1 is in use: pick "
                                   f"another with --port"), busy.stderr
    gone = subprocess.run(herd_command("dashboard", "--address", f"127.0.0.1:{free_port()}",
                                       "--connect-timeout", "2", "--port", str(free_port())),
                          capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, **cluster.env()})
    assert gone.returncode == 1
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert gone.stderr.startswith("herd: error:"), gone.stderr


@pytest.mark.long  # a head restart: 15 s on a quiet machine, over the module's budget
def test_the_dashboard_survives_a_head_restart_and_says_so(cluster: LocalCluster,
                                                          dashboard_url: str) -> None:
    """Last in the module: the head is SIGKILLed and started again (GCS fault tolerance); the
    page's stream says the cluster is unreachable, then that it answers again."""
    statuses: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    stream = urllib.request.urlopen(f"{dashboard_url}/api/stream", timeout=WAIT_S)

    def read() -> None:
        kind = ""
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                (statuses if kind == "status" else events).append(json.loads(line[6:]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        cluster.restart_head()
        wait_until(lambda: any(e.get("kind") == "reconnected" for e in events), WAIT_S,
                   interval=0.2, what="the dashboard reconnected")
    finally:
        stream.close()
    assert any(not s["connected"] and s["detail"] for s in statuses), statuses
    with urllib.request.urlopen(f"{dashboard_url}/api/state", timeout=10) as response:
        state = json.loads(response.read())
    assert state["status"]["connected"], state["status"]
    assert any(s["name"] == "dash" for s in state["summary"]["supervisors"])
