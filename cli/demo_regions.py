"""``herd demo regions``: two separate Ray clusters (us-east, us-west), each in its own network
namespace, federated through their gateways; the link between them is cut, both sides take
writes, the link is healed and the replicas converge. Progress lines only (the regions' own logs
go to files in their run directory)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from herd.cli.common import echo, one_line_errors
from herd.platform.errors import HerdTimeoutError
from herd.replication.federation.regions import FederatedRegions, RegionClient

Echo = Callable[[str], None]
STORE = "demo-carts"
CONVERGE_DEADLINE_S = 60.0
FAILURE_DEADLINE_S = 10.0
WRITES_PER_SIDE = 5


@click.command("regions")
@click.option("--delay-ms", default=25.0, show_default=True,
              help="one-way delay added to the link between the regions")
@click.option("--partition-s", default=5.0, show_default=True,
              help="how long the link stays cut")
@one_line_errors
def regions(delay_ms: float, partition_s: float) -> None:
    """Two federated clusters: cut the link, write on both sides, heal, watch them converge."""
    started = time.monotonic()
    run_regions_demo(echo, delay_ms=delay_ms, partition_s=partition_s)
    echo(f"demo finished in {time.monotonic() - started:.0f} s")


def run_regions_demo(echo: Echo, delay_ms: float = 25.0, partition_s: float = 5.0) -> None:
    east_name, west_name = "us-east", "us-west"
    echo(f"starting two Ray clusters, {east_name} and {west_name}, each in its own network "
         f"namespace, linked by a veth pair with {delay_ms:.0f} ms one-way delay ...")
    begin = time.monotonic()
    with FederatedRegions([east_name, west_name], delay_ms=delay_ms) as fed:
        east, west = fed[east_name], fed[west_name]
        echo(f"clusters and gateways up in {time.monotonic() - begin:.1f} s")
        fed.on_all("start_store", name=STORE, kind="ormap", sync_interval_ms=500)
        echo(f"store {STORE!r} (ormap) started in both clusters")

        east.store(STORE, "put", "greeting", "hello from us-east")
        east.store(STORE, "incr", "orders", 1)
        seconds = wait_converged(fed, echo, "first write")
        echo(f"us-west sees us-east's write after {seconds * 1e3:.0f} ms")

        echo(f"cutting the link (ip link set ... down) for {partition_s:.0f} s")
        cut_wall = time.time()
        fed.partition(east_name, west_name)
        cut_at = time.monotonic()
        for i in range(WRITES_PER_SIDE):
            east.store(STORE, "put", f"cart:east-{i}", {"items": i})
            west.store(STORE, "put", f"cart:west-{i}", {"items": i})
            east.store(STORE, "incr", "orders", 1)
            west.store(STORE, "incr", "orders", 10)
            east.store(STORE, "add", "customers", f"east-{i}")
            west.store(STORE, "add", "customers", f"west-{i}")
        east.store(STORE, "put", "greeting", "hello from us-east, during the partition")
        west.store(STORE, "put", "greeting", "hello from us-west, during the partition")
        echo(f"  wrote {WRITES_PER_SIDE} carts, orders and customers on each side, each write "
             f"acknowledged locally")
        show_sides(fed, echo)
        peer = wait_for_send_failure(east, west_name, since=cut_wall)
        echo(f"  us-east's gateway cannot reach us-west: {peer['failed']} failed sends, last "
             f"error: {short_error(peer['last_error'])}")
        time.sleep(max(0.0, partition_s - (time.monotonic() - cut_at)))

        echo("healing the link")
        fed.heal_all()
        seconds = wait_converged(fed, echo, "heal")
        echo(f"converged {seconds:.2f} s after the heal; both sides now hold:")
        final = east.store(STORE, "items")
        for key in sorted(final):
            echo(f"  {key} = {final[key]}")
        expected_orders = 1 + WRITES_PER_SIDE * 11
        echo(f"orders = {final['orders']} (expected {expected_orders}: every acknowledged "
             f"increment of both sides), customers: {len(final['customers'])} "
             f"(expected {2 * WRITES_PER_SIDE}), greeting: one of the two concurrent writes "
             f"(last writer wins by hybrid logical clock)")
        echo("stopping both clusters ...")
    echo("done: every process of both clusters is gone and the namespaces are removed")


def wait_for_send_failure(client: RegionClient, peer: str, since: float) -> dict[str, Any]:
    """The gateway's view of ``peer`` once a send to it has failed after ``since``."""
    deadline = time.monotonic() + FAILURE_DEADLINE_S
    while True:
        status = client.call("gateway_status")["peers"][peer]
        if (status["last_error_at"] or 0) > since or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.2)


def show_sides(fed: FederatedRegions, echo: Echo) -> None:
    for region in fed.regions:
        items = fed[region].store(STORE, "items")
        carts = sorted(k for k in items if k.startswith("cart:"))
        echo(f"  {region} sees {len(carts)} carts, orders={items.get('orders')}, "
             f"{len(items.get('customers', []))} customers")


def wait_converged(fed: FederatedRegions, echo: Echo, what: str) -> float:
    """Seconds until every region's replica holds the same items; a progress line a second."""
    started = last_line = time.monotonic()
    clients: list[RegionClient] = [fed[r] for r in fed.regions]
    while True:
        views: list[Any] = [c.store(STORE, "items") for c in clients]
        if all(view == views[0] for view in views[1:]):
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > CONVERGE_DEADLINE_S:
            raise HerdTimeoutError(f"regions did not converge within {CONVERGE_DEADLINE_S:.0f} s "
                                   f"after the {what}")
        if now - last_line >= 1.0:
            last_line = now
            sizes = ", ".join(f"{c.region}: {len(v)} keys" for c, v in zip(clients, views,
                                                                            strict=True))
            echo(f"  ... {now - started:.1f} s after the {what}: {sizes}")
        time.sleep(0.02)


def short_error(error: str | None, limit: int = 90) -> str:
    """The first clause of a peer's last error, cut at a word boundary."""
    if not error:
        return "-"
    first = error.split(" [")[0].split(" ssl:")[0]
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " ..."
