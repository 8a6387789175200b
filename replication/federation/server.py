"""The gateway's HTTP server: authenticates a peer region, validates its message and hands the
bytes to this region's replica of the store.

``POST /v1/replicate`` with ``Authorization: Bearer <token>``, ``X-Herd-Region: <origin>`` and a
protocol message (:mod:`herd.replication.protocol`) as the body; the answer is the replica's
reply bytes (``204`` when there is none). ``GET /v1/status`` (same token) returns the gateway's
counters. Everything refused is logged with its reason and counted, and never reaches a
replica: a missing or wrong token (401), an origin that is not a peer region (403), a body over
``max_body_bytes`` (413), a message that does not decode or is not addressed to this region
(400).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from herd.platform.logging import get_logger
from herd.platform.metrics import start_sampling
from herd.replication.federation.config import Federation
from herd.replication.federation.metrics import GatewayMetrics
from herd.replication.protocol import ProtocolViolation, decode

log = get_logger("herd.federation.server")

REPLICATE_PATH = "/v1/replicate"
STATUS_PATH = "/v1/status"
REGION_HEADER = "X-Herd-Region"
CONTENT_TYPE = "application/vnd.herd.replication+json"

#: Hands a validated message (store name, raw bytes) to the local replica; returns its reply.
Deliver = Callable[[str, bytes], Awaitable[bytes]]
#: Extra status (peers, lag) merged into ``GET /v1/status``.
StatusSource = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class InboundStats:
    """What the server accepted and refused, by reason; the last refusal for the status."""

    accepted: Counter[str] = field(default_factory=Counter)       # by origin region
    refused: Counter[str] = field(default_factory=Counter)        # bad peer input, by reason
    undeliverable: Counter[str] = field(default_factory=Counter)  # good input, no replica here
    bytes_in: int = 0
    last_refusal: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": dict(self.accepted), "refused": dict(self.refused),
                "refused_total": sum(self.refused.values()),
                "undeliverable": dict(self.undeliverable), "bytes_in": self.bytes_in,
                "last_refusal": self.last_refusal}


class GatewayServer:
    """The aiohttp application of one region's gateway."""

    def __init__(self, federation: Federation, deliver: Deliver,
                 status: StatusSource | None = None) -> None:
        self.federation = federation
        self.deliver = deliver
        self.status_source = status
        self.stats = InboundStats()
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.federation.max_body_bytes)
        app.router.add_post(REPLICATE_PATH, self._replicate)
        app.router.add_get(STATUS_PATH, self._status)
        return app

    async def start(self) -> tuple[str, int]:
        """Bind the listen address (TLS when configured); returns the bound address."""
        host, port = self.federation.listen_address()
        tls = self.federation.tls
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port,
                           ssl_context=tls.server_context() if tls else None)
        await site.start()
        metrics = GatewayMetrics(self.federation.region)
        self.sampling = start_sampling(lambda: metrics.sample(self.stats))
        log.info("gateway_listening", region=self.federation.region, host=host, port=port,
                 tls=tls is not None)
        return host, port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------------------- handlers
    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        expected = self.federation.secret()
        # compare_digest on equal-type bytes; the scheme check leaks nothing about the token
        return scheme == "Bearer" and hmac.compare_digest(presented.encode(), expected.encode())

    def _refuse(self, request: web.Request, status: int, reason: str, detail: str) -> web.Response:
        self.stats.refused[reason] += 1
        origin = request.headers.get(REGION_HEADER, "")[:100]
        self.stats.last_refusal = {"reason": reason, "detail": detail, "origin": origin,
                                   "peer": request.remote, "at": time.time()}
        log.warning("gateway_refused", region=self.federation.region, reason=reason,
                    detail=detail, origin=origin, peer=request.remote)
        return web.json_response({"error": reason, "detail": detail}, status=status)

    async def _replicate(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._refuse(request, 401, "unauthorized", "missing or wrong token")
        origin = request.headers.get(REGION_HEADER, "")
        if origin not in self.federation.peers:
            return self._refuse(request, 403, "unknown_origin",
                                f"{origin[:100]!r} is not a peer region")
        limit = self.federation.max_body_bytes
        if (request.content_length or 0) > limit:
            return self._refuse(request, 413, "oversized",
                                f"{request.content_length} bytes > {limit}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "oversized", f"body over {limit} bytes")
        try:
            message = decode(body, max_bytes=limit)
        except ProtocolViolation as exc:
            return self._refuse(request, 400, exc.reason, exc.detail)
        env = message.env
        if env.origin != origin:
            return self._refuse(request, 400, "wrong_origin",
                                f"message from {env.origin!r} sent as {origin!r}")
        if env.target != self.federation.region:
            return self._refuse(request, 400, "wrong_target",
                                f"message for {env.target!r} sent to {self.federation.region!r}")
        self.stats.bytes_in += len(body)
        try:
            reply = await self.deliver(env.store, body)
        except LookupError as exc:  # no replica of that store here (yet): the peer retries
            return self._undeliverable(404, "unknown_store", str(exc))
        except Exception as exc:  # the local replica failed: the peer retries later
            return self._undeliverable(503, "unavailable", repr(exc)[:300])
        self.stats.accepted[origin] += 1
        if not reply:
            return web.Response(status=204)
        return web.Response(body=reply, content_type=CONTENT_TYPE)

    def _undeliverable(self, status: int, reason: str, detail: str) -> web.Response:
        """A valid message this region cannot take now (not a refusal of the peer)."""
        self.stats.undeliverable[reason] += 1
        log.info("gateway_undeliverable", region=self.federation.region, reason=reason,
                 detail=detail)
        return web.json_response({"error": reason, "detail": detail}, status=status)

    async def _status(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refuse(request, 401, "unauthorized", "missing or wrong token")
        return web.json_response(await self.status())

    async def status(self) -> dict[str, Any]:
        extra = await self.status_source() if self.status_source else {}
        return {"region": self.federation.region, "inbound": self.stats.to_dict(), **extra}
