"""Where a registry lives: actor names, shard of a key, GCS KV keys."""

from __future__ import annotations

import zlib

ACTOR_PREFIX = "herd/registry/"
KV_PREFIX = "registry/"


def actor_name(name: str, shard: int, shards: int) -> str:
    """``herd/registry/<name>`` for one shard, ``herd/registry/<name>/<shard>`` for several."""
    return f"{ACTOR_PREFIX}{name}" if shards == 1 else f"{ACTOR_PREFIX}{name}/{shard}"


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and restarts (CRC-32 of the UTF-8 key)."""
    return zlib.crc32(key.encode("utf-8")) % shards if shards > 1 else 0


def config_key(name: str) -> str:
    return f"{KV_PREFIX}{name}/config"


def shard_prefix(name: str, shard: int) -> str:
    return f"{KV_PREFIX}{name}/{shard}/"
