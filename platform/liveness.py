"""A process's death, seen by its watcher as soon as its kernel closes its sockets.

Ray tells an actor's owner that the actor died once the raylet has seen the worker exit and the
GCS has published it (~15-20 ms on an idle 2-core machine, more under load). A process that
holds a TCP connection open tells its peer sooner: when the process dies, however it dies
(SIGKILL included), its kernel closes the connection and the peer reads end-of-file at once.

``serve()`` (in the watched process) starts, once per process, a listener whose accepted
connections are held open and never read or written; it returns its address. ``closed(address)``
(in the watcher) connects and returns once the connection ends. It says nothing about a process
on a node that died or is cut off (no kernel is left to close anything): watchers keep Ray's
death notice for that, and use this one only as the earlier of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import ray

__all__ = ["CONNECT_TIMEOUT_S", "closed", "serve"]

#: How long ``closed`` may take to connect before it gives up (the watcher then relies on Ray).
CONNECT_TIMEOUT_S = 5.0

_lock = threading.Lock()
_address: tuple[str, int] | None = None
_held: list[socket.socket] = []  # accepted connections: open for as long as this process lives


def serve() -> tuple[str, int]:
    """This process's liveness address (its node's IP, a port), listening from now on."""
    global _address
    with _lock:
        if _address is None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((ray.util.get_node_ip_address(), 0))
            listener.listen(64)
            threading.Thread(target=_accept, args=(listener,), name="herd-liveness",
                             daemon=True).start()
            _address = listener.getsockname()[:2]
        return _address


def _accept(listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # only at interpreter shutdown
            return
        _held.append(connection)


async def closed(address: tuple[str, int] | list[object]) -> None:
    """Return once the process serving ``address`` has closed the connection (it died).
    Raises ``OSError`` or ``asyncio.TimeoutError`` if it cannot connect (already gone, or
    unreachable): the caller then has no early notice."""
    host, port = address
    reader, writer = await asyncio.wait_for(asyncio.open_connection(str(host), int(str(port))),
                                            CONNECT_TIMEOUT_S)
    try:
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
    finally:
        writer.close()
