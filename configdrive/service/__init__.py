"""The metadata service: the drive's tree over HTTP (EC2 IMDSv1/v2, OpenStack, NoCloud-net).

``app`` (the guest-facing handler), ``admin`` (the registration API), ``views`` (pre-rendered
per-instance trees from :mod:`configdrive.render`), ``security`` (tokens, signatures, rate
limits), ``store`` (SQLite/PostgreSQL), ``registry`` (instances in memory, kept in step with the
store), ``server`` (listeners, poller, shutdown), ``supervisor`` (N worker processes on shared
SO_REUSEPORT listeners), ``proxychain`` (nova-like forwarding hops for the benchmark),
``haproxy`` (the benchmark's real first hop: Debian's haproxy, neutron's metadata-proxy
template), ``config`` (settings file).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configdrive.service.config import ServiceConfig, load_config
    from configdrive.service.server import Running, build_service, serve, start
    from configdrive.service.store import PostgresStore, SQLiteStore, Store, open_store
    from configdrive.service.supervisor import Supervisor, WorkerError

__all__ = [
    "PostgresStore",
    "Running",
    "SQLiteStore",
    "ServiceConfig",
    "Store",
    "Supervisor",
    "WorkerError",
    "build_service",
    "load_config",
    "open_store",
    "serve",
    "start",
]

# Imported on first use (PEP 562), not with the package: the server needs aiohttp (the
# `service` extra), while the drive verbs, the admin client and the settings need only the
# base install, and every ``configdrive.service.X`` import runs this file first.
_HOMES = {
    "ServiceConfig": "config",
    "load_config": "config",
    "Running": "server",
    "build_service": "server",
    "serve": "server",
    "start": "server",
    "PostgresStore": "store",
    "SQLiteStore": "store",
    "Store": "store",
    "open_store": "store",
    "Supervisor": "supervisor",
    "WorkerError": "supervisor",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
