"""The gateway's client side: one HTTP connection pool per peer region, each POST bounded by
``request_timeout_s``, with per-peer counters (sent, failed, bytes, round trip, last error)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from herd.platform.logging import get_logger
from herd.replication.federation.config import Federation
from herd.replication.federation.server import CONTENT_TYPE, REGION_HEADER, REPLICATE_PATH
from herd.replication.transport import PeerUnreachable

log = get_logger("herd.federation.client")


@dataclass
class PeerStats:
    url: str
    sent: int = 0
    failed: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    last_ok_at: float | None = None
    last_rtt_ms: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ms_since_ok"] = (None if self.last_ok_at is None
                               else round((time.time() - self.last_ok_at) * 1e3, 1))
        return data


class PeerClients:
    """Sends protocol messages to peer gateways."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.stats = {region: PeerStats(url) for region, url in federation.peers.items()}
        self._session: aiohttp.ClientSession | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls = self.federation.tls
            connector = aiohttp.TCPConnector(
                ssl=tls.client_context() if tls else False, limit_per_host=8,
                enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, region: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        """POST ``payload`` to ``region``'s gateway; its reply bytes (``b""`` for none).
        Raises :class:`PeerUnreachable` (and records it) on a timeout, a connection error or a
        refusal."""
        stats = self.stats.get(region)
        if stats is None:
            raise PeerUnreachable(f"region {region!r} is not a peer of "
                                  f"{self.federation.region!r}")
        headers = {"Authorization": f"Bearer {self.federation.secret()}",
                   REGION_HEADER: self.federation.region, "Content-Type": CONTENT_TYPE}
        started = time.monotonic()
        limit = self.federation.request_timeout_s
        timeout = aiohttp.ClientTimeout(total=min(limit, timeout_s) if timeout_s else limit)
        try:
            async with self._session_for_loop().post(stats.url + REPLICATE_PATH, data=payload,
                                                     headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    detail = body[:300].decode(errors="replace")
                    raise PeerUnreachable(f"region {region!r}: HTTP {resp.status}: {detail}")
        except PeerUnreachable as exc:
            self._failed(stats, region, str(exc))
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
            self._failed(stats, region, detail)
            raise PeerUnreachable(f"region {region!r}: {detail}") from None
        stats.sent += 1
        stats.bytes_out += len(payload)
        stats.bytes_in += len(body)
        stats.last_ok_at = time.time()
        stats.last_rtt_ms = round((time.monotonic() - started) * 1e3, 2)
        return body

    def _failed(self, stats: PeerStats, region: str, detail: str) -> None:
        stats.failed += 1
        if stats.last_error != detail:
            log.warning("peer_send_failed", region=region, error=detail)
        stats.last_error = detail
        stats.last_error_at = time.time()

    def status(self) -> dict[str, dict[str, Any]]:
        return {region: stats.to_dict() for region, stats in self.stats.items()}
