"""The federation gateway's HTTP boundary without Ray: two gateways on 127.0.0.1 in one event
loop, real HTTP (and TLS with an openssl-made CA). A peer with a wrong token, an unknown origin,
an oversized or malformed body is refused, counted and never delivered."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from herd.platform.errors import ConfigError
from herd.platform.local.cluster import free_port
from herd.replication.federation.client import PeerClients
from herd.replication.federation.config import Federation, write_token_file
from herd.replication.federation.server import REGION_HEADER, REPLICATE_PATH, GatewayServer
from herd.replication.federation.tls import make_ca, make_certificate
from herd.replication.protocol import Ack, Digest, Envelope, Sync, decode, encode
from herd.replication.transport import PeerUnreachable

TOKEN = "t" * 40


def federation(region: str, ports: dict[str, int], **extra: Any) -> Federation:
    scheme = "https" if "tls" in extra else "http"
    return Federation(region=region, listen=f"127.0.0.1:{ports[region]}", token=TOKEN,
                      regions={r: f"{scheme}://127.0.0.1:{p}" for r, p in ports.items()},
                      request_timeout_s=3, **extra)


def ack_from(origin: str, target: str, seq: int = 3, store: str = "carts") -> bytes:
    return encode(Ack(Envelope(store, origin, 1, target), seq))


class Recorder:
    """Stands in for the region's replica: records what the gateway delivered, answers an
    Ack back to the message's origin."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.delivered: list[tuple[str, bytes]] = []

    async def __call__(self, store: str, payload: bytes) -> bytes:
        if store == "missing":
            raise LookupError(f"no replica of {store!r} in {self.region}")
        self.delivered.append((store, payload))
        origin = decode(payload).env.origin
        return encode(Ack(Envelope(store, self.region, 7, origin), 99))


def run_gateways(scenario: Callable[[dict[str, GatewayServer], dict[str, PeerClients],
                                     dict[str, Recorder]], Awaitable[None]],
                 **extra: Any) -> None:
    ports = {"us-east": free_port(), "us-west": free_port()}

    async def main() -> None:
        servers, clients, recorders = {}, {}, {}
        for region in ports:
            config = federation(region, ports, **extra)
            recorders[region] = Recorder(region)
            servers[region] = GatewayServer(config, recorders[region])
            clients[region] = PeerClients(config)
            await servers[region].start()
        try:
            await scenario(servers, clients, recorders)
        finally:
            for region in ports:
                await clients[region].close()
                await servers[region].stop()

    asyncio.run(main())


async def raw_post(server: GatewayServer, body: bytes, token: str = TOKEN,
                   origin: str = "us-east") -> tuple[int, bytes]:
    host, port = server.federation.listen_address()
    headers = {"Authorization": f"Bearer {token}", REGION_HEADER: origin}
    async with aiohttp.ClientSession() as session, session.post(
            f"http://{host}:{port}{REPLICATE_PATH}", data=body, headers=headers) as resp:
        return resp.status, await resp.read()


def test_message_is_delivered_and_the_reply_comes_back() -> None:
    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        reply = await clients["us-east"].send("us-west", ack_from("us-east", "us-west"))
        assert decode(reply) == Ack(Envelope("carts", "us-west", 7, "us-east"), 99)
        assert [store for store, _ in recorders["us-west"].delivered] == ["carts"]
        status = await servers["us-west"].status()
        assert status["inbound"]["accepted"] == {"us-east": 1}
        peer = clients["us-east"].status()["us-west"]
        assert peer["sent"] == 1 and peer["failed"] == 0 and peer["last_error"] is None

    run_gateways(scenario)


def test_wrong_or_missing_token_is_refused_counted_and_never_delivered() -> None:
    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        west = servers["us-west"]
        body = ack_from("us-east", "us-west")
        assert (await raw_post(west, body, token="x" * 40))[0] == 401
        assert (await raw_post(west, body, token=""))[0] == 401
        assert recorders["us-west"].delivered == []
        inbound = (await west.status())["inbound"]
        assert inbound["refused"] == {"unauthorized": 2}
        assert inbound["last_refusal"]["reason"] == "unauthorized"

    run_gateways(scenario)


def test_unknown_origin_wrong_target_and_spoofed_origin_are_refused() -> None:
    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        west = servers["us-west"]
        assert (await raw_post(west, ack_from("eu", "us-west"), origin="eu"))[0] == 403
        assert (await raw_post(west, ack_from("us-east", "us-west"), origin="us-west"))[0] == 403
        assert (await raw_post(west, ack_from("us-east", "eu")))[0] == 400
        status, body = await raw_post(west, ack_from("us-east", "us-west").replace(
            b'"origin":"us-east"', b'"origin":"eu-1"'))
        assert status == 400 and b"wrong_origin" in body
        assert (await raw_post(west, ack_from("us-east", "us-west", store="missing")))[0] == 404
        assert recorders["us-west"].delivered == []
        inbound = (await west.status())["inbound"]
        assert inbound["refused"] == {"unknown_origin": 2, "wrong_target": 1, "wrong_origin": 1}
        assert inbound["undeliverable"] == {"unknown_store": 1}

    run_gateways(scenario)


def test_malformed_truncated_and_oversized_bodies_are_refused() -> None:
    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        west = servers["us-west"]
        good = encode(Sync(Envelope("carts", "us-east", 1, "us-west"), 0,
                           Digest(0, "0" * 16, 1, ("0" * 16,))))
        for body in (b"", b"not json", good[: len(good) // 2], b"[1,2]",
                     good.replace(b'"v":1', b'"v":9')):
            assert (await raw_post(west, body))[0] == 400, body[:40]
        status, _ = await raw_post(west, b"x" * 5000)
        assert status == 413
        assert recorders["us-west"].delivered == []
        refused = (await west.status())["inbound"]["refused"]
        assert refused == {"malformed": 4, "version": 1, "oversized": 1}

    run_gateways(scenario, max_body_bytes=4096)


def test_unreachable_peer_is_a_counted_error_with_the_reason() -> None:
    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        await servers["us-west"].stop()
        with pytest.raises(PeerUnreachable, match="us-west"):
            await clients["us-east"].send("us-west", ack_from("us-east", "us-west"))
        peer = clients["us-east"].status()["us-west"]
        assert peer["failed"] == 1 and "Connect" in (peer["last_error"] or "")
        with pytest.raises(PeerUnreachable, match="not a peer"):
            await clients["us-east"].send("eu", b"{}")

    run_gateways(scenario)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_gateways_talk_and_a_plain_http_client_is_not_served(tmp_path: Path) -> None:
    make_ca(tmp_path)
    tls = make_certificate(tmp_path, "gateway", ["127.0.0.1"])

    async def scenario(servers: dict[str, GatewayServer], clients: dict[str, PeerClients],
                       recorders: dict[str, Recorder]) -> None:
        reply = await clients["us-east"].send("us-west", ack_from("us-east", "us-west"))
        assert decode(reply).env.origin == "us-west"
        host, port = servers["us-west"].federation.listen_address()
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session:
                await session.post(f"http://{host}:{port}{REPLICATE_PATH}", data=b"{}")
        assert len(recorders["us-west"].delivered) == 1

    run_gateways(scenario, tls=tls)


def test_federation_config_is_validated(tmp_path: Path) -> None:
    token_file = write_token_file(tmp_path / "token")
    assert token_file.stat().st_mode & 0o777 == 0o600
    good = {"region": "a", "regions": {"a": "http://10.0.0.1:7070", "b": "http://10.0.0.2:7070"},
            "token_file": str(token_file)}
    config = Federation.from_dict(good)
    assert config.peers == {"b": "http://10.0.0.2:7070"}
    assert config.listen_address() == ("0.0.0.0", 7070)
    assert config.secret() == token_file.read_text()
    for bad, field in (({"region": "c"}, "region"),
                       ({"regions": {"a": "http://x:1"}}, "regions"),
                       ({"regions": {"a": "ftp://x:1", "b": "http://y:1"}}, "regions"),
                       ({"token": "short"}, "token"),
                       ({"token_file": str(tmp_path / "none")}, "token_file"),
                       ({"listen": "nohost"}, "listen"),
                       ({"max_body_bytes": 0}, "max_body_bytes"),
                       ({"colour": "red"}, "colour")):
        with pytest.raises(ConfigError) as info:
            Federation.from_dict({**good, **bad})
        assert info.value.field is not None and info.value.field.startswith(field), info.value
    yaml_file = tmp_path / "federation.yaml"
    yaml_file.write_text("region: a\nregions: {a: 'http://h:1', b: 'http://h:2'}\n"
                         f"token_file: {token_file}\n")
    assert Federation.from_yaml(yaml_file).region == "a"

