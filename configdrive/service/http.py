"""The guest-facing HTTP/1.1 server: a strict request parser and an asyncio protocol.

Guests ask small questions (a GET with three or four headers) and the answers are in memory,
so the cost of a request is the cost of HTTP itself. A framework's request and response
objects cost about three times the work of parsing the head and writing pre-joined bytes
(measured: the benchmark in ``bench/service_http.py``), so the metadata listener speaks
HTTP/1.1 itself. The admin API, rare and JSON, stays on aiohttp.

Parsing is strict (RFC 9112), and every refusal closes the connection:

- the head must end in CRLF CRLF, and every line in CRLF: a bare LF or CR anywhere is a 400;
- the request line is ``METHOD SP target SP HTTP/1.x``. A missing version (HTTP/0.9) or
  malformed syntax is a 400, and any version other than 1.0 or 1.1 is a 505;
- targets: origin-form is served. Absolute-form with ``http://`` (§3.2.2) is always served
  as its origin-form, since identity never comes from the authority. Any other form
  (another scheme, authority-form, ``*``) is a 400;
- header names are tokens, with no space before the colon and no obs-fold; values carry no
  control characters. At most ``MAX_HEADERS`` headers and ``MAX_LINE`` bytes a line;
- HTTP/1.1 needs exactly one ``Host``. ``Content-Length`` is digits, at most
  ``MAX_BODY``, and given once. ``Transfer-Encoding`` is refused with a 411, since no guest
  sends a chunked body to a metadata service and a second framing is how requests get
  smuggled;
- ``head_timeout``: a request's head (and then its body) must arrive within that many seconds
  of its first byte. ``idle_timeout``: a connection with no request under way (a new one
  that has sent nothing, or a kept-alive one between requests) is closed after that long.
  Connections are admitted by a :class:`~configdrive.service.guard.ConnectionGuard`.

Keep-alive and pipelining follow HTTP/1.1 (HTTP/1.0 only keeps a connection open on
``Connection: keep-alive``). Answers go out in request order. While a handler awaits
(the password store) or the peer is not reading, the connection stops reading too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from configdrive.service.guard import ConnectionGuard

__all__ = [
    "MAX_BODY",
    "MAX_HEADERS",
    "MAX_LINE",
    "HTTPServer",
    "Request",
    "Response",
    "parse_head",
]

log = logging.getLogger("configdrive.service")

MAX_LINE = 4096
MAX_HEADERS = 64
MAX_HEAD = MAX_LINE * 4
MAX_BODY = 4096  # the password POST is at most 1020 bytes; nothing else has a body
SWEEP = 0.25  # seconds between checks of the connections' deadlines
SERVER = "configdrive"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHOD = re.compile(rb"[A-Z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[^\x21-\x7e]")
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class BadRequest(Exception):
    """A request this server will not serve: its status and the rule it broke."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Request:
    """One parsed request. ``headers`` maps lower-cased names to their first value;
    ``repeated`` holds every value, in order, of the names given more than once."""

    method: str
    path: str
    query: str
    version: tuple[int, int]
    headers: dict[str, str]
    repeated: dict[str, list[str]] | None = None
    peer: str = ""
    body: bytes = b""
    instance: str | None = None  # set by the handler: the access log's "instance"
    started: float = 0.0  # time.perf_counter() when its head was parsed

    def getall(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case), in order."""
        if self.repeated is not None and name in self.repeated:
            return self.repeated[name]
        value = self.headers.get(name)
        return [] if value is None else [value]

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case)."""
        return self.headers.get(name)


@dataclass(slots=True)
class Response:
    """An answer: status, body, content type and extra headers. ``close`` ends the
    connection after it."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


Handler = Callable[[Request], "Response | Awaitable[Response]"]


def _origin(target: bytes) -> tuple[str, str]:
    if _BAD_TARGET.search(target):
        raise BadRequest(400, "the request target has characters outside visible ASCII")
    if target.startswith(b"/"):
        path, _, query = target.decode("ascii").partition("?")
        return path, query
    if target[:7].lower() == b"http://":
        parts = urlsplit(target.decode("ascii"))
        return parts.path or "/", parts.query
    raise BadRequest(400, "the request target must be a path or an http:// URL")


_REQUEST_LINE = re.compile(rb"([A-Z]+) ([\x21-\x7e]+) HTTP/1\.([01])")
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")


def _request_line(line: bytes) -> tuple[str, str, str, tuple[int, int]]:
    found = _REQUEST_LINE.fullmatch(line)
    if found is None:
        _refuse_request_line(line)
    assert found is not None
    path, query = _origin(found[2])
    return found[1].decode("ascii"), path, query, (1, int(found[3]))


def _refuse_request_line(line: bytes) -> None:
    """Say what is wrong with a request line the fast pattern did not take."""
    parts = line.split(b" ")
    if len(parts) == 2 and _METHOD.fullmatch(parts[0]):
        raise BadRequest(400, "HTTP/0.9 requests are not accepted")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1]:
        raise BadRequest(400, "the request line must be METHOD SP target SP HTTP-version")
    if _VERSION.fullmatch(parts[2]) is None:
        raise BadRequest(400, "the request line must end in HTTP/1.0 or HTTP/1.1")
    if parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
    _origin(parts[1])  # raises for the target
    raise BadRequest(400, "malformed request line")  # pragma: no cover - the pattern took it


def parse_head(head: bytes) -> Request:
    """Parse a request head (without its final CRLF CRLF) or raise :class:`BadRequest`."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise BadRequest(400, "lines must end in CRLF (a bare LF or CR was sent)")
    if crlf > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    lines = head.split(b"\r\n")
    method, path, query, version = _request_line(lines[0])
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            raise BadRequest(431, f"a header line is longer than {MAX_LINE} bytes")
        found = _HEADER_LINE.fullmatch(line)
        if found is None:
            raise BadRequest(400, "a header line must be NAME: value (no space before ':')")
        value_bytes = found[2]
        if _BAD_VALUE.search(value_bytes):
            raise BadRequest(400, "a header value contains a control character")
        name = found[1].decode("ascii").lower()
        value = value_bytes.decode("latin-1")
        if name in headers:
            repeated = repeated if repeated is not None else {}
            repeated.setdefault(name, [headers[name]]).append(value)
        else:
            headers[name] = value
    request = Request(method, path, query, version, headers, repeated)
    if version == (1, 1) and (
        "host" not in headers or (repeated is not None and "host" in repeated)
    ):
        raise BadRequest(400, "an HTTP/1.1 request needs exactly one Host header")
    return request


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


@functools.cache
def _status_head(status: int, content_type: str) -> bytes:
    """``HTTP/1.1 <status>`` through ``Content-Length: `` (kept per status and type)."""
    reason = _REASONS.get(status, "Unknown")
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nContent-Type: {content_type}\r\n"
        "Content-Length: "
    ).encode("latin-1")


def _serialize(request: Request | None, response: Response, keep_alive: bool) -> bytes:
    parts = [_status_head(response.status, response.content_type), b"%d\r\n" % len(response.body)]
    for name, value in response.headers.items():
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif request is not None and request.version == (1, 0):
        parts.append(b"Connection: keep-alive\r\n")
    parts += (b"Date: ", _Date.now(), b"\r\n\r\n")
    if request is None or request.method != "HEAD":
        parts.append(response.body)
    return b"".join(parts)


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, answer, in order."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._guard = server.guard
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._buffer = b""
        self._pos = 0  # where the unread part of _buffer starts (pipelined requests)
        self._pending: Request | None = None  # head parsed, body still arriving
        self._need = 0
        self._busy = False  # a handler is awaiting
        self._paused = False  # the peer is not reading our answers
        self._closing = False
        self._reading_paused = False
        self._deadline = 0.0
        self._deadline_kind = ""

    # -- the connection's life -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        self._peer = host[7:] if host.startswith("::ffff:") else host
        writer: Any = transport
        if not self._guard.admit(self, self._peer):
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nServer: configdrive\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            writer.close()
            self._closing = True
            return
        self._transport = writer
        self._server.connections.add(self)
        self._expect("idle", self._server.idle_timeout)  # nothing sent yet: idle

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is not None:
            self._guard.release(self, self._peer)
            self._server.connections.discard(self)
        self._transport = None
        self._closing = True

    def close(self) -> None:
        """Close now (eviction, shutdown of an idle connection, a timeout)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    evict = close

    @property
    def idle(self) -> bool:
        return not self._busy and self._pos >= len(self._buffer) and self._pending is None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._loop.call_soon(self._process)

    # -- timeouts: a deadline per connection, swept by the server --------------------------

    def _expect(self, kind: str, seconds: float) -> None:
        """Close the connection ``seconds`` from now (``HTTPServer`` sweeps the deadlines
        every ``SWEEP`` seconds) unless the clock is moved again."""
        self._deadline_kind = kind
        self._deadline = self._loop.time() + seconds

    def expired(self, now: float) -> None:
        """Close the connection if its deadline has passed (the server's sweep)."""
        if self._closing or not self._deadline_kind or now < self._deadline:
            return
        if self._deadline_kind == "head":
            self._guard.note(self._peer, "head", "closed a connection: request too slow")
        self.close()

    # -- reading and answering -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._deadline_kind == "idle":  # the first byte of a new request starts its clock
            self._expect("head", self._server.head_timeout)
        if self._pos:
            self._buffer, self._pos = self._buffer[self._pos :], 0
        self._buffer = self._buffer + data if self._buffer else data
        if self._busy or self._paused:
            if len(self._buffer) > MAX_HEAD + MAX_BODY:
                self._pause_reading()  # a pipelining client that does not read its answers
            return
        self._process()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._reading_paused = False

    def _process(self) -> None:
        while not (self._closing or self._busy or self._paused):
            request = self._next()
            if request is None:
                self._resume_reading()  # wants more bytes
                return
            self._deadline_kind = ""  # complete: no clock runs while it is answered
            result = self._server.handler(request)
            if isinstance(result, Response):
                self._answer(request, result)
                if self._pos >= len(self._buffer):
                    self._resume_reading()
                    return  # the usual case: nothing more buffered
                continue
            self._busy = True
            self._pause_reading()
            task = asyncio.ensure_future(result)
            task.add_done_callback(functools.partial(self._done, request))
            return

    def _done(self, request: Request, task: asyncio.Future[Response]) -> None:
        self._busy = False
        if self._closing:
            return
        try:
            response = task.result()
        except Exception:  # noqa: BLE001 - a bug of ours: 500, and the connection goes
            log.exception("handler failed for %s %s", request.method, request.path)
            response = Response(500, b"500 Internal Server Error", close=True)
        self._answer(request, response)
        self._process()

    def _next(self) -> Request | None:
        """The next complete request in the buffer, or None (and a refusal sent if the
        buffer breaks a rule)."""
        buffer, pos = self._buffer, self._pos
        try:
            if self._pending is None:
                end = buffer.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._check_partial()
                    return None
                if end - pos > MAX_HEAD:
                    raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")
                request = parse_head(buffer[pos:end])
                self._pos = pos = end + 4
                request.peer = self._peer
                if self._server.access_log is not None:
                    request.started = time.perf_counter()
                self._need = self._body_length(request)
                self._pending = request
                if self._need > len(buffer) - pos and self._transport is not None:
                    if (request.get("expect") or "").lower() == "100-continue":
                        self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if len(buffer) - pos < self._need:
                return None
            request = self._pending
            self._pending = None
            if self._need:
                request.body = buffer[pos : pos + self._need]
                self._pos = pos + self._need
            if self._pos >= len(buffer):
                self._buffer, self._pos = b"", 0
            return request
        except BadRequest as exc:
            self._guard.note(self._peer, "malformed", f"refused a request ({exc.reason})")
            body = f"{exc.status} {_REASONS.get(exc.status, '')}: {exc.reason}".encode()
            self._answer(None, Response(exc.status, body, close=True))
            return None

    def _check_partial(self) -> None:
        buffer = self._buffer[self._pos :]
        if b"\n" in buffer and buffer.count(b"\n") != buffer.count(b"\r\n"):
            raise BadRequest(400, "lines must end in CRLF (a bare LF was sent)")
        if len(buffer) > MAX_HEAD:
            raise BadRequest(431, f"the request head is longer than {MAX_HEAD} bytes")

    @staticmethod
    def _body_length(request: Request) -> int:
        if request.getall("transfer-encoding"):
            if request.method in ("GET", "HEAD"):
                raise BadRequest(400, "GET and HEAD take no body")
            raise BadRequest(411, "send the body with Content-Length (no Transfer-Encoding)")
        lengths = request.getall("content-length")
        if not lengths:
            return 0
        if len(lengths) > 1:
            raise BadRequest(400, "Content-Length given more than once")
        text = lengths[0]
        if not (text.isascii() and text.isdigit()):
            raise BadRequest(400, "Content-Length must be digits")
        length = int(text)
        if length and request.method in ("GET", "HEAD"):
            raise BadRequest(400, "GET and HEAD take no body")
        if length > MAX_BODY:
            raise BadRequest(413, f"the body is longer than {MAX_BODY} bytes")
        return length

    def _answer(self, request: Request | None, response: Response) -> None:
        transport = self._transport
        if transport is None:
            return
        keep_alive = not (response.close or self._server.stopping) and request is not None
        if keep_alive and request is not None:
            connection = (request.get("connection") or "").lower()
            if request.version == (1, 0):
                keep_alive = "keep-alive" in connection
            else:
                keep_alive = "close" not in connection
        transport.write(_serialize(request, response, keep_alive))
        if self._server.access_log is not None:
            self._server.access_log(request, response, self._peer)
        if not keep_alive:
            self.close()
            return
        if self._pos < len(self._buffer):  # the next request has begun
            self._expect("head", self._server.head_timeout)
        else:
            self._expect("idle", self._server.idle_timeout)


AccessLog = Callable[[Request | None, Response, str], None]


class HTTPServer:
    """Listeners sharing one handler and one connection guard; graceful shutdown."""

    def __init__(
        self,
        handler: Handler,
        guard: ConnectionGuard,
        *,
        head_timeout: float,
        idle_timeout: float,
        access_log: AccessLog | None = None,
    ) -> None:
        self.handler = handler
        self.guard = guard
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.listeners: list[asyncio.Server] = []
        self.stopping = False
        self._sweeper: asyncio.Task[None] | None = None

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP)
            now = loop.time()
            for conn in list(self.connections):
                conn.expired(now)

    async def listen(
        self, host: str, port: int, *, backlog: int, reuse_port: bool = False
    ) -> list[tuple[str, int]]:
        """Start a listener; return the addresses it is bound to."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            lambda: Connection(self), host, port, backlog=backlog, reuse_port=reuse_port or None
        )
        self.listeners.append(listener)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in listener.sockets]

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to
        ``timeout`` seconds), then close the rest."""
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for listener in self.listeners:
            await listener.wait_closed()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
