"""Write-through durability for control-plane actors: Ray's GCS key-value store.

Ray Serve checkpoints its controller the same way. Keys live in the ``herd`` KV namespace.
Works in drivers and inside actors once Ray is initialised.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.experimental import internal_kv

KV_NAMESPACE = "herd"


def put(key: str, value: bytes, overwrite: bool = True) -> bool:
    """Store raw bytes under ``key``; returns True when the key was new."""
    return not internal_kv._internal_kv_put(key, value, overwrite=overwrite, namespace=KV_NAMESPACE)


def get(key: str) -> bytes | None:
    return internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)


def delete(key: str) -> None:
    internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def keys(prefix: str) -> list[str]:
    found = internal_kv._internal_kv_list(prefix, namespace=KV_NAMESPACE)
    return [k.decode() if isinstance(k, bytes) else k for k in found]


def put_object(key: str, value: Any) -> None:
    """Pickle ``value`` and store it (for state only herd itself reads back)."""
    put(key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def get_object(key: str, default: Any = None) -> Any:
    raw = get(key)
    return default if raw is None else pickle.loads(raw)
