"""The asyncio faces (``AsyncRegistry``, ``kv.a*``) from inside async actors on a real cluster:
every operation, its errors, and real concurrency (many operations outstanding from one actor,
not a thread pool's worth), with the actor's event loop free meanwhile and no blocking
``ray.get`` in the actor's process."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import ray

from herd.platform import kv, rpc
from herd.platform.control_plane import pinned_options
from herd.registry import (
    AsyncRegistry,
    EpochConflict,
    KeyModeError,
    NotRegistered,
    Registry,
    RegistryInputError,
)
from herd.registry.models import actor_id
from herd.supervisors.fencing import Superseded, acheck

CONCURRENT = 50
WAIT_S = 2.0


@ray.remote(num_cpus=0)
class Plain:
    def ping(self) -> str:
        return "pong"


@ray.remote(num_cpus=0)
class AsyncUser:
    """An asyncio actor that uses the registry and the KV store only through their async faces."""

    async def ping(self) -> float:
        return time.monotonic()

    def _me(self) -> Any:
        return ray.get_runtime_context().current_actor

    async def blocking_get_warned(self) -> bool:
        """Whether anything in this process called a blocking ray.get (Ray warns once)."""
        return bool(ray._private.worker.blocking_get_inside_async_warned)

    async def operations(self, name: str, other: Any) -> dict[str, Any]:
        reg = await AsyncRegistry.start(name)
        assert await AsyncRegistry.get(name) is reg
        me = self._me()
        out: dict[str, Any] = {}
        first = await reg.register("a/me", me, {"n": 1})
        out["registered"] = (first.key, actor_id(first.handle) == actor_id(me))
        await reg.register("a/other", other, {"n": 2})
        out["lookup"] = actor_id(await reg.lookup("a/other", fresh=True)) == actor_id(other)
        out["entry"] = (await reg.entry("a/me", fresh=True)).meta
        out["select"] = [r.key for r in await reg.select("a/")]
        out["keys_of"] = await reg.keys_of(me)
        out["count"] = await reg.count()
        out["updated"] = (await reg.update_meta("a/me", {"n": 3})).meta
        claim = await reg.compare_and_set("a/claim", 0, meta={"owner": "x"})
        moved = await reg.compare_and_set("a/claim", claim.epoch, handle=me)
        out["cas"] = moved.epoch > claim.epoch and moved.handle is not None
        try:
            await reg.compare_and_set("a/claim", claim.epoch, meta={})
        except EpochConflict as exc:
            out["conflict"] = (exc.expected, exc.actual == moved.epoch)
        try:
            await reg.wait_for("a/nobody", timeout=0.5)
        except NotRegistered as exc:
            out["wait_for_missing"] = exc.key
        out["wait_for"] = (await reg.wait_for("a/other", timeout=5)).key
        out["info"] = len(await reg.info())
        # unregister removes only the caller's own records; remove is the admin operation
        out["unregister_not_mine"] = await reg.unregister("a/other")
        out["unregister_mine"] = await reg.unregister("a/me")
        out["unregister_again"] = await reg.unregister("a/me")
        out["remove_other"] = await reg.remove("a/other")
        out["remove_claim"] = await reg.remove("a/claim", epoch=(await reg.entry(
            "a/claim", fresh=True)).epoch)
        out["count_after"] = await reg.count()
        for bad in (lambda: reg.register("", me), lambda: reg.compare_and_set("k", 0, owner=1),
                    lambda: reg.select(meta={"x": object()}), lambda: reg.lookup(3)):
            try:
                await bad()
            except RegistryInputError as exc:
                out.setdefault("bad_input", []).append(exc.field)
        try:
            await reg.dispatch("k", "ping")
        except KeyModeError:
            out["dispatch_mode"] = True
        return out

    async def concurrent_waits(self, name: str) -> tuple[float, list[str]]:
        """CONCURRENT long polls for keys nobody registers, all at once."""
        reg = await AsyncRegistry.start(name)
        started = time.monotonic()
        results = await asyncio.gather(*(reg.wait_for(f"w/{i}", timeout=WAIT_S)
                                         for i in range(CONCURRENT)), return_exceptions=True)
        return time.monotonic() - started, sorted({type(r).__name__ for r in results})

    async def concurrent_cas(self, name: str) -> dict[str, Any]:
        reg = await AsyncRegistry.start(name)
        created = await asyncio.gather(*(reg.compare_and_set(f"c/{i}", 0, meta={"i": i})
                                         for i in range(CONCURRENT)))
        advanced = await asyncio.gather(*(reg.compare_and_set(r.key, r.epoch, meta={"i": -1})
                                          for r in created))
        base = await reg.compare_and_set("contested", 0, meta={})
        race = await asyncio.gather(*(reg.compare_and_set("contested", base.epoch, meta={"w": i})
                                      for i in range(CONCURRENT)), return_exceptions=True)
        return {"created": len({r.epoch for r in created}),
                "advanced": all(a.epoch > c.epoch for a, c in zip(advanced, created, strict=True)),
                "winners": sum(not isinstance(r, BaseException) for r in race),
                "conflicts": sum(isinstance(r, EpochConflict) for r in race),
                "selected": len(await reg.select("c/", meta={"i": -1}))}

    async def cached_lookup(self, name: str, key: str) -> tuple[bool, bool]:
        reg = await AsyncRegistry.start(name)
        first = await reg.lookup(key)
        deadline = time.monotonic() + 10
        while not reg.cached(key) and time.monotonic() < deadline:
            await reg.lookup(key)
            await asyncio.sleep(0.05)
        return first is not None, reg.cached(key)

    async def burst_of_misses(self, name: str, keys: list[str]) -> dict[str, Any]:
        """Look up many uncached keys at once: the misses go to the registry together."""
        reg = await AsyncRegistry.get(name)
        found = await asyncio.gather(*(reg.entry(key) for key in keys))
        batchers = list(reg._batchers.values())
        deadline = time.monotonic() + 10
        while not all(reg.cached(k) for k in keys) and time.monotonic() < deadline:
            await asyncio.gather(*(reg.entry(key) for key in keys))
            await asyncio.sleep(0.05)
        return {"meta": [r.meta.get("i") if r is not None else None for r in found],
                "batches": sum(b.batches for b in batchers),
                "cached": all(reg.cached(k) for k in keys)}

    async def fenced(self, name: str, key: str) -> tuple[Any, str]:
        """``acheck`` from inside this actor: the epoch, or why it failed."""
        try:
            return await acheck(key, registry=name, timeout=1.0), ""
        except Superseded as exc:
            return exc.epoch, exc.detail

    async def kv_roundtrip(self, prefix: str) -> dict[str, Any]:
        keys = [f"{prefix}/{i}" for i in range(CONCURRENT)]
        new = await asyncio.gather(*(kv.aput(k, k.encode()) for k in keys))
        again = await kv.aput(keys[0], b"x", overwrite=False)
        values = await asyncio.gather(*(kv.aget(k) for k in keys))
        await kv.aput_object(f"{prefix}/obj", {"a": [1, 2]})
        listed = await kv.akeys(prefix + "/")
        obj = await kv.aget_object(f"{prefix}/obj")
        await asyncio.gather(*(kv.adelete(k) for k in listed))
        return {"new": all(new), "again": again, "values": values == [k.encode() for k in keys],
                "listed": len(listed), "obj": obj, "left": await kv.akeys(prefix + "/"),
                "missing": await kv.aget_object(f"{prefix}/obj", "gone")}


def _name() -> str:
    return f"aio-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def user(cluster: Any) -> Any:
    return AsyncUser.options(**pinned_options(cluster.worker_nodes[0].node_id)).remote()


def test_every_operation_from_an_async_actor(cluster: Any, user: Any) -> None:
    name = _name()
    other = Plain.remote()
    out = rpc.get(user.operations.remote(name, other), timeout=120)
    assert out["registered"] == ("a/me", True)
    assert out["lookup"] and out["entry"] == {"n": 1}
    assert out["select"] == ["a/me", "a/other"] and out["keys_of"] == ["a/me"]
    assert out["count"] == 2 and out["updated"] == {"n": 3}
    assert out["cas"] and out["conflict"][1]
    assert out["wait_for_missing"] == "a/nobody" and out["wait_for"] == "a/other"
    assert out["info"] == 1
    removed = (out["unregister_not_mine"], out["unregister_mine"], out["unregister_again"])
    assert removed == (0, 1, 0)
    assert (out["remove_other"], out["remove_claim"], out["count_after"]) == (1, 1, 0)
    assert out["bad_input"] == ["key", "owner", "meta filter", "key"]
    assert out["dispatch_mode"]
    assert Registry.get(name).count() == 0  # the blocking face sees the same registry
    assert not rpc.get(user.blocking_get_warned.remote(), timeout=10)


def test_fifty_long_polls_from_one_async_actor_run_at_once(cluster: Any, user: Any) -> None:
    name = _name()
    Registry.start(name)
    ref = user.concurrent_waits.remote(name)
    time.sleep(0.5)
    sent = time.monotonic()
    answered = rpc.get(user.ping.remote(), timeout=10)  # the event loop is free meanwhile
    assert answered - sent < 0.5
    elapsed, outcomes = rpc.get(ref, timeout=120)
    assert outcomes == ["NotRegistered"]
    # a pool of 6 threads would need CONCURRENT / 6 rounds of WAIT_S (~17 s)
    assert elapsed < 3 * WAIT_S, f"{CONCURRENT} waits took {elapsed:.1f} s"
    assert not rpc.get(user.blocking_get_warned.remote(), timeout=10)


def test_fifty_concurrent_compare_and_set_all_progress(cluster: Any, user: Any) -> None:
    out = rpc.get(user.concurrent_cas.remote(_name()), timeout=120)
    assert out == {"created": CONCURRENT, "advanced": True, "winners": 1,
                   "conflicts": CONCURRENT - 1, "selected": CONCURRENT}


def test_cached_lookup_from_an_async_actor(cluster: Any) -> None:
    name = _name()
    reg = Registry.start(name)
    holder = Plain.remote()
    reg.register("hot", holder)
    reader = AsyncUser.remote()
    found, cached = rpc.get(reader.cached_lookup.remote(name, "hot"), timeout=60)
    assert found and cached


def test_a_burst_of_lookup_misses_is_one_batch_and_fills_the_cache(cluster: Any) -> None:
    name = _name()
    reg = Registry.start(name, shards=2)
    holder = Plain.remote()
    reg.register_many([(f"k{i}", holder, {"i": i}) for i in range(200)])
    keys = [f"k{i}" for i in range(200)] + ["absent"]
    out = rpc.get(AsyncUser.remote().burst_of_misses.remote(name, keys), timeout=60)
    assert out["meta"] == [*range(200), None], "each caller its own key's record"
    assert out["batches"] <= 3, out  # 201 concurrent misses: not one call each
    assert out["cached"], "the batched answers filled the lookup cache"


def test_async_kv_from_an_async_actor(cluster: Any, user: Any) -> None:
    out = rpc.get(user.kv_roundtrip.remote(f"test/{uuid.uuid4().hex[:8]}"), timeout=60)
    assert out == {"new": True, "again": False, "values": True, "listed": CONCURRENT + 1,
                   "obj": {"a": [1, 2]}, "left": [], "missing": "gone"}


def test_async_registry_start_checks_the_mode(cluster: Any) -> None:
    name = _name()
    Registry.start(name)

    async def start_duplicate() -> None:
        await AsyncRegistry.start(name, keys="duplicate")

    with pytest.raises(KeyModeError):
        asyncio.run(start_duplicate())


def test_async_fencing_check(cluster: Any) -> None:
    name = _name()
    reg = Registry.start(name)
    holder, other = AsyncUser.remote(), AsyncUser.remote()
    epoch = reg.register("fenced", holder).epoch
    assert rpc.get(holder.fenced.remote(name, "fenced"), timeout=30) == (epoch, "")
    found, detail = rpc.get(other.fenced.remote(name, "fenced"), timeout=30)
    assert found == epoch and "the holder is now actor" in detail
    assert reg.remove("fenced") == 1
    found, detail = rpc.get(holder.fenced.remote(name, "fenced"), timeout=30)
    assert found is None and "no holder" in detail
