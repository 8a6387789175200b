"""Write-through durability for control-plane actors: Ray's GCS key-value store.

Ray Serve checkpoints its controller the same way. Keys live in the ``herd`` KV namespace.
Works in drivers and inside actors once Ray is initialised.

Two faces with the same names: ``get``/``put``/``delete``/``keys``/``get_object``/``put_object``
block; ``aget``/``aput``/``adelete``/``akeys``/``aget_object``/``aput_object`` are coroutines for
asyncio actors. The latter use the GCS client's own asynchronous calls
(``async_internal_kv_*``), so they never block the event loop or take a thread, and any number
of them can be outstanding at once.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.experimental import internal_kv

from herd.platform.gcs import GCS_TIMEOUT_S, gcs_client
from herd.platform.rpc import aget as _await_future

KV_NAMESPACE = "herd"
_NAMESPACE = KV_NAMESPACE.encode()


def put(key: str, value: bytes, overwrite: bool = True) -> bool:
    """Store raw bytes under ``key``; returns True when the key was new."""
    return not internal_kv._internal_kv_put(key, value, overwrite=overwrite, namespace=KV_NAMESPACE)


def get(key: str) -> bytes | None:
    return internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)


def delete(key: str) -> None:
    internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def keys(prefix: str) -> list[str]:
    return _decoded(internal_kv._internal_kv_list(prefix, namespace=KV_NAMESPACE))


def put_object(key: str, value: Any) -> None:
    """Pickle ``value`` and store it (for state only herd itself reads back)."""
    put(key, _dumps(value))


def get_object(key: str, default: Any = None) -> Any:
    raw = get(key)
    return default if raw is None else pickle.loads(raw)


# ------------------------------------------------------------------------------ asyncio face
async def aput(key: str, value: bytes, overwrite: bool = True,
               timeout: float = GCS_TIMEOUT_S) -> bool:
    """``put`` for asyncio code: True when the key was new."""
    added = await _await_future(
        gcs_client().async_internal_kv_put(key.encode(), value, overwrite, _NAMESPACE,
                                           timeout=timeout), timeout + 1, f"KV put {key!r}")
    return bool(added)


async def aget(key: str, timeout: float = GCS_TIMEOUT_S) -> bytes | None:
    return await _await_future(
        gcs_client().async_internal_kv_get(key.encode(), _NAMESPACE, timeout=timeout),
        timeout + 1, f"KV get {key!r}")


async def adelete(key: str, timeout: float = GCS_TIMEOUT_S) -> None:
    await _await_future(
        gcs_client().async_internal_kv_del(key.encode(), False, _NAMESPACE, timeout=timeout),
        timeout + 1, f"KV delete {key!r}")


async def akeys(prefix: str, timeout: float = GCS_TIMEOUT_S) -> list[str]:
    found = await _await_future(
        gcs_client().async_internal_kv_keys(prefix.encode(), _NAMESPACE, timeout=timeout),
        timeout + 1, f"KV keys {prefix!r}")
    return _decoded(found)


async def aput_object(key: str, value: Any, timeout: float = GCS_TIMEOUT_S) -> None:
    await aput(key, _dumps(value), timeout=timeout)


async def aget_object(key: str, default: Any = None, timeout: float = GCS_TIMEOUT_S) -> Any:
    raw = await aget(key, timeout=timeout)
    return default if raw is None else pickle.loads(raw)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _decoded(found: list[Any]) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else k for k in found]
