"""Event sourcing on a real 4-node cluster (head + 3 workers, fast health checks), on both
store backends: the bank example (``herd.eventsourcing.examples.bank``) with its projection and
transfer saga.

Concurrent commands from several drivers' threads to one aggregate (versions contiguous, no
lost update, no duplicate); retried commands (same idempotency key) append once; bad input
(a command that does not validate, a domain error, an unknown event type in the store, a
handler that raises: retried, then parked with its position and error); then a worker node
hosting ~2 000 aggregates is SIGKILLed while commands are in flight: every acknowledged
command's events are in the store exactly once, every aggregate answers again on the survivors
with its state, the projection's effect is exactly once, and the replaced instances' epoch is
refused by the store.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray import cloudpickle

from herd.eventsourcing import App, CommandRejected, Fenced, Handler, UnknownEventType
from herd.eventsourcing.examples.bank import (
    Account,
    Balances,
    Deposit,
    Deposited,
    Open,
    Transfer,
    Transfers,
    Withdraw,
)
from herd.eventsourcing.store.open import open_store
from herd.eventsourcing.store.records import NewEvent
from herd.platform.cluster import LocalCluster
from herd.platform.errors import ConfigError
from herd.platform.waiting import wait_until
from herd.supervisors.apps.app import AppSpec, run_app, stop_app
from herd.supervisors.errors import SupervisorError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pg_server import PostgresServer  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER_OPTIONS = {"health_check": {"initial_delay_ms": 1000, "period_ms": 500,
                                    "timeout_ms": 500, "failure_threshold": 3}}
WAIT_S = 60.0
#: aggregates the node-kill test starts, per backend (the PostgreSQL run is smaller: the same
#: path, half the cost in `make test`)
AGGREGATES = {"sqlite": 1000, "postgres": 500}


class Picky(Handler):
    """Fails on every deposit of 13: retried, then parked."""

    name = "picky"
    events = (Deposited,)

    def handle(self, event: Any, recorded: Any) -> None:
        if getattr(event, "amount", None) == 13:
            raise ValueError("unlucky amount")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def bank(request: pytest.FixtureRequest, cluster: LocalCluster,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    url = (f"sqlite://{tmp_path_factory.mktemp('es') / 'bank.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg").url)
    app = App.start(f"bank-{request.param}", aggregates=[Account], store=url,
                    handlers=[Balances, Transfers, Picky], handler_retries=2,
                    handler_backoff_s=0.01, idle_timeout_s=60)
    yield app
    app.stop(timeout=WAIT_S)


def on_store(app: App, work: Any) -> Any:
    async def body() -> Any:
        store = await open_store(app.spec.options.store)
        try:
            return await work(store)
        finally:
            await store.close()
    return asyncio.run(asyncio.wait_for(body(), WAIT_S))


def test_concurrent_commands_to_one_aggregate(bank: App) -> None:
    bank.dispatch(Open(aggregate_id="shared", owner="ann"))
    errors: list[BaseException] = []

    def driver(n: int) -> None:
        try:
            for i in range(25):
                bank.dispatch(Deposit(aggregate_id="shared", amount=1 + (n * 25 + i) % 7,
                                      idempotency_key=f"d-{n}-{i}"), timeout=WAIT_S)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=driver, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not errors and not any(t.is_alive() for t in threads)
    events = on_store(bank, lambda s: s.read_stream("Account-shared"))
    assert [e.version for e in events] == list(range(1, 102))
    keys = [e.meta()["idempotency_key"] for e in events[1:]]
    assert len(set(keys)) == 100
    expected = sum(1 + k % 7 for k in range(100))
    assert bank.query(Account, "shared")["state"]["balance"] == expected


def test_retried_command_appends_once(bank: App) -> None:
    bank.dispatch(Open(aggregate_id="retry", owner="bo"))
    first = bank.dispatch(Deposit(aggregate_id="retry", amount=5, idempotency_key="k1"))
    again = bank.dispatch(Deposit(aggregate_id="retry", amount=5, idempotency_key="k1"))
    assert not first.duplicate and again.duplicate and again.version == first.version == 2
    assert len(on_store(bank, lambda s: s.read_stream("Account-retry"))) == 2


def test_bad_input_is_refused_with_a_typed_error(bank: App) -> None:
    with pytest.raises(CommandRejected, match="amount"):
        bank.dispatch({"type": "Deposit", "aggregate_id": "bad", "amount": -3})
    with pytest.raises(CommandRejected, match="UnknownCommand"):
        bank.dispatch({"type": "Steal", "aggregate_id": "bad"})
    bank.dispatch(Open(aggregate_id="bad", owner="cy"))
    with pytest.raises(CommandRejected, match="InsufficientFunds"):
        bank.dispatch(Withdraw(aggregate_id="bad", amount=100))
    assert len(on_store(bank, lambda s: s.read_stream("Account-bad"))) == 1
    on_store(bank, lambda s: s.append("Account-alien", [NewEvent("Bogus", "{}")]))
    with pytest.raises(UnknownEventType, match="Bogus"):
        bank.query(Account, "alien")


def test_projection_saga_and_parking(bank: App) -> None:
    bank.dispatch(Open(aggregate_id="p-a", owner="a"))
    bank.dispatch(Open(aggregate_id="p-b", owner="b"))
    bank.dispatch(Deposit(aggregate_id="p-a", amount=50))
    bank.dispatch(Transfer(aggregate_id="p-a", to="p-b", amount=20))
    wait_until(lambda: bank.query(Account, "p-b")["state"]["balance"] == 20, WAIT_S,
               what="the transfer saga's deposit")
    bad = bank.dispatch(Deposit(aggregate_id="p-a", amount=13))

    def parked() -> Any:
        rows = {r["handler"]: r for r in bank.projections()}
        return rows["picky"]["parked"]

    park = wait_until(parked, WAIT_S, what="the picky handler parked")
    assert park["position"] == bad.position and "unlucky amount" in park["error"]
    assert park["attempts"] == 3
    time.sleep(0.5)  # parked: it does not move past the failing event
    row = {r["handler"]: r for r in bank.projections()}["picky"]
    assert row["position"] == bad.position - 1 and row["parked"] is not None
    wait_until(lambda: {r["handler"]: r for r in bank.projections()}["balances"]["lag"] == 0,
               WAIT_S, what="balances caught up")
    bank.unpark("picky")  # the same event is retried (and parks again): nothing skipped
    again = wait_until(parked, WAIT_S, what="the picky handler parked again")
    assert again["position"] == bad.position
    bank.rebuild("balances")  # from position 0, in one call

    def rebuilt() -> bool:
        table = balances_table(bank)
        return table.get("p-a") == (43, 4) and table.get("p-b") == (20, 2)
    wait_until(rebuilt, WAIT_S, what="balances rebuilt from position 0")


def test_idle_aggregates_are_passivated_and_come_back(bank: App) -> None:
    if not bank.name.endswith("sqlite"):
        pytest.skip("passivation does not depend on the backend; once is enough")
    idle = App.start(f"{bank.name}-idle", aggregates=[Account], store=bank.spec.options.store,
                     idle_timeout_s=0.5)
    try:
        idle.dispatch(Open(aggregate_id="sleepy", owner="zz"))
        wait_until(lambda: not idle.supervisor.which_children(), WAIT_S,
                   what="the idle aggregate passivated")
        result = idle.dispatch(Deposit(aggregate_id="sleepy", amount=4))
        assert result.version == 2 and not result.duplicate
        assert idle.query(Account, "sleepy")["state"]["balance"] == 4
    finally:
        idle.stop(timeout=WAIT_S)


def balances_table(bank: App) -> dict[str, tuple[int, int]]:
    async def read(store: Any) -> dict[str, tuple[int, int]]:
        rows: dict[str, tuple[int, int]] = {}

        def work(tx: Any) -> None:
            for account, balance, events in tx.execute(
                    "SELECT account, balance, events FROM bank_balances"):
                rows[account] = (balance, events)
        await store.project("reader", 0, None, work)
        return rows
    return on_store(bank, read)


def test_node_kill_moves_aggregates_exactly_once(bank: App, cluster: LocalCluster) -> None:
    count = AGGREGATES[bank.name.rsplit("-", 1)[1]]
    ids = [f"k{i}" for i in range(count)]
    assert bank.start_aggregates(Account, ids, timeout=WAIT_S) == count
    acked: dict[str, int] = {}

    async def open_all() -> None:
        results = await asyncio.gather(*(bank.dispatch_async(
            Open(aggregate_id=i, owner=i, idempotency_key=f"open-{i}"), timeout=WAIT_S)
            for i in ids))
        for r in results:
            acked[f"open-{r.aggregate_id}"] = r.version
    asyncio.run(open_all())
    children = {c.id: c for c in bank.supervisor.which_children()}
    # the node of the balances projection (and of about half the aggregates): the projection's
    # host dies while it works through the deposits' batches
    victim_id = children["handler:balances"].node_id
    victim = next(n for n in cluster.worker_nodes if n.node_id == victim_id)
    victims = [c.id.split(":", 1)[1] for c in children.values()
               if c.node_id == victim_id and c.id.startswith("Account:k")]
    epoch_before = children[f"Account:{victims[0]}"].epoch
    lost: list[str] = []

    async def deposits() -> None:
        async def one(i: str) -> None:
            key = f"dep-{i}"
            try:
                r = await bank.dispatch_async(Deposit(aggregate_id=i, amount=3,
                                                      idempotency_key=key), timeout=WAIT_S)
                acked[key] = r.version
            except Exception:
                lost.append(key)
        tasks = [asyncio.ensure_future(one(i)) for i in ids]
        await asyncio.sleep(0.05)
        cluster.kill_node(victim)
        killed_at = time.monotonic()
        await asyncio.gather(*tasks)
        deposits.elapsed = time.monotonic() - killed_at  # type: ignore[attr-defined]

    asyncio.run(deposits())
    assert not lost, lost[:5]
    # every acknowledged command's events are present exactly once
    async def all_events(store: Any) -> list[Any]:
        found, position = [], 0
        while True:
            batch = await store.read_all(position, 5000)
            if not batch:
                return found
            found.extend(batch)
            position = batch[-1].position
    events = [e for e in on_store(bank, all_events) if e.stream.startswith("Account-k")]
    keys = collections.Counter(e.meta().get("idempotency_key") for e in events)
    assert set(keys) == set(acked) and max(keys.values()) == 1
    # the aggregates answer again, on the survivors, with their state
    for i in victims[:200]:
        assert bank.query(Account, i, timeout=WAIT_S) == {"version": 2, "state": {
            "owner": i, "balance": 3}}
    moved = {c.id: c for c in bank.supervisor.which_children()}
    assert all(moved[f"Account:{i}"].node_id != victim_id for i in victims)
    assert moved["handler:balances"].node_id != victim_id and victims
    # the replaced instance's epoch is refused even with the right expected version
    with pytest.raises(Fenced):
        on_store(bank, lambda s: s.append(f"Account-{victims[0]}",
                                          [NewEvent("Deposited", json.dumps({"amount": 1}))],
                                          2, fence=epoch_before))
    # the projection applied every event exactly once
    def projected() -> bool:
        table = balances_table(bank)
        return all(table.get(i) == (3, 2) for i in ids)
    wait_until(projected, WAIT_S, what="balances projection of every account")
    cluster.add_node()  # the next backend's app gets the same topology


def test_herd_run_starts_the_bank_yaml(bank: App, tmp_path: Path) -> None:
    """configs/bank.yaml (the store moved to a temp dir) as ``herd run`` starts it."""
    if not bank.name.endswith("sqlite"):
        pytest.skip("the example app runs on its own SQLite store; once is enough")
    data = yaml.safe_load((Path(__file__).parents[2] / "configs" / "bank.yaml").read_text())
    launcher = data["supervisors"][0]["children"][0]["kwargs"]
    launcher["store"] = f"sqlite://{tmp_path / 'bank.db'}"
    run_app(AppSpec.from_dict(data, source="configs/bank.yaml"))
    try:
        app = wait_until(lambda: _running("bank"), WAIT_S, what="the bank app started")
        app.dispatch(Open(aggregate_id="yaml-1", owner="y"))
        app.dispatch(Deposit(aggregate_id="yaml-1", amount=9))
        assert app.query(Account, "yaml-1")["state"]["balance"] == 9
        wait_until(lambda: {r["handler"]: r["lag"] for r in app.projections()}["balances"] == 0,
                   WAIT_S, what="the example's projection caught up")
    finally:
        stop_app("bank")


def _running(name: str) -> App | None:
    try:
        return App.get(name)
    except (ConfigError, SupervisorError):
        return None
