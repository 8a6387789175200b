"""The dashboard's aiohttp application: the page and its static files (shipped in the wheel, no
build step, no CDN), JSON views of the census, one server-sent event stream per open page, and
the actions (restart or terminate a child, drain a node) behind the cluster token.

What a page receives: ``/api/state`` once (summary, static trees, panels, recent events), then
over ``/api/stream``: ``summary`` (counts per supervisor and node, sent only when they change,
at most every ``SUMMARY_EVERY_S``), ``event`` (timeline), ``panels`` and ``status`` (cluster
reachable or not). Children come one page at a time from ``/api/children``; the census itself
is never shipped whole.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from herd.cli.dashboard.census import Census
from herd.cli.dashboard.feed import Feed
from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.supervisors import DynamicSupervisor, Supervisor

STATIC = Path(__file__).parent / "static"
SUMMARY_EVERY_S = 0.5
HEARTBEAT_S = 15.0
RECENT_EVENTS = 200
QUEUE_LIMIT = 1000
ACTION_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 120.0

log = get_logger("herd.dashboard")


class PortInUse(HerdError):
    """The dashboard's port is taken by another process."""


class Hub:
    """Fan-out of published messages to the open streams (thread-safe :meth:`publish`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: set[asyncio.Queue[tuple[str, Any]]] = set()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.status: dict[str, Any] = {"connected": True, "detail": ""}
        self.panels: dict[str, Any] = {}

    def publish(self, kind: str, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self._fan_out, kind, payload)

    def _fan_out(self, kind: str, payload: Any) -> None:
        if kind == "event":
            self.recent.append(payload)
        elif kind == "status":
            self.status = payload
        elif kind == "panels":
            self.panels = payload
        for queue in list(self.queues):
            if queue.qsize() < QUEUE_LIMIT:  # a stalled page loses messages, not the server
                queue.put_nowait((kind, payload))


class Dashboard:
    def __init__(self, token: str | None, registry: str = "default") -> None:
        self.token = token
        self.registry = registry
        self.census = Census()
        self.hub: Hub | None = None
        self.feed: Feed | None = None
        self._summary: Any = None

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/children", self._children)
        app.router.add_get("/api/child", self._child)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/actions/{action}", self._action)
        app.on_startup.append(self._started)
        app.on_shutdown.append(self._closing)
        app.on_cleanup.append(self._stopped)
        return app

    async def _started(self, app: web.Application) -> None:
        self.hub = Hub(asyncio.get_running_loop())
        self.feed = Feed(self.census, self.hub.publish, self.registry)
        self.feed.start()
        app["summary_task"] = asyncio.get_running_loop().create_task(self._summaries())

    async def _closing(self, app: web.Application) -> None:
        """Before the server closes its connections: end every open stream (a page keeps its
        stream open forever otherwise, and shutting down would wait for it)."""
        if self.hub is not None:
            for queue in self.hub.queues:
                queue.put_nowait(("close", None))

    async def _stopped(self, app: web.Application) -> None:
        if self.feed is not None:
            self.feed.stop()
        app["summary_task"].cancel()

    def supervisor_names(self) -> list[str]:
        return [s["name"] for s in self._view(self.census.summary)["supervisors"]]

    def _view(self, read: Callable[[], Any]) -> Any:
        assert self.feed is not None
        with self.feed.lock:
            return read()

    async def _summaries(self) -> None:
        while True:
            summary = self._view(self.census.summary)
            if summary != self._summary and self.hub is not None:
                self._summary = summary
                self.hub._fan_out("summary", summary)
            await asyncio.sleep(SUMMARY_EVERY_S)

    # ------------------------------------------------------------------ views
    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _state(self, request: web.Request) -> web.Response:
        assert self.hub is not None and self.feed is not None
        feed = self.feed
        return web.json_response({
            "summary": self._view(self.census.summary),
            "trees": self._view(lambda: dict(feed.trees)),
            "panels": self.hub.panels, "events": list(self.hub.recent),
            "status": self.hub.status, "actions": self.token is not None})

    async def _children(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset, limit = int(q.get("offset", "0")), int(q.get("limit", "50"))
        except ValueError:
            return _error(400, "offset and limit must be integers")
        return web.json_response(self._view(lambda: self.census.page(
            q.get("supervisor") or None, q.get("q", ""), max(0, offset), limit)))

    async def _child(self, request: web.Request) -> web.Response:
        sup, child_id = request.query.get("supervisor", ""), request.query.get("id", "")
        found = self._view(lambda: self.census.child(sup, child_id))
        if found is None:
            return _error(404, f"no child {child_id!r} under {sup!r}")
        return web.json_response(found)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        assert self.hub is not None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.hub.queues.add(queue)
        try:
            status = json.dumps(self.hub.status)
            await response.write(f"event: status\ndata: {status}\n\n".encode())
            while True:
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if kind == "close":
                    break
                data = json.dumps(payload, default=str)
                await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.queues.discard(queue)
        return response

    # ------------------------------------------------------------------ actions
    def _authorized(self, request: web.Request) -> str | None:
        """None when the request carries the cluster token, else why not."""
        if self.token is None:
            return "actions are off: the dashboard has no cluster token (--token-file)"
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not presented:
            return "missing token: actions need the cluster token"
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            return "wrong token"
        return None

    async def _action(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            log.warning("dashboard_action_refused", action=request.match_info["action"],
                        why=refused, peer=request.remote)
            return _error(401, refused)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be a JSON object")
        action = request.match_info["action"]
        sup, target = str(body.get("supervisor", "")), str(body.get("id", ""))
        if action not in ("restart", "terminate", "drain") or not sup or not target:
            return _error(400, "POST /api/actions/{restart|terminate|drain} with "
                               '{"supervisor": ..., "id": child id or node id}')
        static = self._view(lambda: sup not in {s["name"] for s in self.census.summary()[
            "supervisors"] if s["kind"] == "dynamic"})
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                None, _run_action, action, sup, target, static)
        except HerdError as exc:
            return _error(409, str(exc).splitlines()[0])
        log.warning("dashboard_action", action=action, supervisor=sup, target=target)
        return web.json_response({"ok": True, "action": action, "result": done})


def _run_action(action: str, sup: str, target: str, static: bool) -> str:
    if action == "drain":
        if static:
            raise HerdError(f"{sup!r} is a static supervisor: only dynamic ones drain nodes")
        DynamicSupervisor.get(sup).drain_node(target, timeout=DRAIN_TIMEOUT_S)
        return f"node {target[:12]} drained"
    handle: Any = Supervisor.get(sup) if static else DynamicSupervisor.get(sup)
    if action == "restart":
        handle.restart_child(target, timeout=ACTION_TIMEOUT_S)
        return f"{target} restarted"
    handle.terminate_child(target, timeout=ACTION_TIMEOUT_S)
    return f"{target} terminated"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def serve(dashboard: Dashboard, host: str, port: int) -> web.AppRunner:
    """Start listening; ``PortInUse`` when ``port`` is taken."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use: pick another with --port") from None
        raise HerdError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return runner
