"""Running the service: listeners, the store poller, the access log, graceful shutdown.

:func:`serve` starts the guest-facing listeners and (when a token is set) the admin listener,
loads every instance from the store, then polls the store's version counter every
``poll_interval`` seconds so changes made through any server show up here within that bound.
SIGTERM/SIGINT stop accepting connections, let in-flight requests finish (up to
``shutdown_timeout``), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from configdrive.service.admin import make_admin_app
from configdrive.service.app import JSONAccessLogger, MetadataService, make_server
from configdrive.service.config import ServiceConfig, listen_text, parse_listen
from configdrive.service.guard import ConnectionGuard
from configdrive.service.http import HTTPServer
from configdrive.service.registry import Registry
from configdrive.service.security import RateLimiter, TokenSigner
from configdrive.service.store import Store, open_store

__all__ = ["Running", "build_service", "prepare_store", "run", "serve", "start"]

log = logging.getLogger("configdrive.service")
TOKEN_KEY_SETTING = "imdsv2_token_key"


def _token_key(config: ServiceConfig, store: Store) -> bytes:
    """The IMDSv2 signing key: from ``token_key``, else the one kept in the store (made by the
    first server to ask, then shared by every server on that store)."""
    if config.token_key:
        return hashlib.sha256(config.token_key.encode()).digest()
    return bytes.fromhex(store.setting(TOKEN_KEY_SETTING, lambda: secrets.token_hex(32)))


def prepare_store(config: ServiceConfig) -> None:
    """Open the store once (creating its schema and the shared IMDSv2 key) and close it: what
    a supervisor does before it starts workers that would otherwise race to create them."""
    store = open_store(config.store)
    try:
        _token_key(config, store)
    finally:
        store.close()


def build_service(config: ServiceConfig, store: Store | None = None) -> MetadataService:
    """Open the store, load every instance, and set up tokens and rate limits."""
    store = store if store is not None else open_store(config.store)
    registry = Registry(store)
    registry.refresh()
    return MetadataService(
        config=config,
        registry=registry,
        signer=TokenSigner(_token_key(config, store)),
        limiter=RateLimiter(rate=config.rate, burst=config.burst),
    )


def _access_logger(config: ServiceConfig) -> logging.Logger:
    logger = logging.getLogger("configdrive.service.access")
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if config.access_log == "off":
        logger.setLevel(logging.WARNING)
        return logger
    sink: logging.Handler
    if config.access_log == "-":
        sink = logging.StreamHandler(sys.stderr)
    else:
        sink = logging.FileHandler(config.access_log)
    sink.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(sink)
    logger.setLevel(logging.INFO)
    return logger


@dataclass
class Running:
    """A started server: its bound addresses, and how to stop it."""

    service: MetadataService
    server: HTTPServer
    runners: list[web.BaseRunner]  # the admin API's
    addresses: list[tuple[str, int]]
    admin_address: tuple[str, int] | None
    poller: asyncio.Task[None]

    @property
    def guard(self) -> ConnectionGuard:
        return self.server.guard

    def describe(self) -> dict[str, Any]:
        """What a ready line reports: listeners (``HOST:PORT``, in configured order), the admin
        API's address, and this process."""
        return {
            "listen": [listen_text(h, p) for h, p in self.addresses],
            "admin": listen_text(*self.admin_address) if self.admin_address else None,
            "pid": os.getpid(),
        }

    async def stop(self) -> None:
        self.poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.poller
        await asyncio.gather(
            self.server.shutdown(self.service.config.shutdown_timeout),
            *(runner.cleanup() for runner in self.runners),
        )
        await asyncio.to_thread(self.service.registry.store.close)


async def _poll(service: MetadataService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            applied = await asyncio.to_thread(service.registry.refresh)
            if applied:
                log.info(
                    "applied %d change(s), generation %d", applied, service.registry.generation
                )
        except Exception as exc:  # keep serving what we have; report and retry
            log.error("store poll failed: %s", exc)
        service.limiter.sweep()


def _bound(sites: list[web.BaseSite]) -> list[tuple[str, int]]:
    """The addresses ``sites`` listen on, in their order (``runner.sites`` is a set)."""
    out = []
    for site in sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or ():
            name = sock.getsockname()
            out.append((str(name[0]), int(name[1])))
    return out


async def start(
    config: ServiceConfig, store: Store | None = None, *, reuse_port: bool = False
) -> Running:
    """Start listening (port 0 picks a free port; see ``Running.addresses``).

    ``reuse_port`` sets SO_REUSEPORT on the metadata listeners, so that several processes
    bound to the same port share its connections (see :mod:`configdrive.service.supervisor`).
    """
    service = await asyncio.to_thread(build_service, config, store)
    access = _access_logger(config)
    server = make_server(service, access)
    addresses: list[tuple[str, int]] = []
    try:
        for text in config.listen:
            host, port = parse_listen(text)
            addresses += await server.listen(
                host, port, backlog=config.backlog, reuse_port=reuse_port
            )
    except BaseException:
        await server.shutdown(0)
        raise
    runners: list[web.BaseRunner] = []
    admin_address = None
    if config.admin_listen and config.admin_token:
        admin = web.AppRunner(
            make_admin_app(service.registry, config.admin_token),
            access_log_class=JSONAccessLogger,
            access_log=access,
            shutdown_timeout=config.shutdown_timeout,
        )
        await admin.setup()
        host, port = parse_listen(config.admin_listen, "admin_listen")
        admin_site = web.TCPSite(admin, host, port)
        await admin_site.start()
        runners.append(admin)
        admin_address = _bound([admin_site])[0]
    elif config.admin_listen:
        log.warning("admin API off: no admin_token configured")
    poller = asyncio.create_task(_poll(service, config.poll_interval))
    return Running(service, server, runners, addresses, admin_address, poller)


async def serve(
    config: ServiceConfig,
    *,
    ready: Callable[[Running], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start(config, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.warning(
        "serving %d instance(s) on %s%s",
        len(running.service.registry),
        ", ".join(f"{h}:{p}" for h, p in running.addresses),
        f"; admin API on {running.admin_address[0]}:{running.admin_address[1]}"
        if running.admin_address
        else "",
    )
    if ready is not None:
        ready(running)
    try:
        await stop.wait()
    finally:
        log.warning("shutting down: finishing in-flight requests")
        await running.stop()


def run(
    config: ServiceConfig,
    *,
    ready: Callable[[Running], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Blocking entry point (uvloop when installed)."""
    main = serve(config, ready=ready, reuse_port=reuse_port)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
