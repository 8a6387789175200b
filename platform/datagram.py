"""Signed datagrams between herd actors: a fast path beside Ray's actor calls for small,
idempotent messages that may be lost (presence gossip).

Why not only Ray calls: they ride TCP connections, and a connection whose segments were dropped
during a partition waits out its retransmission backoff after the heal before anything queued on
it moves (0.4-0.8 s after a 1 s cut between two worker nodes here: retransmissions at 0.2, 0.6,
1.4 s ...). A datagram sent after the heal arrives at once. Ray has no datagram primitive, so
this is the one piece of transport herd carries itself; everything that must arrive still goes
through Ray (the caller keeps a Ray path for when datagrams do not get through).

Each datagram is ``HMAC-SHA256(key, body) + body``, ``body`` a pickle; the key is shared by the
actors of one service through the GCS KV (``shared_key``). A datagram that is too short, does not
verify or does not unpickle is dropped and counted, never raised into the receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import pickle
import secrets
from collections.abc import Callable
from typing import Any, cast

from herd.platform import kv
from herd.platform.logging import get_logger

__all__ = ["MAX_DATAGRAM", "Address", "DatagramChannel", "shared_key"]

log = get_logger("herd.datagram")

Address = tuple[str, int]
#: The largest body sent as one datagram (below UDP's 65 507 over IPv4); a caller sends what
#: does not fit through Ray instead.
MAX_DATAGRAM = 60_000
KEY_BYTES = 32
_DIGEST = hashlib.sha256
_SIGNATURE_BYTES = _DIGEST().digest_size


async def shared_key(service: str) -> bytes:
    """The signing key of ``service`` (created by whichever actor asks first, kept in the GCS
    KV: every actor of the service reads the same one)."""
    key = f"datagram-key/{service}"
    await kv.aput(key, secrets.token_bytes(KEY_BYTES), overwrite=False)
    found = await kv.aget(key)
    if found is None or len(found) != KEY_BYTES:
        raise RuntimeError(f"the datagram key of {service!r} is missing from the GCS KV")
    return found


class DatagramChannel(asyncio.DatagramProtocol):
    """One UDP socket of an asyncio actor: ``send`` signs and sends, what arrives and verifies
    goes to ``on_message(message, sender_address)`` on the event loop."""

    def __init__(self, key: bytes, on_message: Callable[[Any, Address], None]) -> None:
        self.key, self.on_message = key, on_message
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)
        self.counts = {"sent": 0, "received": 0, "too_large": 0, "unpicklable": 0,
                       "rejected": 0, "send_errors": 0}

    @classmethod
    async def open(cls, host: str, key: bytes,
                   on_message: Callable[[Any, Address], None]) -> DatagramChannel:
        """A channel bound to ``host`` on a free port (``channel.address``)."""
        loop = asyncio.get_running_loop()
        _, channel = await loop.create_datagram_endpoint(lambda: cls(key, on_message),
                                                         local_addr=(host, 0))
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self.address = (str(host), int(port))

    def send(self, address: Address, message: Any) -> bool:
        """Send ``message`` to ``address``; False when it was not sent (too large for one
        datagram, not picklable, or the channel is closed): send it another way."""
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            self.counts["unpicklable"] += 1
            return False
        if len(body) > MAX_DATAGRAM:
            self.counts["too_large"] += 1
            return False
        self.transport.sendto(hmac.digest(self.key, body, _DIGEST) + body, address)
        self.counts["sent"] += 1
        return True

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        signature, body = data[:_SIGNATURE_BYTES], data[_SIGNATURE_BYTES:]
        if len(data) <= _SIGNATURE_BYTES or not hmac.compare_digest(
                signature, hmac.digest(self.key, body, _DIGEST)):
            self.counts["rejected"] += 1
            return
        try:
            message = pickle.loads(body)
        except Exception:  # signed by a peer, yet not readable here (a class missing here)
            self.counts["rejected"] += 1
            return
        self.counts["received"] += 1
        try:
            self.on_message(message, (str(addr[0]), int(addr[1])))
        except Exception as exc:  # the receiver's bug must not close the socket
            log.warning("datagram_handler_failed", error=repr(exc))

    def error_received(self, exc: Exception) -> None:
        # e.g. ICMP port unreachable for an earlier send to a peer that has gone
        self.counts["send_errors"] += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
