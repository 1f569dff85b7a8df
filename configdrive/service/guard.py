"""The guest-facing connection layer: limits, timeouts and strict HTTP around aiohttp's server.

aiohttp parses requests (llhttp) and runs the handler; this module decides which connections
it gets to parse, for how long, and which requests reach the handler:

- **connection caps** — at most ``max_connections_per_peer`` connections from one address
  (configured proxies are exempt: they carry many guests) and ``max_connections`` in all.
  ``max_connections`` defaults to the process's open-file limit less a reserve, so the
  process never runs out of descriptors: the kernel would then queue every new connection,
  a registered guest's included, behind whoever holds the descriptors. When the cap is
  reached, a connection from a registered instance (or a proxy) takes the place of the oldest
  connection from an address no instance owns; anyone else gets ``503`` and is closed. Every
  refusal is logged (at most once per address and reason every ``LOG_EVERY`` seconds, with a
  count) and counted in :attr:`ConnectionGuard.refused`.
- **timeouts** — a request's head must arrive within ``head_timeout`` seconds of its first
  byte (or of the connection opening), and an idle keep-alive connection is closed after
  ``idle_timeout`` seconds (aiohttp's keep-alive timer, whose default is an hour).
- **strict HTTP** — llhttp already refuses malformed framing (a bare LF in the request line,
  bad header syntax: 400). What it lets through is refused here, before the handler: an
  HTTP/0.9 request is a 400 and a version other than 1.0 and 1.1 a 505, both answered with an
  ``HTTP/1.1`` status line and ``Connection: close``. Request targets: origin-form
  (``/path``) is served; absolute-form with the ``http`` scheme (RFC 9112 §3.2.2) is served
  as its origin-form, always, since identity never comes from the authority; every other form
  (another scheme, authority-form, ``*``) is a 400.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = [
    "FD_RESERVE",
    "REJECT_KEY",
    "ConnectionGuard",
    "GuardedServer",
    "default_max_connections",
    "peer_in",
]

log = logging.getLogger("configdrive.service")

FD_RESERVE = 64  # descriptors kept for the store, logs, listeners and the admin API
MIN_CONNECTIONS = 16
LOG_EVERY = 10.0  # seconds between log lines about one address and reason
REJECT_KEY = web.RequestKey("reject", tuple)  # (status, reason) for a request refused here
_BUSY_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: configdrive\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def default_max_connections() -> int:
    """The open-file soft limit less :data:`FD_RESERVE` (at least :data:`MIN_CONNECTIONS`)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_CONNECTIONS, soft - FD_RESERVE)


def _host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if not peer:
        return ""
    host = str(peer[0])
    return host[7:] if host.startswith("::ffff:") else host


class ConnectionGuard:
    """Counts connections per address and in all, and says who may open another.

    ``known(address)`` says whether an address belongs to a registered instance or a trusted
    proxy; ``exempt(address)`` whether the per-address cap is waived for it (proxies)."""

    def __init__(
        self,
        *,
        max_connections: int,
        per_peer: int,
        head_timeout: float,
        known: Callable[[str], bool],
        exempt: Callable[[str], bool],
    ) -> None:
        self.max_connections = max_connections
        self.per_peer = per_peer
        self.head_timeout = head_timeout
        self._known = known
        self._exempt = exempt
        self._per_peer: dict[str, int] = {}
        self._strangers: dict[GuardedHandler, None] = {}  # oldest first
        self.open = 0
        self.refused: dict[str, int] = {"per_peer": 0, "total": 0}
        self.evicted = 0
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def _note(self, host: str, reason: str, text: str) -> None:
        now = time.monotonic()
        key = (host, reason)
        last, skipped = self._logged.get(key, (0.0, 0))
        if now - last < LOG_EVERY:
            self._logged[key] = (last, skipped + 1)
            return
        if len(self._logged) > 4096:
            self._logged.clear()
        self._logged[key] = (now, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning("%s from %s%s", text, host or "an unknown peer", more)

    def admit(self, handler: GuardedHandler, host: str) -> bool:
        """Count ``handler``'s connection in, or say why not (logged and counted)."""
        count = self._per_peer.get(host, 0)
        if count >= self.per_peer and not self._exempt(host):
            self.refused["per_peer"] += 1
            self._note(host, "per_peer", f"refused a connection: {self.per_peer} open already")
            return False
        known = self._known(host)
        if self.open >= self.max_connections:
            victim = next(iter(self._strangers), None) if known else None
            if victim is None:
                self.refused["total"] += 1
                self._note(
                    host,
                    "total",
                    f"refused a connection: at max_connections ({self.max_connections})",
                )
                return False
            self.evicted += 1
            self._note(host, "evict", "closed a stranger's connection to make room for one")
            victim.evict()
        self.open += 1
        self._per_peer[host] = count + 1
        if not known:
            self._strangers[handler] = None
        return True

    def release(self, handler: GuardedHandler, host: str) -> None:
        self.open -= 1
        left = self._per_peer.get(host, 1) - 1
        if left > 0:
            self._per_peer[host] = left
        else:
            self._per_peer.pop(host, None)
        self._strangers.pop(handler, None)

    def describe(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "max_connections": self.max_connections,
            "max_connections_per_peer": self.per_peer,
            "refused": dict(self.refused),
            "evicted": self.evicted,
        }


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol, admitted by the guard and held to the head timeout."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._host = ""
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_request = False

    # -- admission ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._host = _host(transport)
        if not self._guard.admit(self, self._host):
            writer = cast(asyncio.WriteTransport, transport)  # uvloop's is not a subclass
            writer.write(_BUSY_503)
            writer.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self._guard.release(self, self._host)
            super().connection_lost(exc)

    def evict(self) -> None:
        self.force_close()

    # -- the head timeout --------------------------------------------------------------

    def _arm(self) -> None:
        if self._head_timer is None and self._guard.head_timeout > 0:
            self._head_timer = self._loop.call_later(self._guard.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self._in_request:
            self._guard._note(self._host, "head", "closed a connection: request head too slow")
            self.force_close()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self._in_request:
            self._arm()  # the first byte of a request head starts its clock
        super().data_received(data)

    def head_complete(self) -> None:
        self._disarm()
        self._in_request = True

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_request = False

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):  # a malformed request: one line, no trace
            name = type(exc).__name__
            self._guard._note(self._host, "malformed", f"refused a malformed request ({name})")
            return
        super().log_exception(*args, **kw)


def _target_problem(message: RawRequestMessage) -> tuple[int, str] | None:
    if message.version == (0, 9):
        return 400, "HTTP/0.9 requests are not accepted"
    if message.version not in (HttpVersion10, HttpVersion11):
        return 505, "only HTTP/1.0 and HTTP/1.1 are served"
    target = message.path
    if target.startswith("/"):
        return None
    if message.url.is_absolute() and message.url.scheme == "http":
        return None  # absolute-form: served as its origin-form (message.url's path)
    return 400, "the request target must be a path or an http:// URL"


class GuardedServer(web.Server):
    """aiohttp's low-level server with :class:`GuardedHandler` connections. Requests it
    refuses reach the handler marked with :data:`REJECT_KEY`, on an HTTP/1.1 message."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: Any,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        if isinstance(protocol, GuardedHandler):
            protocol.head_complete()
        problem = _target_problem(message)
        if problem is not None:
            message = message._replace(version=HttpVersion11, should_close=True)
        elif not message.path.startswith("/"):  # absolute-form: its origin-form, every time
            message = message._replace(path=message.url.raw_path_qs or "/")
        request = BaseRequest(message, payload, protocol, writer, task, self._loop)
        if problem is not None:
            request[REJECT_KEY] = problem
        return request


def peer_in(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Callable[[str], bool]:
    """A predicate: is an address inside one of ``networks``?"""

    def inside(host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in networks)

    return inside
