"""Write-through durability for control-plane actors: Ray's GCS key-value store.

Ray Serve checkpoints its controller the same way. Keys live in the ``herd`` KV namespace.
Works in drivers and inside actors once Ray is initialised.

Two faces with the same names: ``get``/``put``/``delete``/``keys``/``get_object``/``put_object``
block; ``aget``/``aput``/``adelete``/``akeys``/``aget_object``/``aput_object`` are coroutines for
asyncio actors. The latter use the GCS client's own asynchronous calls
(``async_internal_kv_*``), so they never block the event loop or take a thread, and any number
of them can be outstanding at once.

Every call takes a timeout (``BLOCKING_TIMEOUT_S`` / ``GCS_TIMEOUT_S`` by default): while the
GCS does not answer (the head is down), a call raises :class:`ClusterUnavailable` within it
instead of blocking until Ray's own reconnect timeout (60 s).
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

from ray.exceptions import RpcError

from herd.platform.errors import ClusterUnavailable
from herd.platform.gcs import GCS_TIMEOUT_S, gcs_client
from herd.platform.rpc import aget as _await_future

KV_NAMESPACE = "herd"
_NAMESPACE = KV_NAMESPACE.encode()
# The blocking face is used by drivers and during control-plane recovery, where a loaded GCS may
# be slow: a longer default than the asynchronous face's.
BLOCKING_TIMEOUT_S = 15.0


def put(key: str, value: bytes, overwrite: bool = True,
        timeout: float = BLOCKING_TIMEOUT_S) -> bool:
    """Store raw bytes under ``key``; returns True when the key was new."""
    with _outage(f"KV put {key!r}"):
        added = gcs_client().internal_kv_put(key.encode(), value, overwrite, _NAMESPACE,
                                             timeout=timeout)
    return bool(added)


def get(key: str, timeout: float = BLOCKING_TIMEOUT_S) -> bytes | None:
    with _outage(f"KV get {key!r}"):
        found: bytes | None = gcs_client().internal_kv_get(key.encode(), _NAMESPACE,
                                                           timeout=timeout)
    return found


def delete(key: str, timeout: float = BLOCKING_TIMEOUT_S) -> None:
    with _outage(f"KV delete {key!r}"):
        gcs_client().internal_kv_del(key.encode(), False, _NAMESPACE, timeout=timeout)


def keys(prefix: str, timeout: float = BLOCKING_TIMEOUT_S) -> list[str]:
    with _outage(f"KV keys {prefix!r}"):
        found = gcs_client().internal_kv_keys(prefix.encode(), _NAMESPACE, timeout=timeout)
    return _decoded(found)


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
    with _outage(f"KV put {key!r}"):
        added = await _await_future(
            gcs_client().async_internal_kv_put(key.encode(), value, overwrite, _NAMESPACE,
                                               timeout=timeout), timeout + 1, f"KV put {key!r}")
    return bool(added)


async def aget(key: str, timeout: float = GCS_TIMEOUT_S) -> bytes | None:
    with _outage(f"KV get {key!r}"):
        found: bytes | None = await _await_future(
            gcs_client().async_internal_kv_get(key.encode(), _NAMESPACE, timeout=timeout),
            timeout + 1, f"KV get {key!r}")
    return found


async def adelete(key: str, timeout: float = GCS_TIMEOUT_S) -> None:
    with _outage(f"KV delete {key!r}"):
        await _await_future(
            gcs_client().async_internal_kv_del(key.encode(), False, _NAMESPACE,
                                               timeout=timeout),
            timeout + 1, f"KV delete {key!r}")


async def akeys(prefix: str, timeout: float = GCS_TIMEOUT_S) -> list[str]:
    with _outage(f"KV keys {prefix!r}"):
        found = await _await_future(
            gcs_client().async_internal_kv_keys(prefix.encode(), _NAMESPACE, timeout=timeout),
            timeout + 1, f"KV keys {prefix!r}")
    return _decoded(found)


async def aput_object(key: str, value: Any, timeout: float = GCS_TIMEOUT_S) -> None:
    await aput(key, _dumps(value), timeout=timeout)


async def aget_object(key: str, default: Any = None, timeout: float = GCS_TIMEOUT_S) -> Any:
    raw = await aget(key, timeout=timeout)
    return default if raw is None else pickle.loads(raw)


@contextlib.contextmanager
def _outage(what: str) -> Iterator[None]:
    """Ray's GCS client gives up with ``RpcError`` ("Timed out while waiting for GCS to become
    available") when the GCS does not answer within the call's timeout."""
    try:
        yield
    except RpcError as exc:
        raise ClusterUnavailable(f"{what} failed: the cluster's GCS did not answer ({exc}); "
                                 f"its head is down or unreachable") from exc


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _decoded(found: list[Any]) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else k for k in found]
