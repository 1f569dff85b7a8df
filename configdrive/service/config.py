"""Settings of ``configdrive serve``: a dataclass, loadable from a YAML/JSON file.

Example (every key optional)::

    listen: ["127.0.0.1:8775"]          # metadata listeners (HOST:PORT; [v6]:PORT)
    admin_listen: "127.0.0.1:8776"      # admin API; off unless admin_token is set
    admin_token: "…"                    # Authorization: Bearer <admin_token>
    store: "sqlite:///var/lib/configdrive/metadata.db"   # or postgresql://…
    poll_interval: 1.0                  # seconds: changes reach every server within this
    mode: direct                        # direct (peer address) | proxy (signed headers)
    proxy_addresses: ["127.0.0.1/32"]   # proxy mode: peers allowed to send identity headers
    shared_secret: "…"                  # proxy mode: X-Instance-ID-Signature key (required)
    token_key: null                     # IMDSv2 HMAC key; null = shared via the store
    nocloud_prefix: nocloud             # NoCloud-net seed at /<prefix>/[<uuid>/]meta-data
    token_trees: [ec2, openstack, nocloud]  # trees where an `imds: required` instance needs
                                        # an IMDSv2 token (drop one only for clients that
                                        # cannot send it: that tree loses SSRF protection)
    rate: 50                            # per-instance requests/s after the burst; 0 = off
    burst: 300                          # per-instance burst allowance
    access_log: "-"                     # "-" stderr, "off", or a file (JSON lines)
    shutdown_timeout: 10                # seconds to finish in-flight requests
    head_timeout: 10                    # seconds for a request's head, then body, to arrive
    idle_timeout: 30                    # seconds a connection may sit with no request
    max_connections: 0                  # per server process; 0 = open-file limit less 64
    max_connections_per_peer: 32        # per client address (proxy_addresses are exempt)
    workers: 1                          # server processes on shared listeners; auto = one per core
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from configdrive.errors import SpecError
from configdrive.spec import parse_spec_text, read_input

__all__ = [
    "HOP_KINDS",
    "HopSpec",
    "Mode",
    "ServiceConfig",
    "auto_workers",
    "config_from_mapping",
    "listen_text",
    "load_config",
    "parse_listen",
]

Mode = str  # "direct" | "proxy"
MODES = ("direct", "proxy")
MAX_WORKERS = 64
TREES = ("ec2", "openstack", "nocloud")  # the trees that serve an instance's data
# The proxy chain's hop kinds (configdrive.service.proxychain runs them; the benchmark and the
# CLI describe chains with HopSpec without needing aiohttp, the service extra).
HOP_KINDS = ("haproxy", "forward", "agent")


@dataclass(frozen=True)
class HopSpec:
    """One hop of the nova-like proxy chain: its kind and the latency it adds per request."""

    kind: str
    latency: float = 0.0  # seconds added per request

    def __post_init__(self) -> None:
        if self.kind not in HOP_KINDS:
            raise ValueError(f"hop kind must be one of {', '.join(HOP_KINDS)}")


def listen_text(host: str, port: int) -> str:
    """(host, port) -> ``HOST:PORT``, IPv6 hosts in brackets (what :func:`parse_listen` reads)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(text: str, field_name: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SpecError(field_name, f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``configdrive serve`` needs; see the module docstring for the file form."""

    listen: tuple[str, ...] = ("127.0.0.1:8775",)
    admin_listen: str | None = "127.0.0.1:8776"
    admin_token: str | None = None
    store: str = "sqlite:///var/lib/configdrive/metadata.db"
    poll_interval: float = 1.0
    mode: Mode = "direct"
    proxy_addresses: tuple[str, ...] = ()
    shared_secret: str = ""
    token_key: str | None = None
    nocloud_prefix: str = "nocloud"
    token_trees: tuple[str, ...] = TREES
    rate: float = 50.0
    burst: int = 300
    access_log: str = "-"
    shutdown_timeout: float = 10.0
    backlog: int = 4096
    head_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 0
    max_connections_per_peer: int = 32
    workers: int = 1
    proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SpecError("mode", f"must be one of {', '.join(MODES)}")
        for text in self.listen:
            parse_listen(text)
        if self.admin_listen:
            parse_listen(self.admin_listen, "admin_listen")
        if self.poll_interval <= 0:
            raise SpecError("poll_interval", "must be a positive number of seconds")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise SpecError("workers", f"must be between 1 and {MAX_WORKERS}")
        for name in ("head_timeout", "idle_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise SpecError(name, "must be between 0 and 3600 seconds (0 excluded)")
        if self.max_connections < 0:
            raise SpecError("max_connections", "must be 0 (the open-file limit) or more")
        if self.max_connections_per_peer < 1:
            raise SpecError("max_connections_per_peer", "must be at least 1")
        if self.burst < 1:
            raise SpecError("burst", "must be at least 1")
        if "/" in self.nocloud_prefix.strip("/") or not self.nocloud_prefix.strip("/"):
            raise SpecError("nocloud_prefix", "must be one non-empty path segment")
        for tree in self.token_trees:
            if tree not in TREES:
                raise SpecError("token_trees", f"{tree!r} is not one of {', '.join(TREES)}")
        nets = []
        for text in self.proxy_addresses:
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise SpecError("proxy_addresses", f"{text!r} is not an address or CIDR") from None
        object.__setattr__(self, "proxy_networks", tuple(nets))
        if self.mode == "proxy":
            if not self.shared_secret:
                raise SpecError(
                    "shared_secret",
                    "proxy mode needs a non-empty shared secret (nova's empty default lets "
                    "anyone who reaches the server sign for any instance)",
                )
            if not nets:
                raise SpecError("proxy_addresses", "proxy mode needs the proxies' addresses")

    def with_(self, **changes: Any) -> ServiceConfig:
        return replace(self, **changes)

    def to_mapping(self) -> dict[str, Any]:
        """The settings as a config file would hold them (``config_from_mapping`` reads it)."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in fields(self)
            if f.init
        }


_TUPLES = {"listen", "proxy_addresses", "token_trees"}
_FLOATS = {"poll_interval", "rate", "shutdown_timeout", "head_timeout", "idle_timeout"}
_INTS = {"burst", "backlog", "workers", "max_connections", "max_connections_per_peer"}


def auto_workers() -> int:
    """``workers: auto``: one server process per core this process may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def config_from_mapping(data: dict[str, Any]) -> ServiceConfig:
    known = {f.name for f in fields(ServiceConfig) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(unknown[0], f"unknown setting (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TUPLES:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise SpecError(key, "must be a string or a list of strings")
            values[key] = tuple(items)
        elif key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(key, "must be a number")
            values[key] = float(value)
        elif key == "workers" and value == "auto":
            values[key] = auto_workers()
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                either = " or auto" if key == "workers" else ""
                raise SpecError(key, f"must be an integer{either}")
            values[key] = value
        else:
            if value is not None and not isinstance(value, str):
                raise SpecError(key, "must be a string")
            values[key] = value
    return ServiceConfig(**values)


def load_config(path: str | Path) -> ServiceConfig:
    """Read a YAML/JSON settings file; every problem is a SpecError naming the key."""
    return config_from_mapping(parse_spec_text(read_input(path, "config"), str(path)))
