"""Helpers for tests and benchmarks: a server on a background thread, simulated guests.

- :class:`ServerThread` runs :func:`configdrive.service.server.start` on its own event loop, so
  blocking clients (cloud-init's datasources, ``http.client``) can talk to it over loopback.
- :func:`guest_spec` makes an instance spec whose fixed IP is a loopback address: all of
  127.0.0.0/8 reaches the host on Linux, so a client bound to 127.x.y.z *is* that guest.
- :func:`connect` opens a client connection from a given source address that can never be a
  TCP self-connection (see its docstring); :func:`http_request` sends one request over it.
- :func:`serve_process` runs ``configdrive serve --config FILE`` as its own process, as an
  operator would, until the block ends.
- :func:`crawl_many` is the boot-storm load: N guests, each crawling its whole tree at once
  from its own source address, counting every non-200 as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from configdrive.service.config import ServiceConfig
from configdrive.service.server import Running, start
from configdrive.service.store import Store

__all__ = [
    "CrawlResult",
    "GuestConnection",
    "ServeProcess",
    "ServerThread",
    "SelfConnectError",
    "check_not_self",
    "connect",
    "crawl_many",
    "guest_ip",
    "guest_spec",
    "http_request",
    "refusing_port",
    "serve_process",
    "stop_process",
]

T = TypeVar("T")


def guest_ip(index: int) -> str:
    """The ``index``-th simulated guest address: 127.1.0.1, 127.1.0.2, … (skips .0/.255)."""
    hi, lo = divmod(index, 254)
    return f"127.{1 + hi // 256}.{hi % 256}.{lo + 1}"


def guest_spec(index: int, **extra: Any) -> dict[str, Any]:
    """A small but complete instance spec whose fixed IP is :func:`guest_ip` (``index``)."""
    ip = guest_ip(index)
    spec: dict[str, Any] = {
        "name": f"guest-{index}",
        "uuid": f"00000000-0000-4000-8000-{index:012x}",
        "project_id": f"project{index % 7}",
        "availability_zone": "nova",
        "keys": [
            {
                "name": f"key{index}",
                "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0Q2Vw4cDkWp7yNL"
                f"yV0Xj1QeL1r4y2aGZyX1x1bW9v guest{index}@example",
            }
        ],
        "user_data": f"#cloud-config\nhostname: guest-{index}\n",
        "meta": {"role": "load", "index": str(index)},
        "networks": [
            {
                "mac": f"fa:16:3e:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:"
                f"{index & 0xFF:02x}",
                "subnets": [{"cidr": "127.0.0.0/8", "ips": [ip], "gateway": "127.0.0.1"}],
            }
        ],
    }
    spec.update(extra)
    return spec


class SelfConnectError(ConnectionRefusedError):
    """A client socket got connected to itself: nothing listened on the port it dialled."""


# Linux: bind() takes the address only and the port is chosen at connect() time, for the
# whole 4-tuple (socket.IP_BIND_ADDRESS_NO_PORT from Python 3.12 on).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def check_not_self(sock: socket.socket) -> None:
    """Raise :class:`SelfConnectError` if ``sock`` is connected to itself.

    A client that binds ``(source, 0)`` and dials ``source:PORT`` while nothing listens there
    can be handed PORT itself as its source port (the kernel just freed it when the listener
    closed): TCP's simultaneous open then connects the socket to itself, the request comes
    back as the "response", and ``http.client`` raises ``BadStatusLine`` instead of the
    connection refusal the caller expects. What really happened is a refusal, so say so."""
    local, peer = sock.getsockname(), sock.getpeername()
    if local[:2] == peer[:2]:
        raise SelfConnectError(
            errno.ECONNREFUSED,
            f"connection to {peer[0]}:{peer[1]} refused (nothing listens there: the socket "
            "connected to itself)",
        )


def connect(
    host: str,
    port: int,
    *,
    source: str | None = None,
    source_port: int = 0,
    timeout: float | None = 10.0,
) -> socket.socket:
    """A TCP connection to ``host:port`` from ``source`` (a loopback address standing for a
    guest; ``None``: the kernel's choice), never connected to itself.

    The source port is picked at connect() time for the full 4-tuple (IP_BIND_ADDRESS_NO_PORT),
    not by bind(), which readily hands out a port a listener closed a moment ago, and a
    self-connection that still happens raises :class:`SelfConnectError` (a
    ``ConnectionRefusedError``). ``source_port`` fixes the source port (tests of this guard)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source is not None or source_port:
            if not source_port:
                with contextlib.suppress(OSError):  # not Linux: bind picks, the check stays
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"), source_port))
        sock.connect((host, port))
        check_not_self(sock)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``host`` that refuses every connection while the block runs: bound, never
    listening. Bound, it is handed to no other socket (no server can take it, no client gets
    it as its source port, so none can self-connect there), unlike a port that was free a
    moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])


class GuestConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` from a guest's source address, through :func:`connect`."""

    def __init__(
        self, host: str, port: int, *, source: str | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.source = source

    def connect(self) -> None:
        self.sock = connect(self.host, self.port, source=self.source, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request from ``source`` (a loopback address standing for a guest). A port nothing
    listens on raises ``ConnectionRefusedError``, whatever the kernel did (see :func:`connect`)."""
    conn = GuestConnection(host, port, source=source, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ServerThread:
    """A running server on a daemon thread's event loop; ``stop()`` shuts it down gracefully."""

    def __init__(self, config: ServiceConfig, store: Store | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.running: Running = self.call(start(config, store))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def port(self) -> int:
        return self.running.addresses[0][1]

    @property
    def admin_port(self) -> int:
        assert self.running.admin_address is not None
        return self.running.admin_address[1]

    def admin(
        self, method: str, path: str, data: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        token = token if token is not None else (self.running.service.config.admin_token or "")
        body = None if data is None else json.dumps(data).encode()
        status, _, raw = http_request(
            self.admin_port,
            path,
            method=method,
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        return status, (json.loads(raw) if raw else None)

    def stop(self) -> None:
        try:
            self.call(self.running.stop())
            self.call(_cancel_the_rest())  # as asyncio.run does before it closes a loop
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@dataclass
class ServeProcess:
    """A running ``configdrive serve`` process and the state its ready line announced."""

    proc: subprocess.Popen[str]
    state: dict[str, Any]

    @property
    def port(self) -> int:
        """The first metadata listener's port."""
        return int(str(self.state["listen"][0]).rsplit(":", 1)[1])


@contextlib.contextmanager
def serve_process(
    config: Path,
    settings: Mapping[str, Any],
    *,
    admin_token: str = "",
    log: Path | None = None,
    nofile: int | None = None,
) -> Iterator[ServeProcess]:
    """Write ``settings`` to ``config`` (JSON), start ``configdrive serve --config`` with the
    admin token in its environment, wait for its ready line; stop it when the block ends.
    ``log`` takes its stderr (a pipe otherwise); ``nofile`` lowers its open-file limit."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    config.write_text(json.dumps(dict(settings)))
    with contextlib.ExitStack() as stack:
        stderr: Any = subprocess.PIPE
        if log is not None:
            stderr = stack.enter_context(log.open("w"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "configdrive", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "CONFIGDRIVE_ADMIN_TOKEN": admin_token},
            preexec_fn=limit if nofile is not None else None,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                proc.wait(30)
                if proc.stderr is not None:
                    text = proc.stderr.read()
                else:
                    text = log.read_text() if log is not None else ""
                raise RuntimeError(f"configdrive serve failed: {text[-2000:]}")
            yield ServeProcess(proc, json.loads(line))
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, up to 30 s for a graceful exit, then SIGKILL; close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# --------------------------------------------------------------------------------------------
# the boot storm


@dataclass
class CrawlResult:
    guests: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


CRAWL_PATHS: tuple[str, ...] = (
    "/2009-04-04/meta-data/instance-id",
    "/2009-04-04/meta-data/",
    "/2009-04-04/meta-data/ami-id",
    "/2009-04-04/meta-data/ami-launch-index",
    "/2009-04-04/meta-data/ami-manifest-path",
    "/2009-04-04/meta-data/block-device-mapping/",
    "/2009-04-04/meta-data/block-device-mapping/ami",
    "/2009-04-04/meta-data/block-device-mapping/root",
    "/2009-04-04/meta-data/hostname",
    "/2009-04-04/meta-data/instance-action",
    "/2009-04-04/meta-data/instance-type",
    "/2009-04-04/meta-data/local-hostname",
    "/2009-04-04/meta-data/local-ipv4",
    "/2009-04-04/meta-data/placement/",
    "/2009-04-04/meta-data/placement/availability-zone",
    "/2009-04-04/meta-data/public-hostname",
    "/2009-04-04/meta-data/public-ipv4",
    "/2009-04-04/meta-data/public-keys/",
    "/2009-04-04/meta-data/public-keys/0/openssh-key",
    "/2009-04-04/meta-data/reservation-id",
    "/2009-04-04/meta-data/security-groups",
    "/2009-04-04/user-data",
    "/openstack",
    "/openstack/latest/meta_data.json",
    "/openstack/latest/user_data",
    "/openstack/latest/vendor_data.json",
    "/openstack/latest/vendor_data2.json",
    "/openstack/latest/network_data.json",
)
"""What cloud-init's Ec2 and OpenStack datasources fetch for one guest (its full tree)."""


async def _crawl_one(
    host: str, port: int, source: str, paths: Sequence[str], result: CrawlResult
) -> None:
    # one keep-alive connection per guest, bound to the guest's own address
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        sock = writer.get_extra_info("socket")
        check_not_self(sock)
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            result.requests += 1
            if status != 200:
                result.errors.append(f"{source} {path}: {status}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.errors.append(f"{source}: {type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def crawl_many(
    port: int,
    guests: int,
    *,
    host: str = "127.0.0.1",
    paths: Sequence[str] = CRAWL_PATHS,
    first: int = 0,
) -> CrawlResult:
    """Guests ``first … first+guests-1`` each crawl ``paths`` at once, from their own address."""
    result = CrawlResult(guests)
    began = time.perf_counter()
    await asyncio.gather(
        *(_crawl_one(host, port, guest_ip(first + i), paths, result) for i in range(guests))
    )
    result.seconds = time.perf_counter() - began
    return result
