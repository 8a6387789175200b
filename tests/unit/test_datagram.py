"""Signed datagrams (``herd.platform.datagram``) between two channels of one event loop on
loopback: delivery with the sender's address, and every kind of bad datagram dropped and
counted without reaching the receiver."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from herd.platform.datagram import MAX_DATAGRAM, Address, DatagramChannel

KEY = b"k" * 32


async def pair(key_b: bytes = KEY) -> tuple[DatagramChannel, DatagramChannel,
                                            asyncio.Queue[tuple[Any, Address]]]:
    got: asyncio.Queue[tuple[Any, Address]] = asyncio.Queue()
    a = await DatagramChannel.open("127.0.0.1", KEY, lambda m, s: None)
    b = await DatagramChannel.open("127.0.0.1", key_b, lambda m, s: got.put_nowait((m, s)))
    return a, b, got


async def quiet(got: asyncio.Queue[Any], seconds: float = 0.2) -> bool:
    try:
        await asyncio.wait_for(got.get(), seconds)
    except asyncio.TimeoutError:
        return True
    return False


def test_a_message_arrives_with_its_senders_address() -> None:
    async def scenario() -> None:
        a, b, got = await pair()
        assert a.send(b.address, ("gossip", {"clock": (1, 2), "ops": [("join", "x")]}))
        message, sender = await asyncio.wait_for(got.get(), 5)
        assert message == ("gossip", {"clock": (1, 2), "ops": [("join", "x")]})
        assert sender == a.address and a.counts["sent"] == 1 and b.counts["received"] == 1
        a.close(), b.close()
    asyncio.run(scenario())


def test_wrong_key_forged_and_truncated_datagrams_are_dropped() -> None:
    async def scenario() -> None:
        a, b, got = await pair(key_b=b"x" * 32)
        assert a.send(b.address, "signed with another key")
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.sendto(b"short", b.address)
        raw.sendto(b"\0" * 32 + b"unsigned body", b.address)
        raw.close()
        assert await quiet(got)
        assert b.counts["rejected"] == 3 and b.counts["received"] == 0
        a.close(), b.close()
    asyncio.run(scenario())


def test_what_does_not_fit_or_pickle_is_not_sent() -> None:
    async def scenario() -> None:
        a, b, got = await pair()
        assert not a.send(b.address, b"x" * (MAX_DATAGRAM + 1))
        assert not a.send(b.address, lambda: None)  # a lambda does not pickle
        assert await quiet(got)
        assert (a.counts["too_large"], a.counts["unpicklable"], a.counts["sent"]) == (1, 1, 0)
        a.close()
        assert not a.send(b.address, "closed")
        b.close()
    asyncio.run(scenario())


def test_a_failing_receiver_keeps_the_channel_open() -> None:
    async def scenario() -> None:
        seen: list[Any] = []

        def handler(message: Any, sender: Address) -> None:
            seen.append(message)
            if message == "boom":
                raise ValueError("receiver bug")
        a = await DatagramChannel.open("127.0.0.1", KEY, lambda m, s: None)
        b = await DatagramChannel.open("127.0.0.1", KEY, handler)
        a.send(b.address, "boom")
        a.send(b.address, "after")
        for _ in range(50):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert seen == ["boom", "after"]
        a.close(), b.close()
    asyncio.run(scenario())
