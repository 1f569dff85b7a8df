"""Who may hold a connection to the metadata listener: caps per address and per process.

- **connection caps** — at most ``max_connections_per_peer`` connections from one address
  (configured proxies are exempt: they carry many guests) and ``max_connections`` in all.
  ``max_connections`` defaults to the process's open-file limit less a reserve, so the
  process never runs out of descriptors: the kernel would then queue every new connection,
  a registered guest's included, behind whoever holds the descriptors. When the cap is
  reached, a connection from a registered instance (or a proxy) takes the place of the oldest
  connection from an address no instance owns; anyone else gets ``503`` and is closed. Every
  refusal is logged (at most once per address and reason every ``LOG_EVERY`` seconds, with a
  count) and counted in :attr:`ConnectionGuard.refused`.

The timeouts and the strict parser are the HTTP layer's (:mod:`configdrive.service.http`).
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["FD_RESERVE", "ConnectionGuard", "default_max_connections", "peer_in"]

log = logging.getLogger("configdrive.service")

FD_RESERVE = 64  # descriptors kept for the store, logs, listeners and the admin API
MIN_CONNECTIONS = 16
LOG_EVERY = 10.0  # seconds between log lines about one address and reason


class Evictable(Protocol):
    """A connection the guard can close to make room."""

    def evict(self) -> None: ...


def default_max_connections() -> int:
    """The open-file soft limit less :data:`FD_RESERVE` (at least :data:`MIN_CONNECTIONS`)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_CONNECTIONS, soft - FD_RESERVE)


class ConnectionGuard:
    """Counts connections per address and in all, and says who may open another.

    ``known(address)`` says whether an address belongs to a registered instance or a trusted
    proxy; ``exempt(address)`` whether the per-address cap is waived for it (proxies)."""

    def __init__(
        self,
        *,
        max_connections: int,
        per_peer: int,
        known: Callable[[str], bool],
        exempt: Callable[[str], bool],
    ) -> None:
        self.max_connections = max_connections
        self.per_peer = per_peer
        self._known = known
        self._exempt = exempt
        self._per_peer: dict[str, int] = {}
        self._strangers: dict[Evictable, None] = {}  # oldest first
        self.open = 0
        self.refused: dict[str, int] = {"per_peer": 0, "total": 0}
        self.evicted = 0
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, host: str, reason: str, text: str) -> None:
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

    def admit(self, handler: Evictable, host: str) -> bool:
        """Count ``handler``'s connection in, or say why not (logged and counted)."""
        count = self._per_peer.get(host, 0)
        if count >= self.per_peer and not self._exempt(host):
            self.refused["per_peer"] += 1
            self.note(host, "per_peer", f"refused a connection: {self.per_peer} open already")
            return False
        known = self._known(host)
        if self.open >= self.max_connections:
            victim = next(iter(self._strangers), None) if known else None
            if victim is None:
                self.refused["total"] += 1
                self.note(
                    host,
                    "total",
                    f"refused a connection: at max_connections ({self.max_connections})",
                )
                return False
            self.evicted += 1
            self.note(host, "evict", "closed a stranger's connection to make room for one")
            del self._strangers[victim]  # not picked twice while it closes
            victim.evict()
        self.open += 1
        self._per_peer[host] = count + 1
        if not known:
            self._strangers[handler] = None
        return True

    def release(self, handler: Evictable, host: str) -> None:
        self.open -= 1
        left = self._per_peer.get(host, 1) - 1
        if left > 0:
            self._per_peer[host] = left
        else:
            self._per_peer.pop(host, None)
        self._strangers.pop(handler, None)


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
