"""``herd bench eventsourcing``: commands/s through supervised aggregates on each backend against
a plain append loop on the same backend (sqlite3 / psycopg ``executemany`` of the same rows, one
transaction per command, as many client threads), rehydration of a 10 000-event aggregate with
and without a snapshot, projection catch-up events/s, and the time until 10 000 aggregates
answer again after their node is SIGKILLed.

PostgreSQL rows need ``postgres=URL`` (a server you started; ``tests/pg_server.py`` starts one).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from herd.cli.bench.report import BenchReport, bench_cluster
from herd.eventsourcing import App
from herd.eventsourcing.appspec import AppOptions, AppSpec
from herd.eventsourcing.examples.bank import Account, Balances, Deposit, Deposited, Open
from herd.eventsourcing.instance import rehydrate
from herd.eventsourcing.rehydration import AggregateState
from herd.eventsourcing.store.open import open_store
from herd.eventsourcing.store.records import NewEvent, Snapshot

HEALTH_CHECK = {"initial_delay_ms": 1000, "period_ms": 500, "timeout_ms": 500,
                "failure_threshold": 3}
TIMEOUT_S = 120.0


def run(commands: int = 3000, aggregates: tuple[int, ...] = (1, 1000),
        clients: tuple[int, ...] = (1, 32), rehydrate_events: int = 10_000,
        catchup_events: int = 20_000, failover_aggregates: int = 10_000,
        postgres: str | None = None, **_: Any) -> BenchReport:
    tmp = tempfile.mkdtemp(prefix="herd-bench-es-")
    backends = {"sqlite": f"sqlite://{tmp}/bench.db"}
    if postgres:
        backends["postgres"] = postgres
    rows: list[dict[str, Any]] = []
    for backend, url in backends.items():
        for n in clients:
            rows.append({"part": "baseline append loop", "backend": backend, "clients": n,
                         "per_s": round(_baseline(backend, url, n, commands))})
        rows += asyncio.run(_store_parts(backend, url, rehydrate_events, catchup_events))
    with bench_cluster(nodes=3, health_check=HEALTH_CHECK) as cluster:
        for backend, url in backends.items():
            app = App.start(f"bench-{backend}", aggregates=[Account], store=url,
                            idle_timeout_s=600)
            for count in aggregates:
                ids = [f"{backend}-{count}-{i}" for i in range(count)]
                app.start_aggregates(Account, ids, timeout=TIMEOUT_S)
                asyncio.run(_each(app, [Open(aggregate_id=i, owner=i) for i in ids], 64))
                for n in clients:
                    todo = [Deposit(aggregate_id=ids[k % count], amount=1)
                            for k in range(commands)]
                    elapsed = asyncio.run(_timed(app, todo, n))
                    rows.append({"part": "commands through aggregates", "backend": backend,
                                 "aggregates": count, "clients": n,
                                 "per_s": round(commands / elapsed)})
            if backend == "sqlite":
                rows.append(_failover(cluster, app, failover_aggregates))
            app.stop(timeout=TIMEOUT_S)
    load = os.getloadavg()
    return BenchReport("eventsourcing", rows, params={
        "commands": commands, "rehydrate_events": rehydrate_events,
        "catchup_events": catchup_events, "failover_aggregates": failover_aggregates,
        "load_average": [round(x, 2) for x in load]}, notes=[
        "baseline: one transaction per command (executemany of its event rows), N threads",
        "failover: from the SIGKILL until every moved aggregate has answered a command "
        f"(failure detection {HEALTH_CHECK})"])


async def _each(app: App, todo: list[Any], clients: int) -> None:
    queue = list(reversed(todo))

    async def client() -> None:
        while queue:
            await app.dispatch_async(queue.pop(), timeout=TIMEOUT_S)

    await asyncio.gather(*(client() for _ in range(clients)))


async def _timed(app: App, todo: list[Any], clients: int) -> float:
    started = time.perf_counter()
    await _each(app, todo, clients)
    return time.perf_counter() - started


def _baseline(backend: str, url: str, clients: int, commands: int) -> float:
    """Plain appends of the same rows: one transaction per command, ``clients`` threads."""
    row = json.dumps({"amount": 1})
    per_client = max(1, commands // clients)
    connect: Callable[[], Any]
    if backend == "sqlite":
        path = url[len("sqlite://"):] + ".baseline"

        def connect() -> Any:
            c = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            return c
        setup = connect()
        setup.execute("CREATE TABLE IF NOT EXISTS base (stream TEXT, version INTEGER, "
                      "data TEXT, PRIMARY KEY (stream, version))")
        setup.close()
        sql, begin = "INSERT INTO base VALUES (?, ?, ?)", "BEGIN IMMEDIATE"
    else:
        import psycopg

        def connect() -> Any:
            return psycopg.connect(url, autocommit=True)
        with connect() as setup:
            setup.execute("CREATE TABLE IF NOT EXISTS base (stream TEXT, version INTEGER, "
                          "data TEXT, PRIMARY KEY (stream, version))")
            setup.execute("TRUNCATE base")
        sql, begin = "INSERT INTO base VALUES (%s, %s, %s)", "BEGIN"

    def client(n: int) -> None:
        c = connect()
        cursor = c.cursor()
        for v in range(per_client):
            cursor.execute(begin)
            cursor.executemany(sql, [(f"b{clients}-{n}", v + 1, row)])
            cursor.execute("COMMIT")
        c.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    return per_client * clients / (time.perf_counter() - started)


async def _store_parts(backend: str, url: str, events: int,
                       catchup: int) -> list[dict[str, Any]]:
    store = await open_store(url)
    spec = AppSpec.build("bench", AppOptions(store=url), [Account], [])
    stream = f"Account-rehydrate-{backend}"
    body = json.dumps({"amount": 1})
    await store.append(stream, [NewEvent("Opened", json.dumps({"owner": "x"}))], 0)
    for start in range(0, events - 1, 1000):
        await store.append(stream, [NewEvent("Deposited", body)
                                    for _ in range(min(1000, events - 1 - start))])
    rows = []
    for with_snapshot in (False, True):
        started = time.perf_counter()
        state, _ = await rehydrate(store, spec.codec, Account("rehydrate"), stream)
        elapsed = time.perf_counter() - started
        rows.append({"part": "rehydrate 10k-event aggregate", "backend": backend,
                     "snapshot": with_snapshot, "ms": round(elapsed * 1000, 2),
                     "version": state.version})
        if not with_snapshot:
            snap = AggregateState(state.aggregate, state.version)
            await store.save_snapshot(Snapshot(stream, state.version, snap.snapshot_json(),
                                               time.time()))
    projection = Balances()
    position, handled = 0, 0
    started = time.perf_counter()
    while handled < catchup:
        batch = await store.read_all(position, 500)
        if not batch:
            break
        wanted = [e for e in batch if e.type == "Deposited"]

        def apply(tx: Any, wanted: list[Any] = wanted) -> None:
            for recorded in wanted:
                projection.project(Deposited.model_validate_json(recorded.data), recorded, tx)
        await store.project("bench-catchup", batch[-1].position, None, apply)
        position, handled = batch[-1].position, handled + len(batch)
    elapsed = time.perf_counter() - started
    rows.append({"part": "projection catch-up", "backend": backend, "events": handled,
                 "per_s": round(handled / elapsed)})
    await store.close()
    return rows


def _failover(cluster: Any, app: App, count: int) -> dict[str, Any]:
    ids = [f"fo-{i}" for i in range(count)]
    app.start_aggregates(Account, ids, timeout=TIMEOUT_S)
    asyncio.run(_each(app, [Open(aggregate_id=i, owner=i) for i in ids], 64))
    children = {c.id: c for c in app.supervisor.which_children()}
    victim = max(cluster.worker_nodes, key=lambda n: sum(
        1 for c in children.values() if c.node_id == n.node_id))
    moved = [c.id.split(":", 1)[1] for c in children.values()
             if c.node_id == victim.node_id and c.id.startswith("Account:fo-")]
    cluster.kill_node(victim)
    killed = time.perf_counter()
    asyncio.run(_each(app, [Deposit(aggregate_id=i, amount=1) for i in moved], 64))
    return {"part": "answer again after node SIGKILL", "backend": "sqlite",
            "aggregates": len(moved), "s": round(time.perf_counter() - killed, 2)}
