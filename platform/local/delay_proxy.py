"""A TCP proxy that delays every byte by a fixed one-way latency, in both directions.

The kernel on these machines has no ``netem``, so a test topology adds latency to a link with
this proxy instead: a peer connects to the proxy's address on the link and the proxy forwards to
the real server. Each direction of a connection is a queue of ``(due time, chunk)`` drained by a
writer that sleeps until the chunk is due, so a round trip through the proxy costs twice the
delay and throughput is not capped (chunks in flight overlap, as on a long link).

Run as a process: ``python -m herd.platform.local.delay_proxy --listen HOST:PORT
--target HOST:PORT --delay-ms 50 [--listen ...]`` (one target, any number of listen addresses);
it exits when its stdin closes, so it dies with the process that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field

from herd.platform.logging import get_logger

log = get_logger("herd.delay_proxy")

READ_CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 5.0


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_forwarded: int = 0
    failed_connects: int = 0


@dataclass
class DelayProxy:
    """Listen on ``listen`` addresses, forward each connection to ``target`` with ``delay_s``
    added to each direction."""

    target: tuple[str, int]
    delay_s: float
    listen: list[tuple[str, int]] = field(default_factory=list)
    stats: ProxyStats = field(default_factory=ProxyStats)
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listen address (port 0 picks one); returns the bound addresses."""
        bound: list[tuple[str, int]] = []
        for host, port in self.listen:
            server = await asyncio.start_server(self._handle, host, port)
            self._servers.append(server)
            sockname = server.sockets[0].getsockname()
            bound.append((sockname[0], sockname[1]))
        self.listen = bound
        log.info("delay_proxy_started", listen=bound, target=self.target,
                 delay_ms=self.delay_s * 1e3)
        return bound

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their finally closes the sockets
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        writers = [client_writer]
        try:
            try:
                server_reader, server_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), CONNECT_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as exc:
                self.stats.failed_connects += 1
                log.warning("delay_proxy_connect_failed", target=self.target, error=str(exc))
                return
            writers.append(server_writer)
            self.stats.connections += 1
            await asyncio.gather(self._pipe(client_reader, server_writer),
                                 self._pipe(server_reader, client_writer))
        finally:
            for writer in writers:
                writer.close()
            for writer in writers:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk released ``delay_s`` after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send_when_due(queue, writer))
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                queue.put_nowait((time.monotonic() + self.delay_s, chunk))
                if not chunk:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            sender.cancel()
            writer.close()
        finally:
            if not sender.done():
                sender.cancel()

    async def _send_when_due(self, queue: asyncio.Queue[tuple[float, bytes]],
                             writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:  # the other side closed its write half: pass the EOF on, delayed
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                self.stats.bytes_forwarded += len(chunk)
                await writer.drain()
        except OSError:
            writer.close()


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def serve_until_stdin_closes(proxy: DelayProxy) -> None:
    await proxy.start()
    sys.stdout.write("ready\n")  # the parent waits for this line before using the proxy
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herd-delay-proxy", description=__doc__)
    parser.add_argument("--listen", type=parse_address, action="append", required=True)
    parser.add_argument("--target", type=parse_address, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error(f"--delay-ms must be >= 0, got {args.delay_ms}")
    proxy = DelayProxy(target=args.target, delay_s=args.delay_ms / 1e3, listen=args.listen)
    asyncio.run(serve_until_stdin_closes(proxy))


if __name__ == "__main__":
    main()
