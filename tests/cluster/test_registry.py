"""The global registry on a real 3-node cluster: every operation, both key modes, races, the
client cache, watch and subscriptions, via, sharding, and every bad input."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from typing import Any

import pytest
import ray

from herd.platform import rpc
from herd.platform.control_plane import HERD_NAMESPACE, pinned_options
from herd.platform.monitor import MONITOR_GROUP
from herd.platform.waiting import wait_until
from herd.registry import (
    HolderDead,
    KeyModeError,
    Registered,
    Registry,
    RegistryInputError,
    Unregistered,
    Updated,
    via,
)
from herd.registry.errors import AlreadyRegistered, EpochConflict, NotRegistered, UnknownRegistry
from herd.registry.meta import MAX_META_BYTES
from herd.registry.models import MAX_KEY_BYTES, actor_id

N_CONTENDERS = 8


@ray.remote(num_cpus=0)
class Plain:
    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        return os.getpid()

    def bump(self, by: int) -> int:
        self.calls += by
        return self.calls

    def slow(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


@ray.remote(num_cpus=0, concurrency_groups={MONITOR_GROUP: 100})
class Child:
    """Implements herd's child monitor contract (herd.platform.monitor)."""

    def __init__(self) -> None:
        self.stopped: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        self.stopped = self.stopped or asyncio.Event()
        return self.stopped

    @ray.method(concurrency_group=MONITOR_GROUP)
    async def __herd_monitor__(self) -> str:
        await self._event().wait()
        return "normal"

    async def ping(self) -> int:
        return os.getpid()

    async def slow(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()


@ray.remote(num_cpus=0)
class Contender:
    """A separate process with its own registry client."""

    def _me(self) -> Any:
        return ray.get_runtime_context().current_actor

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def register_at(self, registry: Registry, key: str, start_at: float) -> tuple[str, Any]:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            return "won", registry.register(key, self._me()).epoch
        except AlreadyRegistered as exc:
            return "lost", actor_id(exc.holder)

    def cas_at(self, registry: Registry, key: str, expected: int, start_at: float,
               index: int) -> tuple[str, Any]:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            return "won", registry.compare_and_set(key, expected, meta={"winner": index}).epoch
        except EpochConflict as exc:
            return "lost", exc.actual

    def lookup(self, registry: Registry, key: str) -> Any:
        return registry.lookup(key)

    def register_self(self, registry: Registry, key: str) -> int:
        return registry.register(key, self._me()).epoch

    def unregister(self, registry: Registry, key: str) -> int:
        return registry.unregister(key)

    def cached(self, registry: Registry, key: str) -> bool:
        registry.lookup(key)
        return registry.cached(key)

    def wait_lookup(self, registry: Registry, key: str, present: bool, timeout: float) -> float:
        """Seconds (monotonic clock, shared by the host) when the cached lookup turned."""
        deadline = time.monotonic() + timeout
        while (registry.lookup(key) is not None) != present:
            if time.monotonic() > deadline:
                return -1.0
            time.sleep(0.0005)
        return time.monotonic()


@ray.remote(num_cpus=0)
class Subscriber:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event)

    def seen(self) -> list[Any]:
        return self.events


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _seen(subscriber: Any) -> list[Any]:
    return rpc.get(subscriber.seen.remote(), timeout=10)


def _on(node: Any) -> dict[str, Any]:
    return pinned_options(node.node_id)


@pytest.fixture(scope="module")
def contenders(cluster: Any) -> list[Any]:
    actors = [Contender.options(**_on(cluster.nodes[i % len(cluster.nodes)])).remote()
              for i in range(N_CONTENDERS)]
    nodes = rpc.get([a.node.remote() for a in actors], timeout=60)
    assert len(set(nodes)) == len(cluster.nodes)
    return actors


# ------------------------------------------------------------------------------ lifecycle
def test_start_get_and_unknown_registry(cluster: Any) -> None:
    name = _name()
    reg = Registry.start(name)
    assert Registry.start(name) is reg and Registry.get(name) is reg
    info = reg.info()
    assert len(info) == 1 and info[0]["node_id"] == cluster.head.node_id  # pinned to the head
    assert ray.get_actor(f"herd/registry/{name}", namespace=HERD_NAMESPACE)
    with pytest.raises(UnknownRegistry):
        Registry.get(_name())
    with pytest.raises(KeyModeError, match="keys='unique'"):
        Registry.start(name, keys="duplicate")
    with pytest.raises(KeyModeError):
        Registry.start(name, shards=2)


# --------------------------------------------------------------------------- unique keys
def test_unique_registry_operations(cluster: Any) -> None:
    reg = Registry.start(_name())
    worker = cluster.worker_nodes[0]
    holder = Plain.options(**_on(worker)).remote()
    other = Plain.options(**_on(cluster.head)).remote()
    before = time.time()
    first = reg.register("svc/a", holder, {"role": "primary", "n": 1})
    assert first.key == "svc/a" and first.meta == {"role": "primary", "n": 1}
    assert first.node_id == worker.node_id and first.epoch > 0
    assert before - 1 <= first.registered_at <= time.time() + 1
    assert actor_id(reg.lookup("svc/a")) == actor_id(holder)
    assert rpc.get(reg.lookup("svc/a").ping.remote(), timeout=10) > 0
    assert reg.entry("svc/a") == first

    with pytest.raises(AlreadyRegistered) as info:
        reg.register("svc/a", other)
    assert actor_id(info.value.holder) == actor_id(holder) and info.value.key == "svc/a"
    with pytest.raises(AlreadyRegistered):  # the same holder twice is a conflict too
        reg.register("svc/a", holder)

    second = reg.register("svc/b", holder, {"role": "backup"})
    reg.register("x/other", other, {"role": "primary"})
    assert [r.key for r in reg.select(prefix="svc/")] == ["svc/a", "svc/b"]
    assert [r.key for r in reg.select(meta={"role": "primary"})] == ["svc/a", "x/other"]
    bare = reg.select(prefix="svc/", handles=False)  # meta only: the holder's id, no handle
    assert [(r.key, r.handle, r.holder_id) for r in bare] == [
        ("svc/a", None, actor_id(holder)), ("svc/b", None, actor_id(holder))]
    assert reg.keys_of(holder) == ["svc/a", "svc/b"] and reg.count() == 3

    updated = reg.update_meta("svc/a", {"role": "primary", "n": 2})
    assert updated.epoch > second.epoch and updated.meta["n"] == 2
    assert reg.entry("svc/a", fresh=True) == updated
    with pytest.raises(NotRegistered):
        reg.update_meta("svc/missing", {})

    assert reg.unregister("svc/a", other) == 0  # not the holder: nothing happens
    assert reg.lookup("svc/a", fresh=True) is not None
    with pytest.raises(EpochConflict) as conflict:
        reg.unregister("svc/a", holder, epoch=first.epoch)
    assert conflict.value.actual == updated.epoch
    assert reg.unregister("svc/a", holder, epoch=updated.epoch) == 1
    assert reg.unregister("svc/a", holder) == 0 and reg.remove("svc/a") == 0  # idempotent
    assert reg.lookup("svc/a") is None and reg.entry("svc/a") is None
    again = reg.register("svc/a", other)
    assert again.epoch > updated.epoch  # epochs keep growing after unregister
    assert reg.count() == 3


def test_unregister_removes_only_the_callers_own_name(cluster: Any,
                                                     contenders: list[Any]) -> None:
    """Like Elixir's Registry.unregister/2: another process's name survives an unregister of
    the key; removing a key whoever holds it is the separate, explicit ``remove``."""
    reg = Registry.start(_name())
    owner, stranger = contenders[0], contenders[1]
    epoch = rpc.get(owner.register_self.remote(reg, "mine"), timeout=30)
    assert rpc.get(stranger.unregister.remote(reg, "mine"), timeout=30) == 0
    assert reg.entry("mine", fresh=True).epoch == epoch
    with pytest.raises(RegistryInputError, match="remove"):
        reg.unregister("mine")  # a driver holds nothing: it must name the holder
    assert rpc.get(owner.unregister.remote(reg, "mine"), timeout=30) == 1
    assert reg.entry("mine", fresh=True) is None
    rpc.get(owner.register_self.remote(reg, "mine"), timeout=30)
    assert reg.remove("mine") == 1 and reg.entry("mine", fresh=True) is None


def test_register_waits_for_a_new_actor_and_rejects_a_dead_one(cluster: Any) -> None:
    reg = Registry.start(_name())
    fresh = Plain.options(**_on(cluster.worker_nodes[-1])).remote()  # still being created
    assert reg.register("new", fresh).node_id == cluster.worker_nodes[-1].node_id
    dead = Plain.remote()
    rpc.get(dead.ping.remote(), timeout=30)
    ray.kill(dead)
    wait_until(lambda: _is_dead(dead), 10, what="actor dead")
    with pytest.raises(HolderDead):
        reg.register("dead", dead)
    assert reg.lookup("dead", fresh=True) is None


def _is_dead(handle: Any) -> bool:
    try:
        rpc.get(handle.ping.remote(), timeout=5)
    except ray.exceptions.RayActorError:
        return True
    return False


# ------------------------------------------------------------------------ duplicate keys
def test_duplicate_registry_groups_and_dispatch(cluster: Any) -> None:
    reg = Registry.start(_name(), keys="duplicate")
    a = Plain.options(**_on(cluster.head)).remote()
    b = Plain.options(**_on(cluster.worker_nodes[0])).remote()
    reg.register("group", a, {"i": 1})
    reg.register("group", b, {"i": 2})
    reg.register("group", a, {"i": 3})  # one holder may join many times
    assert [actor_id(h) for h in reg.lookup("group")] == [actor_id(a), actor_id(b), actor_id(a)]
    assert [r.meta["i"] for r in reg.entry("group")] == [1, 2, 3]
    assert reg.count() == 3 and reg.keys_of(a) == ["group"]

    results = rpc.get(reg.dispatch("group", "bump", 10), timeout=10)
    assert sorted(results) == [10, 10, 20]
    with pytest.raises(RegistryInputError, match="no such actor method"):
        reg.dispatch("group", "missing_method")
    assert reg.dispatch("empty", "bump", 1) == []

    updated = reg.update_meta("group", {"i": 9}, b)
    assert [r.meta for r in updated] == [{"i": 9}]
    with pytest.raises(RegistryInputError, match="required"):
        reg.update_meta("group", {"i": 0})
    assert reg.unregister("group", a) == 2  # both memberships of a
    assert [actor_id(h) for h in reg.lookup("group", fresh=True)] == [actor_id(b)]
    assert reg.remove("group") == 1
    assert reg.lookup("group", fresh=True) == [] and reg.entry("group") == []


def test_wrong_key_mode_is_a_clear_error(cluster: Any) -> None:
    unique = Registry.start(_name())
    duplicate = Registry.start(_name(), keys="duplicate")
    holder = Plain.remote()
    with pytest.raises(KeyModeError, match="dispatch needs a duplicate registry"):
        unique.dispatch("k", "ping")
    with pytest.raises(KeyModeError, match="compare_and_set needs a unique registry"):
        duplicate.compare_and_set("k", 0, meta={})
    with pytest.raises(KeyModeError):
        duplicate.register("k", holder, on_holder_death="clear")
    with pytest.raises(KeyModeError):
        duplicate.unregister("k", holder, epoch=1)
    with pytest.raises(KeyModeError):
        duplicate.remove("k", epoch=1)
    with pytest.raises(KeyModeError, match="via needs a unique registry"):
        via("k", registry=duplicate.name).ping.remote()
    assert duplicate.count() == 0 and unique.count() == 0


# ------------------------------------------------------------------------ compare-and-set
def test_compare_and_set_claims_updates_and_fences(cluster: Any) -> None:
    reg = Registry.start(_name())
    claim = reg.compare_and_set("child-1", 0,
                                meta={"owner": "n1", "spec": {"restart": "permanent"}})
    assert claim.handle is None and claim.node_id is None and reg.lookup("child-1") is None
    with pytest.raises(EpochConflict) as info:
        reg.compare_and_set("child-1", None, meta={})
    assert (info.value.expected, info.value.actual) == (0, claim.epoch)
    holder = Plain.options(**_on(cluster.worker_nodes[0])).remote()
    started = reg.compare_and_set("child-1", claim.epoch, handle=holder)
    assert started.epoch > claim.epoch and started.meta == claim.meta
    assert started.node_id == cluster.worker_nodes[0].node_id
    assert actor_id(reg.lookup("child-1", fresh=True)) == actor_id(holder)
    with pytest.raises(EpochConflict):  # a stale owner is fenced off
        reg.compare_and_set("child-1", claim.epoch, meta={"owner": "n2"})
    moved = reg.compare_and_set("child-1", started.epoch, meta={"owner": "n2"})
    assert moved.meta == {"owner": "n2"} and actor_id(moved.handle) == actor_id(holder)
    touched = reg.compare_and_set("child-1", moved.epoch)  # no change: still a new epoch
    assert touched.epoch > moved.epoch
    with pytest.raises(EpochConflict) as missing:
        reg.compare_and_set("absent", 3, meta={})
    assert missing.value.actual is None


def test_concurrent_register_from_8_processes_has_exactly_one_winner(
        cluster: Any, contenders: list[Any]) -> None:
    reg = Registry.start(_name())
    start_at = time.time() + 1.0
    results = rpc.get([c.register_at.remote(reg, "the-one", start_at) for c in contenders],
                      timeout=60)
    winners = [i for i, (outcome, _) in enumerate(results) if outcome == "won"]
    assert len(winners) == 1
    winner_id = actor_id(contenders[winners[0]])
    assert all(holder == winner_id for outcome, holder in results if outcome == "lost")
    assert actor_id(reg.lookup("the-one", fresh=True)) == winner_id and reg.count() == 1


def test_compare_and_set_race_has_exactly_one_winner(cluster: Any, contenders: list[Any]) -> None:
    reg = Registry.start(_name())
    base = reg.compare_and_set("contested", 0, meta={"winner": None})
    start_at = time.time() + 1.0
    results = rpc.get([c.cas_at.remote(reg, "contested", base.epoch, start_at, i)
                       for i, c in enumerate(contenders)], timeout=60)
    winners = [(i, epoch) for i, (outcome, epoch) in enumerate(results) if outcome == "won"]
    assert len(winners) == 1
    index, epoch = winners[0]
    assert all(actual == epoch for outcome, actual in results if outcome == "lost")
    final = reg.entry("contested", fresh=True)
    assert final.epoch == epoch and final.meta == {"winner": index}


# ---------------------------------------------------------------------------- the cache
def test_cached_lookup_is_a_local_read_kept_fresh_by_events(cluster: Any,
                                                            contenders: list[Any]) -> None:
    reg = Registry.start(_name())
    holder = Plain.remote()
    reg.register("hot", holder)
    reg.lookup("hot")
    wait_until(lambda: reg.lookup("hot") is not None and reg.cached("hot"), 10,
               what="key cached")
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        reg.lookup("hot")
    per_lookup = (time.perf_counter() - started) / n
    assert per_lookup < 20e-6, f"cached lookup took {per_lookup * 1e6:.1f} us"

    other = contenders[1]  # another process on another node
    assert actor_id(rpc.get(other.lookup.remote(reg, "hot"), timeout=10)) == actor_id(holder)
    wait_until(lambda: rpc.get(other.cached.remote(reg, "hot"), timeout=10), 10,
               what="cached in the other process")
    assert rpc.get(other.lookup.remote(reg, "absent"), timeout=10) is None
    wait_until(lambda: rpc.get(other.cached.remote(reg, "absent"), timeout=10), 10,
               what="absence cached in the other process")

    # removal reaches the other process's cache
    gone = other.wait_lookup.remote(reg, "hot", False, 10)
    time.sleep(0.2)
    reg.unregister("hot", holder)
    removed_at = time.monotonic()
    seen = rpc.get(gone, timeout=20)
    assert seen > 0 and seen - removed_at < 1.0

    # a registration reaches a cached absence
    appear = other.wait_lookup.remote(reg, "absent", True, 10)
    time.sleep(0.2)
    reg.register("absent", holder)
    registered_at = time.monotonic()
    seen = rpc.get(appear, timeout=20)
    assert seen > 0 and seen - registered_at < 1.0


def test_dead_holder_is_never_returned_once_removal_is_applied(cluster: Any) -> None:
    reg = Registry.start(_name())
    holder = Child.remote()
    reg.register("mortal", holder)
    wait_until(lambda: reg.lookup("mortal") is not None and reg.cached("mortal"), 10,
               what="cached")
    ray.kill(holder)
    wait_until(lambda: reg.lookup("mortal", fresh=True) is None, 10, what="registry removal")
    wait_until(lambda: reg.lookup("mortal") is None, 2, interval=0.001, what="cache removal")
    assert all(reg.lookup("mortal") is None for _ in range(10_000))


# ------------------------------------------------------------------ watch and subscribers
def test_watch_streams_events_in_order(cluster: Any) -> None:
    reg = Registry.start(_name())
    holder = Plain.remote()
    reg.register("w/existing", holder)
    with reg.watch("w/", initial=True) as watch:
        first = watch.next(timeout=5)
        assert isinstance(first, Registered) and first.key == "w/existing"
        created = reg.register("w/new", holder, {"v": 1})
        reg.register("elsewhere", holder)  # outside the prefix
        reg.update_meta("w/new", {"v": 2})
        reg.unregister("w/new", holder)
        events = [watch.next(timeout=5) for _ in range(3)]
        assert [type(e) for e in events] == [Registered, Updated, Unregistered]
        assert events[0].registration == created
        assert events[1].previous == created and events[1].registration.meta == {"v": 2}
        assert events[2].reason == "unregistered"
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert watch.poll(timeout=0.2) == []
    with reg.watch() as everything:
        reg.remove("elsewhere")
        assert everything.next(timeout=5).key == "elsewhere"


def test_actor_subscriber_gets_events_and_is_dropped_when_dead(cluster: Any) -> None:
    reg = Registry.start(_name())
    subscriber = Subscriber.options(**_on(cluster.worker_nodes[0])).remote()
    reg.subscribe(subscriber, "on_event", prefix="s/")
    assert reg.info()[0]["subscribers"] == 1
    holder = Plain.remote()
    reg.register("s/1", holder)
    reg.register("other", holder)
    reg.unregister("s/1", holder)
    wait_until(lambda: len(_seen(subscriber)) >= 2, 10, what="pushed events")
    seen = _seen(subscriber)
    assert [type(e) for e in seen] == [Registered, Unregistered]
    assert all(e.key == "s/1" for e in seen)
    reg.subscribe(subscriber, "on_event", prefix="s/")  # idempotent
    assert reg.info()[0]["subscribers"] == 1
    ray.kill(subscriber)
    reg.register("s/2", holder)
    wait_until(lambda: reg.info()[0]["subscribers"] == 0, 10, what="dead subscriber dropped")
    second = Subscriber.remote()
    reg.subscribe(second, "on_event")
    assert reg.unsubscribe(second) == 1 and reg.info()[0]["subscribers"] == 0


# ------------------------------------------------------------------------------------ via
def test_via_calls_the_holder_and_waits_for_one(cluster: Any) -> None:
    reg = Registry.start(_name())
    holder = Plain.options(**_on(cluster.worker_nodes[0])).remote()
    reg.register("counter", holder)
    assert rpc.get(via("counter", registry=reg.name).bump.remote(2), timeout=10) == 2
    assert via("counter", registry=reg.name).bump.call(3) == 5
    started = time.monotonic()
    with pytest.raises(NotRegistered) as info:
        via("nobody", registry=reg.name, timeout=0.5).ping.call()
    assert info.value.key == "nobody" and time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(NotRegistered, match="no holder now"):  # .remote() never waits
        via("nobody", registry=reg.name, timeout=10).ping.remote()
    assert time.monotonic() - started < 2
    late = Plain.remote()
    threading.Timer(0.5, lambda: reg.register("late", late)).start()
    assert via("late", registry=reg.name, timeout=10).ping.call() > 0
    with pytest.raises(UnknownRegistry):
        via("counter", registry=_name()).ping.remote()


def test_via_retries_once_across_a_holder_restart(cluster: Any) -> None:
    reg = Registry.start(_name())
    first = Child.options(**_on(cluster.worker_nodes[0])).remote()
    reg.register("svc", first)
    target = via("svc", registry=reg.name, timeout=30)
    first_pid = target.ping.call()
    replacement = Child.options(**_on(cluster.worker_nodes[-1])).remote()
    rpc.get(replacement.ping.remote(), timeout=30)

    def supervisor() -> None:  # what a supervisor does: notice the death, start a new holder
        wait_until(lambda: reg.lookup("svc", fresh=True) is None, 20, what="old holder removed")
        reg.register("svc", replacement)

    threading.Thread(target=supervisor, daemon=True).start()
    threading.Timer(0.5, lambda: ray.kill(first)).start()
    pid = target.slow.call(3.0)  # dies mid-call on the first holder, answered by the second
    assert pid != first_pid and pid == rpc.get(replacement.ping.remote(), timeout=10)
    assert rpc.get(target.ping.remote(), timeout=10) == pid


# ------------------------------------------------------------------------------- shards
def test_sharded_registry_spreads_keys_and_merges_queries(cluster: Any) -> None:
    reg = Registry.start(_name(), shards=3)
    for shard in range(3):
        assert ray.get_actor(f"herd/registry/{reg.name}/{shard}", namespace=HERD_NAMESPACE)
    holder = Plain.remote()
    keys = [f"k{i:02d}" for i in range(12)]
    with reg.watch() as watch:
        for key in keys:
            reg.register(key, holder, {"even": int(key[1:]) % 2 == 0})
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < len(keys) and time.monotonic() < deadline:
            seen |= {e.key for e in watch.poll(timeout=1)}
        assert seen == set(keys)
    assert reg.count() == 12 and reg.keys_of(holder) == keys
    assert [r.key for r in reg.select(meta={"even": True})] == keys[::2]
    assert sum(i["records"] for i in reg.info()) == 12 and all(i["records"] for i in reg.info())
    assert all(actor_id(reg.lookup(k)) == actor_id(holder) for k in keys)


# ---------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    ("empty key", lambda r, h: r.register("", h)),
    ("non-string key", lambda r, h: r.register(42, h)),
    ("bytes key", lambda r, h: r.register(b"k", h)),
    ("key over 1 KiB", lambda r, h: r.register("k" * (MAX_KEY_BYTES + 1), h)),
    ("meta not JSON", lambda r, h: r.register("k", h, {"f": object()})),
    ("meta not an object", lambda r, h: r.register("k", h, ["a"])),
    ("meta over 64 KiB", lambda r, h: r.register("k", h, {"x": "y" * MAX_META_BYTES})),
    ("not an actor handle", lambda r, h: r.register("k", object())),
    ("actor class, not handle", lambda r, h: r.register("k", Plain)),
    ("bad on_holder_death", lambda r, h: r.register("k", h, on_holder_death="never")),
    ("bad timeout", lambda r, h: r.register("k", h, timeout=-1)),
    ("cas unknown change", lambda r, h: r.compare_and_set("k", 0, owner="n1")),
    ("cas bad epoch", lambda r, h: r.compare_and_set("k", -2, meta={})),
    ("cas meta not JSON", lambda r, h: r.compare_and_set("k", 0, meta={"s": {1}})),
    ("cas handle not actor", lambda r, h: r.compare_and_set("k", 0, handle="actor")),
    ("update_meta not JSON", lambda r, h: r.update_meta("held", {"f": lambda: 1})),
    ("lookup non-string", lambda r, h: r.lookup(None)),
    ("lookup empty", lambda r, h: r.lookup("")),
    ("select bad meta", lambda r, h: r.select(meta={"x": object()})),
    ("select bad prefix", lambda r, h: r.select(prefix=3)),
    ("keys_of not handle", lambda r, h: r.keys_of("actor")),
    ("unregister bad handle", lambda r, h: r.unregister("held", handle=3)),
    ("subscribe bad method", lambda r, h: r.subscribe(h, "not a method")),
    ("watch bad prefix", lambda r, h: r.watch(prefix=b"x")),
    ("via empty key", lambda r, h: via("", registry=r.name)),
    ("via bad registry name", lambda r, h: via("k", registry="no/slash")),
    ("start bad mode", lambda r, h: Registry.start(r.name + "x", keys="many")),
    ("start bad shards", lambda r, h: Registry.start(r.name + "x", shards=0)),
    ("get bad name", lambda r, h: Registry.get("")),
]


@pytest.fixture(scope="module")
def bad_input_registry(cluster: Any) -> tuple[Registry, Any]:
    reg = Registry.start(_name())
    holder = Plain.remote()
    reg.register("held", holder, {"v": 1})
    return reg, holder


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_typed_error_and_changes_nothing(
        bad_input_registry: tuple[Registry, Any], case: tuple[str, Any]) -> None:
    reg, holder = bad_input_registry
    before = (reg.info()[0]["counter"], reg.select())
    with pytest.raises(RegistryInputError) as info:
        case[1](reg, holder)
    assert info.value.field and str(info.value)
    assert (reg.info()[0]["counter"], reg.select()) == before
