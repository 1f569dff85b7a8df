"""A nova-like forwarding chain for the benchmark: VM → haproxy → metadata agent → nova.

Each hop is a small aiohttp server that waits its configured latency, then forwards the request
over a keep-alive pool to the next hop:

- ``haproxy`` (first hop, as neutron's per-router haproxy): deletes any client-supplied
  identity headers and *appends* the peer address to ``X-Forwarded-For`` (``option
  forwardfor``);
- ``forward``: a plain extra hop (load balancer, namespace proxy…);
- ``agent`` (last hop, as neutron-metadata-agent): maps the address haproxy added (the last
  ``X-Forwarded-For`` entry) to its instance, adds ``X-Instance-ID``, ``X-Tenant-ID`` and
  ``X-Instance-ID-Signature`` (HMAC-SHA256 with the shared secret) and forwards to the server,
  which runs in proxy mode trusting only the agent's address.

The instance lookup reads the same store as the server (a :class:`Registry`), as the agent asks
neutron for the port.

Guests on QEMU user networking reach the host through NAT, so every guest connection arrives
from 127.0.0.1. :meth:`Chain.add_front` gives one guest its own listening port on the haproxy
hop, which stands for that guest's network: requests on it are stamped with the guest's address,
as haproxy inside the guest's network sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from configdrive.service.config import HOP_KINDS, HopSpec
from configdrive.service.registry import Registry
from configdrive.service.security import sign_instance_id

__all__ = ["HOP_KINDS", "Chain", "HopSpec", "start_chain"]

_STRIP = frozenset(
    h.lower()
    for h in (
        "X-Instance-ID",
        "X-Tenant-ID",
        "X-Instance-ID-Signature",
        "X-Neutron-Router-ID",
        "X-Neutron-Network-ID",
        "X-Metadata-Provider",
        "X-Metadata-Provider-Signature",
    )
)
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length")
)
_PASS_BACK = ("Content-Type", "Allow", "Retry-After", "X-aws-ec2-metadata-token-ttl-seconds")


@dataclass
class Chain:
    """Started hops, first (guest-facing) first."""

    runners: list[web.AppRunner]
    sessions: list[aiohttp.ClientSession]
    addresses: list[tuple[str, int]]
    fronts: dict[int, str] = field(default_factory=dict)  # haproxy port -> guest address
    counts: dict[str, int] = field(default_factory=dict)  # guest address -> requests seen

    @property
    def entry(self) -> tuple[str, int]:
        return self.addresses[0]

    async def add_front(self, guest_address: str, port: int = 0) -> tuple[str, int]:
        """Open another port on the first (haproxy) hop for one guest's network: requests
        arriving on it are forwarded as coming from ``guest_address``."""
        address = ipaddress.ip_address(guest_address).compressed
        host = self.addresses[0][0]
        site = web.TCPSite(self.runners[0], host, port, backlog=4096)
        await site.start()
        bound = _bound_port(site)
        self.fronts[bound] = address
        return host, bound

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        for session in self.sessions:
            await session.close()


def _bound_port(site: web.TCPSite) -> int:
    server = getattr(site, "_server", None)
    return int(server.sockets[0].getsockname()[1]) if server else 0


def _hop_app(
    spec: HopSpec,
    upstream: str,
    session: aiohttp.ClientSession,
    registry: Registry | None,
    secret: str,
    fronts: dict[int, str],
    counts: dict[str, int],
    count_here: bool = False,
) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        if spec.latency:
            await asyncio.sleep(spec.latency)
        # every header line as received, repeats included (as haproxy forwards them): a hop
        # that kept one of two would decide for the server what the guest sent
        drop = _HOP_BY_HOP | _STRIP if spec.kind == "haproxy" else _HOP_BY_HOP
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
        if spec.kind == "haproxy":
            transport = request.transport
            peer = transport.get_extra_info("peername") if transport else None
            local = transport.get_extra_info("sockname") if transport else None
            front = fronts.get(int(local[1])) if local else None
            address = front or (str(peer[0]) if peer else "")
            counts[address] = counts.get(address, 0) + 1
            given = request.headers.getall("X-Forwarded-For", [])
            headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
            headers.append(("X-Forwarded-For", ", ".join([*given, address])))
        elif spec.kind == "agent":
            assert registry is not None
            forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
            address = forwarded.rsplit(",", 1)[-1].strip()
            if count_here:  # no haproxy hop of ours: a real one is in front
                counts[address] = counts.get(address, 0) + 1
            view = registry.by_ip(address)
            if view is None:
                return web.Response(status=404, text="404 Not Found")
            headers = [(k, v) for k, v in headers if k.lower() not in _STRIP]
            headers += [
                ("X-Instance-ID", view.uuid),
                ("X-Tenant-ID", view.instance.project_id),
                ("X-Instance-ID-Signature", sign_instance_id(secret, view.uuid)),
            ]
        body = await request.read()
        try:
            async with session.request(
                request.method,
                upstream + request.raw_path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                back = {h: response.headers[h] for h in _PASS_BACK if h in response.headers}
                return web.Response(status=response.status, body=payload, headers=back)
        except (TimeoutError, aiohttp.ClientError):
            return web.Response(status=503, text="503 Service Unavailable")  # as the agent does

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def start_chain(
    server: tuple[str, int],
    hops: list[HopSpec],
    *,
    registry: Registry | None = None,
    secret: str = "",
    host: str = "127.0.0.1",
    listen: tuple[str, int] | None = None,
    unix_socket: Path | None = None,
) -> Chain:
    """Start ``hops`` (guest-facing first) in front of ``server``. The guest-facing hop
    listens on ``listen`` when given (port 0: a free one), or on the unix socket
    ``unix_socket`` (where a real haproxy in front connects, as neutron's does to its agent;
    its address is then ``(path, 0)``); the others on free ports of ``host``."""
    if any(h.kind == "agent" for h in hops) and (registry is None or not secret):
        raise ValueError("an agent hop needs the registry and a non-empty shared secret")
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []
    addresses: list[tuple[str, int]] = []
    fronts: dict[int, str] = {}
    counts: dict[str, int] = {}
    upstream = f"http://{server[0]}:{server[1]}"
    count_at_agent = not any(h.kind == "haproxy" for h in hops)
    try:
        for index, spec in reversed(list(enumerate(hops))):  # start from the server side
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1024, local_addr=(host, 0)),
                timeout=aiohttp.ClientTimeout(total=60),
                auto_decompress=False,
            )
            sessions.append(session)
            app = _hop_app(spec, upstream, session, registry, secret, fronts, counts,
                           count_here=count_at_agent)  # fmt: skip
            runner = web.AppRunner(app, access_log=None)
            runners.append(runner)
            await runner.setup()
            if index == 0 and unix_socket is not None:
                unix = web.UnixSite(runner, str(unix_socket), backlog=4096)
                await unix.start()
                addresses.append((str(unix_socket), 0))
                continue
            bind = listen if index == 0 and listen is not None else (host, 0)
            site = web.TCPSite(runner, bind[0], bind[1], backlog=4096)
            await site.start()
            port = _bound_port(site)
            addresses.append((bind[0], port))
            upstream = f"http://{bind[0]}:{port}"
    except BaseException:  # nothing half-started stays behind (a taken port, say)
        for session in sessions:
            await session.close()
        for runner in runners:
            await runner.cleanup()
        raise
    runners.reverse()
    sessions.reverse()
    addresses.reverse()
    return Chain(runners, sessions, addresses, fronts, counts)
