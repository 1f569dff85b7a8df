"""The nova-like chain (haproxy → agent → server in proxy mode) serves each guest its own data."""

from __future__ import annotations

import asyncio
import errno
import gc
import random
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from configdrive.service.config import ServiceConfig
from configdrive.service.proxychain import Chain, HopSpec, start_chain
from configdrive.service.registry import Registry
from configdrive.service.testing import (
    GuestConnection,
    ServerThread,
    crawl_many,
    guest_ip,
    guest_spec,
    http_request,
)

SECRET = "chain-secret"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Chain]]:
    tmp = tmp_path_factory.mktemp("chain")
    config = ServiceConfig(
        listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", admin_token="admin",
        store=str(tmp / "md.db"), access_log="off", mode="proxy", shared_secret=SECRET,
        proxy_addresses=("127.0.0.1/32",),
    )  # fmt: skip
    server = ServerThread(config)
    for i in range(20):
        assert server.admin("POST", "/v1/instances", {"spec": guest_spec(i)})[0] == 201
    hops = [HopSpec("haproxy", 0.002), HopSpec("forward", 0.002), HopSpec("agent", 0.002)]
    started = server.call(
        start_chain(
            server.running.addresses[0],
            hops,
            registry=server.running.service.registry,
            secret=SECRET,
        )
    )
    yield server, started
    server.call(started.stop())
    server.stop()


def test_each_guest_gets_its_own_data_through_the_chain(chain: tuple[ServerThread, Chain]) -> None:
    _, hops = chain
    port = hops.entry[1]
    for i in (0, 7, 19):
        status, _, body = http_request(port, "/latest/meta-data/local-ipv4", source=guest_ip(i))
        assert (status, body) == (200, guest_ip(i).encode())
    assert http_request(port, "/latest/meta-data/local-ipv4", source="127.9.9.9")[0] == 404
    forged = {"X-Instance-ID": guest_spec(7)["uuid"], "X-Tenant-ID": guest_spec(7)["project_id"]}
    status, _, body = http_request(
        port, "/latest/meta-data/local-ipv4", source=guest_ip(0), headers=forged
    )
    assert (status, body) == (200, guest_ip(0).encode())  # haproxy drops the forged headers


def test_tokens_through_the_chain(chain: tuple[ServerThread, Chain]) -> None:
    _, hops = chain
    port, ip = hops.entry[1], guest_ip(3)
    status, headers, tok = http_request(
        port, "/latest/api/token", method="PUT", source=ip, headers={TTL: "60"}
    )
    assert status == 200 and headers[TTL.lower()] == "60"
    status, _, _ = http_request(
        port,
        "/latest/meta-data/hostname",
        source=ip,
        headers={"X-aws-ec2-metadata-token": tok.decode()},
    )
    assert status == 200
    # a guest-side X-Forwarded-For arrives as a second entry: refused on PUT
    spoof = {TTL: "60", "X-Forwarded-For": guest_ip(4)}
    assert http_request(port, "/latest/api/token", method="PUT", source=ip, headers=spoof)[0] == 403


def _status_with(port: int, path: str, source: str, headers: list[tuple[str, str]]) -> int:
    """GET with ``headers`` sent as given, repeated names included."""
    conn = GuestConnection("127.0.0.1", port, source=source)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_repeated_token_header_reaches_the_server_repeated(
    chain: tuple[ServerThread, Chain],
) -> None:
    """The hops forward every header line as haproxy does, repeats included: the server, not
    a hop that keeps one of them, decides (400, see test_service.py)."""
    _, hops = chain
    port, ip = hops.entry[1], guest_ip(3)
    tok = http_request(port, "/latest/api/token", method="PUT", source=ip, headers={TTL: "60"})[2]
    path, name = "/latest/meta-data/hostname", "X-aws-ec2-metadata-token"
    assert _status_with(port, path, ip, [(name, tok.decode())]) == 200
    for values in ((tok.decode(), tok.decode()), ("forged", tok.decode()), (tok.decode(), "x")):
        assert _status_with(port, path, ip, [(name, v) for v in values]) == 400, values


def test_hop_latency_adds_up(chain: tuple[ServerThread, Chain]) -> None:
    server, hops = chain
    direct = server.running.addresses[0][1]
    began = time.perf_counter()
    for _ in range(10):
        http_request(hops.entry[1], "/openstack/latest/meta_data.json", source=guest_ip(1))
    through = (time.perf_counter() - began) / 10
    assert through >= 0.006  # three hops x 2 ms
    result = asyncio.run(crawl_many(hops.entry[1], 20))
    assert result.errors == []
    assert direct != hops.entry[1]


def test_a_front_stands_for_one_guests_network(chain: tuple[ServerThread, Chain]) -> None:
    """QEMU user networking NATs every guest to 127.0.0.1: a guest's own front port on the
    haproxy hop stamps its address, so the agent finds that guest and no other."""
    server, hops = chain
    _, port5 = server.call(hops.add_front(guest_ip(5)))
    _, port6 = server.call(hops.add_front(guest_ip(6)))
    before = hops.counts.get(guest_ip(5), 0)
    assert len({port5, port6, hops.entry[1]}) == 3
    for port, i in ((port5, 5), (port6, 6)):
        # the socket peer is 127.0.0.1 (as QEMU's nc connects), the front decides who it is
        status, _, body = http_request(port, "/latest/meta-data/local-ipv4")
        assert (status, body) == (200, guest_ip(i).encode())
        xff = {"X-Forwarded-For": guest_ip(0)}  # a guest cannot claim another's address
        status, _, body = http_request(port, "/latest/meta-data/local-ipv4", headers=xff)
        assert (status, body) == (200, guest_ip(i).encode())
    assert hops.counts[guest_ip(5)] == before + 2  # the haproxy hop counts each guest's requests
    # the shared entry still identifies by the real peer
    assert http_request(hops.entry[1], "/latest/meta-data/local-ipv4")[0] == 404


async def _chain_on_a_chosen_port(
    upstream: tuple[str, int], hops: list[HopSpec], registry: Registry
) -> tuple[Chain, int]:
    """start_chain on a port this test picks: below the ephemeral range, so no bind(0) or
    connect() elsewhere is handed it; the start itself is the probe (no pick-close-reuse
    window), and a port some service already holds is skipped."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = random.randrange(low // 2, low - 64)
    for port in range(first, first + 64):
        try:
            chain = await start_chain(
                upstream, hops, registry=registry, secret=SECRET, listen=("127.0.0.1", port)
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return chain, port
    raise AssertionError(f"64 ports from {first} on are all taken")


def test_the_guest_facing_hop_listens_where_asked(chain: tuple[ServerThread, Chain]) -> None:
    server, _ = chain
    hops = [HopSpec("haproxy", 0.0), HopSpec("agent", 0.0)]
    registry = server.running.service.registry
    upstream = server.running.addresses[0]
    own, wanted = server.call(_chain_on_a_chosen_port(upstream, hops, registry))
    try:
        assert own.addresses[0] == ("127.0.0.1", wanted)
        status, _, body = http_request(wanted, "/latest/meta-data/local-ipv4", source=guest_ip(2))
        assert (status, body) == (200, guest_ip(2).encode())
    finally:
        server.call(own.stop())
    # a taken port: start_chain raises and leaves no hop, session or task behind
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def attempt() -> int:
            before = len(asyncio.all_tasks())
            with pytest.raises(OSError):
                await start_chain(
                    upstream, hops, registry=registry, secret=SECRET, listen=("127.0.0.1", port)
                )
            await asyncio.sleep(0.05)
            return len(asyncio.all_tasks()) - before

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an unclosed ClientSession warns when collected
            assert server.call(attempt()) == 0
            gc.collect()
