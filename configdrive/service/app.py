"""The metadata handler: EC2 (IMDSv1/v2), OpenStack and NoCloud-net over one tree.

It answers the requests :mod:`configdrive.service.http` parses (strictly: framing, versions,
targets, control characters, bodies). One catch-all handler does, in order:

1. **strict request checks** — no duplicated identity, token, ``Host`` or length headers
   (the checks a header-smuggling attack needs to get past);
2. **identity** — the socket peer address mapped to an instance's fixed IP (headers are never
   looked at), or, for peers in ``proxy_addresses`` in proxy mode, nova's signed
   ``X-Instance-ID`` / ``X-Tenant-ID`` / ``X-Instance-ID-Signature`` headers with nova's answers
   (400 missing or repeated, 403 bad signature, 404 unknown or tenant mismatch);
3. **rate limit** per instance (429);
4. **IMDSv2** — token minting on ``PUT /latest/api/token``; a token, when sent, is checked on
   every path (401 with an empty body for a bad one), and an ``imds: required`` instance
   needs one on every tree that serves its data: EC2, OpenStack (the password included) and
   NoCloud, unless ``token_trees`` says otherwise;
5. **dispatch** into the instance's pre-rendered :class:`~configdrive.service.views.InstanceView`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from configdrive.render import EC2_VERSIONS
from configdrive.service.config import ServiceConfig
from configdrive.service.guard import ConnectionGuard, default_max_connections, peer_in
from configdrive.service.http import HTTPServer, Request, Response
from configdrive.service.registry import Registry
from configdrive.service.security import (
    TOKEN_TTL_MAX,
    RateLimiter,
    TokenSigner,
    verify_instance_signature,
)
from configdrive.service.views import (
    CT_TEXT,
    EC2_LISTING,
    InstanceView,
    Resource,
    openstack_listing,
)

__all__ = [
    "MAX_PASSWORD",
    "JSONAccessLogger",
    "MetadataService",
    "access_logger",
    "make_guard",
    "make_server",
]

log = logging.getLogger("configdrive.service")

MAX_PASSWORD = 1020  # nova: 4 chunks of 255 characters
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
IDENTITY_HEADERS = ("X-Instance-ID", "X-Tenant-ID", "X-Instance-ID-Signature")
_TTL = TTL_HEADER.lower()
_TOKEN = TOKEN_HEADER.lower()
_IDENTITY = tuple(h.lower() for h in IDENTITY_HEADERS)
_ONCE = (_TOKEN, _TTL, "content-length", "host")
_SPELLING = {_TOKEN: TOKEN_HEADER, _TTL: TTL_HEADER}  # the rest spell as str.title()
SERVER = "configdrive"
_EC2_ROOTS = frozenset((*EC2_VERSIONS, "latest"))
ROUTES_KEPT = 1024  # answered paths kept per instance view (bounded: paths are the client's)
Route = tuple[str | None, Resource | None, str | None]
_ALLOW_GET = "GET, HEAD"
INSTANCE_KEY = web.RequestKey("instance", str)


def _plain(status: int, text: str = "", headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), CT_TEXT, headers or {})


def _not_found() -> Response:
    return _plain(404, "404 Not Found")


@dataclass
class MetadataService:
    """State shared by the handlers of one server process."""

    config: ServiceConfig
    registry: Registry
    signer: TokenSigner
    limiter: RateLimiter = field(default_factory=RateLimiter)
    _proxies: Callable[[str], bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._proxies = peer_in(self.config.proxy_networks)

    @property
    def _nocloud_head(self) -> str:
        return self.config.nocloud_prefix.strip("/")

    # -- step 1: strictness ----------------------------------------------------------------

    @staticmethod
    def _malformed(request: Request) -> str | None:
        if request.repeated is None:
            return None
        for name in _ONCE:
            if len(request.getall(name)) > 1:
                return f"{_SPELLING.get(name, name.title())} given more than once"
        return None

    # -- step 2: identity --------------------------------------------------------------------

    def _from_proxy(self, peer: str) -> bool:
        return self.config.mode == "proxy" and self._proxies(peer.removeprefix("::ffff:"))

    def _identify(self, request: Request, peer: str, proxied: bool) -> InstanceView | Response:
        if not proxied:
            view = self.registry.by_ip(peer)
            return view if view is not None else _not_found()
        values = [request.getall(h) for h in _IDENTITY]
        if any(len(v) != 1 for v in values):
            return _plain(
                400, "X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature are each required once"
            )
        instance_id, tenant_id, signature = (v[0] for v in values)
        if not verify_instance_signature(self.config.shared_secret, instance_id, signature):
            log.warning("bad X-Instance-ID-Signature from %s for %s", peer, instance_id)
            return _plain(403, "403 Forbidden")
        view = self.registry.by_uuid(instance_id)
        if view is None or view.instance.project_id != tenant_id:
            return _not_found()
        return view

    # -- the handler -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """Answer ``request``: a response, or an awaitable of one (the password store)."""
        problem = self._malformed(request)
        if problem is not None:
            return _plain(400, problem)
        path = request.path
        if path == "/healthz":
            return _plain(200, "ok")
        peer = request.peer
        proxied = self._from_proxy(peer)
        found = self._identify(request, peer, proxied)
        if isinstance(found, Response):
            return found
        view = found
        request.instance = view.uuid
        if not self.limiter.allow(view.uuid):
            return _plain(429, "429 Too Many Requests", {"Retry-After": "1"})
        forwarded = request.getall("x-forwarded-for")
        # a trusted proxy adds exactly one X-Forwarded-For entry; anything more came from the
        # guest side (an open reverse proxy there is what IMDSv2 defends against)
        xff_from_guest = bool(forwarded) if not proxied else _xff_count(forwarded) > 1

        if path == TOKEN_PATH:
            return self._token(request, view, xff_from_guest)
        if path.endswith(("/api/token", "/api/token/")):
            return _plain(403, "")
        route = view.routes.get(path)
        if route is None:
            route = self._route(view, path)
            if route[1] is not None and len(view.routes) < ROUTES_KEPT:
                view.routes[path] = route  # a view never changes: its answers can be kept
        tree, resource, password = route
        if tree is None:
            return _not_found()
        headers: dict[str, str] = {}
        token = request.get(_TOKEN)
        if token is not None:
            left = self.signer.remaining(token, view.uuid)
            if left is None:
                return _plain(401, "")
            if xff_from_guest:
                return _plain(403, "")
            headers[TTL_HEADER] = str(left)
        elif view.imds == "required" and tree in self.config.token_trees:
            return _plain(401, "")

        if password is not None:
            return self._password(request, view, password)
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "405 Method Not Allowed", {"Allow": _ALLOW_GET})
        if resource is None:
            return _not_found()
        return Response(200, resource.render(), resource.content_type, headers)

    def _token(self, request: Request, view: InstanceView, xff: bool) -> Response:
        if request.method != "PUT":
            return _plain(405, "405 Method Not Allowed", {"Allow": "OPTIONS, PUT"})
        if xff:
            return _plain(403, "")
        values = request.getall(_TTL)
        text = values[0].strip() if len(values) == 1 else ""
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= TOKEN_TTL_MAX):
            return _plain(
                400, "400 Bad Request: " + TTL_HEADER + " must be 1.." + str(TOKEN_TTL_MAX)
            )
        ttl = int(text)
        return _plain(200, self.signer.mint(view.uuid, ttl), {TTL_HEADER: str(ttl)})

    # -- routing: path -> (tree, resource, password version) -------------------------------

    def _route(self, view: InstanceView, path: str) -> Route:
        """Where ``path`` leads in ``view``: its tree (None: nothing, before any token rule),
        the resource to serve (None: 404), and for the password path its version."""
        parts = path.strip("/").split("/")
        if "" in parts and path != "/":  # empty segments ("a//b") name nothing
            return None, None, None
        head = parts[0]
        if head == "ec2":  # nova: /ec2/<version>/… is /<version>/…
            parts = parts[1:] or [""]
            head = parts[0]
        if head == "" or head in _EC2_ROOTS:
            if head == "":
                return "ec2", Resource(EC2_LISTING), None
            return "ec2", self._ec2(view, parts), None
        if head == "openstack":
            if len(parts) == 3 and parts[2] == "password":
                return "openstack", None, parts[1]
            return "openstack", self._openstack(view, parts[1:]), None
        if head == self._nocloud_head:
            return "nocloud", self._nocloud(view, parts[1:]), None
        return head, None, None

    @staticmethod
    def _ec2(view: InstanceView, parts: list[str]) -> Resource | None:
        section = view.section(f"ec2/{parts[0]}")
        return section.get("/".join(parts[1:])) if section is not None else None

    @staticmethod
    def _openstack(view: InstanceView, parts: list[str]) -> Resource | None:
        if not parts or parts == [""]:
            return Resource(openstack_listing())
        if parts[0] == "content" and len(parts) == 2:
            content = view.content(parts[1])
            return None if content is None else Resource(content)
        section = view.section(f"openstack/{parts[0]}")
        if section is None or len(parts) > 2:
            return None
        return section.get(parts[1] if len(parts) == 2 else "")

    @staticmethod
    def _nocloud(view: InstanceView, parts: list[str]) -> Resource | None:
        if parts and parts[0] == view.uuid:  # /<prefix>/<uuid>/<file>: the caller's own uuid
            parts = parts[1:]
        elif len(parts) > 1:
            return None
        parts = parts or [""]
        section = view.section("nocloud")
        return section.get(parts[0]) if section is not None and len(parts) == 1 else None

    async def _password(self, request: Request, view: InstanceView, version: str) -> Response:
        section = view.section(f"openstack/{version}")
        if section is None or b"password" not in section[""].render().split(b"\n"):
            return _not_found()
        store = self.registry.store
        if request.method in ("GET", "HEAD"):
            stored = await asyncio.to_thread(store.get_password, view.uuid)
            return Response(200, (stored or "").encode())
        if request.method != "POST":
            return _plain(400, "400 Bad Request")
        if len(request.body) > MAX_PASSWORD:
            return _plain(400, "400 Bad Request: Request is too large.")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return _plain(400, "400 Bad Request: password must be UTF-8")
        stored_now = await asyncio.to_thread(store.set_password, view.uuid, text)
        if not stored_now:
            return _plain(409, "409 Conflict")
        return _plain(200, "")


def _xff_count(values: list[str]) -> int:
    return sum(len([p for p in v.split(",") if p.strip()]) for v in values)


def _record(
    peer: str | None,
    instance: str | None,
    method: str,
    path: str,
    status: int,
    size: int,
    ms: float,
) -> str:
    return json.dumps(
        {
            "ts": round(time.time(), 3),
            "pid": os.getpid(),
            "peer": peer,
            "instance": instance,
            "method": method,
            "path": path[:512],
            "status": status,
            "bytes": size,
            "ms": round(ms, 3),
        }
    )


class JSONAccessLogger(AbstractAccessLogger):
    """The admin API's access log (aiohttp): one JSON object per request, the same fields as
    the metadata listener's (:func:`access_logger`)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time_: float) -> None:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.logger.info(
            _record(
                peer[0] if peer else None,
                request.get(INSTANCE_KEY),
                request.method,
                request.raw_path,
                response.status,
                response.body_length,
                time_ * 1000,
            )
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def access_logger(
    logger: logging.Logger,
) -> Callable[[Request | None, Response, str], None] | None:
    """The metadata listener's access log: one JSON object per answer (time, serving
    process, peer, instance, method, path, status, bytes); None when ``logger`` is off."""
    if not logger.isEnabledFor(logging.INFO):
        return None

    def log_one(request: Request | None, response: Response, peer: str) -> None:
        method = request.method if request is not None else "-"
        path = request.path if request is not None else "-"
        if request is not None and request.query:
            path = f"{path}?{request.query}"
        instance = request.instance if request is not None else None
        ms = (time.perf_counter() - request.started) * 1000 if request is not None else 0.0
        logger.info(_record(peer, instance, method, path, response.status, len(response.body), ms))

    return log_one


def make_guard(service: MetadataService) -> ConnectionGuard:
    """The connection caps of ``service``'s settings: registered instances' addresses and the
    trusted proxies are "known" (they win a place at the cap)."""
    config = service.config
    registry = service.registry
    proxies = service._from_proxy
    return ConnectionGuard(
        max_connections=config.max_connections or default_max_connections(),
        per_peer=config.max_connections_per_peer,
        known=lambda host: registry.by_ip(host) is not None or proxies(host),
        exempt=proxies,
    )


def make_server(service: MetadataService, access: logging.Logger | None = None) -> HTTPServer:
    """The guest-facing HTTP server (:mod:`configdrive.service.http`) answering with
    ``service.handle``, behind the connection guard."""
    return HTTPServer(
        service.handle,
        make_guard(service),
        head_timeout=service.config.head_timeout,
        idle_timeout=service.config.idle_timeout,
        access_log=access_logger(access) if access is not None else None,
    )
