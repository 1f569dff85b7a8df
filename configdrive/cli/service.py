"""`configdrive serve|register|proxy-chain`: the metadata service, its admin API, and the
nova-like forwarding chain put in front of it for the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from configdrive.cli._common import EXIT_FAIL, EXIT_OK, UsageError
from configdrive.errors import ConfigDriveError
from configdrive.service.config import ServiceConfig, config_from_mapping, load_config
from configdrive.spec import load_spec

if TYPE_CHECKING:
    from configdrive.service.config import HopSpec
    from configdrive.service.proxychain import Chain
    from configdrive.service.registry import Registry

__all__ = ["register"]

log = logging.getLogger("configdrive.service")

_OVERRIDES = (
    ("listen", "listen"),
    ("admin_listen", "admin_listen"),
    ("store", "store"),
    ("mode", "mode"),
    ("access_log", "access_log"),
)


def _config(args: argparse.Namespace) -> ServiceConfig:
    config = load_config(args.config) if args.config else ServiceConfig()
    changes: dict[str, Any] = {}
    for flag, key in _OVERRIDES:
        value = getattr(args, flag, None)
        if value:
            changes[key] = tuple(value) if key == "listen" else value
    if args.proxy_address:
        changes["proxy_addresses"] = tuple(args.proxy_address)
    if args.poll_interval is not None:
        changes["poll_interval"] = args.poll_interval
    if getattr(args, "workers", None) is not None:
        changes["workers"] = args.workers
    # secrets come from the file or the environment, never from argv (visible in ps)
    for env, key in (
        ("CONFIGDRIVE_ADMIN_TOKEN", "admin_token"),
        ("CONFIGDRIVE_SHARED_SECRET", "shared_secret"),
    ):
        if os.environ.get(env):
            changes[key] = os.environ[env]
    if not changes:
        return config
    merged = config.to_mapping()
    merged.update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
    return config_from_mapping(merged)


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or auto") from None


def _serve(args: argparse.Namespace) -> int:
    from configdrive.service.server import Running, run

    config = _config(args)
    if args.check:
        print(
            json.dumps(
                {
                    "ok": True,
                    "listen": list(config.listen),
                    "mode": config.mode,
                    "workers": config.workers,
                }
            )
        )
        return EXIT_OK
    if config.workers > 1:
        from configdrive.service.supervisor import Supervisor

        def all_ready(state: dict[str, Any]) -> None:
            print(json.dumps({"ready": True, **state}), flush=True)

        Supervisor(config).run(ready=all_ready)
        return EXIT_OK

    def ready(running: Running) -> None:
        state = running.describe()
        state["workers"] = [state.pop("pid")]
        print(json.dumps({"ready": True, **state}), flush=True)

    run(config, ready=ready)
    return EXIT_OK


def _register(args: argparse.Namespace) -> int:
    from configdrive.service.client import ADMIN_TOKEN_ENV, AdminClient
    from configdrive.spec import instance_from_mapping

    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        raise UsageError(
            "register needs the admin token", hint=f"set {ADMIN_TOKEN_ENV} in the environment"
        )
    data, base = load_spec(args.spec)
    # file references are resolved here, on the caller's side: the admin API takes none
    instance = instance_from_mapping(data, base=base)
    described = AdminClient(args.url, token).register(instance, args.imds, replace=args.replace)
    print(json.dumps(described))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# proxy-chain

_LATENCY = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>us|ms|s)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
MAX_HOP_LATENCY = 10.0  # seconds; a hop's upstream request times out after 60 s


def parse_hop(text: str) -> HopSpec:
    """``KIND[:LATENCY]`` (``haproxy:1ms``, ``agent:0.02s``, ``forward``) -> HopSpec."""
    from configdrive.service.config import HOP_KINDS, HopSpec

    kind, sep, latency = text.partition(":")
    if kind not in HOP_KINDS:
        raise UsageError(
            f"hop: {text!r} names no hop kind (known: {', '.join(HOP_KINDS)})",
            hint="give KIND[:LATENCY], e.g. haproxy:1ms",
        )
    seconds = 0.0
    if sep:
        match = _LATENCY.fullmatch(latency.strip())
        if match is None:
            raise UsageError(
                f"hop: {text!r}: latency must be a number with a unit (us, ms or s)",
                hint="e.g. agent:20ms or forward:0.03s",
            )
        seconds = float(match["value"]) * _UNITS[match["unit"]]
    if seconds > MAX_HOP_LATENCY:
        raise UsageError(f"hop: {text!r}: latency is over {MAX_HOP_LATENCY:g} s")
    return HopSpec(kind, seconds)


def parse_front(text: str) -> tuple[str, int]:
    """``GUEST_IP[=PORT]`` -> (compressed address, port); port 0 (default) picks a free one."""
    import ipaddress

    address, sep, port = text.partition("=")
    try:
        guest = ipaddress.ip_address(address.strip()).compressed
    except ValueError:
        raise UsageError(
            f"front: {text!r}: {address!r} is not an IP address", hint="give GUEST_IP[=PORT]"
        ) from None
    if sep and (not port.isdigit() or not 0 <= int(port) <= 65535):
        raise UsageError(f"front: {text!r}: {port!r} is not a port number")
    return guest, int(port) if sep else 0


def check_hops(hops: list[HopSpec]) -> None:
    """A chain the agent can identify guests through: haproxy first (it alone records the
    guest's address in X-Forwarded-For), one agent after it (it signs for the instance), any
    number of forward hops in between or after."""
    kinds = [h.kind for h in hops]
    if not kinds:
        raise UsageError("proxy-chain needs hops", hint="e.g. --hop haproxy:1ms --hop agent:20ms")
    if kinds[0] != "haproxy" or kinds.count("haproxy") != 1:
        raise UsageError(
            "hop: the first hop, and only the first, must be haproxy: it records the guest's "
            "address for the agent"
        )
    if kinds.count("agent") != 1:
        raise UsageError(
            "hop: the chain needs exactly one agent hop: it signs each request for its "
            "instance, as the server in proxy mode requires"
        )


@dataclass
class _ChainRun:
    """A started chain with its own guest-facing listener and its store poller."""

    chain: Chain
    registry: Registry
    listen: tuple[str, int]
    poller: asyncio.Task[None]
    fronts: list[tuple[str, tuple[str, int]]]  # (guest address, its own listener)

    async def stop(self) -> None:
        self.poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.poller
        await self.chain.stop()
        await asyncio.to_thread(self.registry.store.close)


async def _poll_registry(registry: Registry, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(registry.refresh)
        except Exception as exc:  # keep mapping what we know; report and retry
            log.error("store poll failed: %s", exc)


async def start_proxy_chain(
    upstream: tuple[str, int],
    hops: list[HopSpec],
    *,
    listen: tuple[str, int],
    store_url: str,
    secret: str,
    poll_interval: float = 1.0,
    fronts: list[tuple[str, int]] | None = None,
) -> _ChainRun:
    """Start ``hops`` in front of ``upstream`` with the guest-facing hop on ``listen``
    (port 0: a free port) and the agent reading ``store_url``, refreshed every
    ``poll_interval`` seconds. Each of ``fronts`` (guest address, port) opens one more port on
    the haproxy hop whose requests count as coming from that guest (QEMU's user networking
    NATs every guest to 127.0.0.1)."""

    from configdrive.service.proxychain import start_chain
    from configdrive.service.registry import Registry
    from configdrive.service.store import open_store

    store = await asyncio.to_thread(open_store, store_url)
    registry = Registry(store)
    try:
        await asyncio.to_thread(registry.refresh)
        chain = await start_chain(upstream, hops, registry=registry, secret=secret, listen=listen)
        try:
            opened = [(guest, await chain.add_front(guest, port)) for guest, port in fronts or ()]
        except BaseException:
            await chain.stop()
            raise
    except BaseException as exc:
        await asyncio.to_thread(store.close)
        if isinstance(exc, OSError):
            raise ConfigDriveError(
                f"proxy-chain cannot listen: {exc.strerror or exc}",
                hint=f"is {listen[0]}:{listen[1]} (or a --front port) taken?",
            ) from None
        raise
    port = chain.addresses[0][1]
    poller = asyncio.create_task(_poll_registry(registry, poll_interval))
    return _ChainRun(chain, registry, (listen[0], port), poller, opened)


async def _serve_chain(args: dict[str, Any], ready: Callable[[_ChainRun], None]) -> None:
    running = await start_proxy_chain(**args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        ready(running)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.warning("proxy chain shutting down")
        await running.stop()


def _proxy_chain(args: argparse.Namespace) -> int:
    from configdrive.service.config import parse_listen

    config = load_config(args.config) if args.config else None
    hops = [parse_hop(text) for text in args.hop]
    check_hops(hops)
    if args.upstream:
        upstream = parse_listen(args.upstream, "upstream")
    elif config is not None:
        upstream = parse_listen(config.listen[0], "listen")
    else:
        raise UsageError(
            "proxy-chain needs the server's address",
            hint="--upstream HOST:PORT (the `configdrive serve --mode proxy` listener)",
        )
    listen = parse_listen(args.listen)
    store = args.store or (config.store if config is not None else ServiceConfig().store)
    secret = os.environ.get("CONFIGDRIVE_SHARED_SECRET") or (
        config.shared_secret if config is not None else ""
    )
    if not secret:
        raise UsageError(
            "the agent hop needs the shared secret",
            hint="set CONFIGDRIVE_SHARED_SECRET (the server's shared_secret) in the environment",
        )
    poll = args.poll_interval
    if poll is None:
        poll = config.poll_interval if config is not None else 1.0
    if poll <= 0:
        raise UsageError("poll_interval: must be a positive number of seconds")

    def ready(running: _ChainRun) -> None:
        addresses = running.chain.addresses
        state = {
            "ready": True,
            "listen": f"{running.listen[0]}:{running.listen[1]}",
            "upstream": f"{upstream[0]}:{upstream[1]}",
            "hops": [
                {
                    "kind": hop.kind,
                    "latency_ms": round(hop.latency * 1000, 3),
                    "listen": f"{h}:{p}" if i else f"{running.listen[0]}:{running.listen[1]}",
                }
                for i, (hop, (h, p)) in enumerate(zip(hops, addresses, strict=True))
            ],
            "latency_ms": round(sum(h.latency for h in hops) * 1000, 3),
            "fronts": [{"guest": g, "listen": f"{h}:{p}"} for g, (h, p) in running.fronts],
            "instances": len(running.registry),
        }
        print(json.dumps(state), flush=True)

    options = {
        "upstream": upstream,
        "hops": hops,
        "listen": listen,
        "store_url": store,
        "secret": secret,
        "poll_interval": poll,
        "fronts": [parse_front(text) for text in args.front],
    }
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_chain(options, ready))
    else:
        uvloop.run(_serve_chain(options, ready))
    return EXIT_OK


def register(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="run the metadata service (EC2 IMDSv1/v2, OpenStack, NoCloud-net)",
        description="Serve every registered instance's metadata over HTTP, from the same "
        "render step as the drive. Instances are identified by their fixed IP (the socket "
        "peer), or behind trusted proxies by nova's signed X-Instance-ID headers. Secrets: "
        "CONFIGDRIVE_ADMIN_TOKEN, CONFIGDRIVE_SHARED_SECRET or the config file.",
    )
    s.add_argument("--config", metavar="FILE", help="settings file (YAML/JSON)")
    s.add_argument(
        "--listen", action="append", metavar="HOST:PORT", help="metadata listener (repeatable)"
    )
    s.add_argument("--admin-listen", metavar="HOST:PORT", help="admin API listener")
    s.add_argument("--store", metavar="URL", help="sqlite:///PATH (default) or postgresql://…")
    s.add_argument("--mode", choices=["direct", "proxy"], help="how instances are identified")
    s.add_argument(
        "--proxy-address", action="append", metavar="CIDR", help="trusted proxy (proxy mode)"
    )
    s.add_argument("--poll-interval", type=float, metavar="S", help="store poll period")
    s.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="server processes sharing the listeners through SO_REUSEPORT (default 1; auto: "
        "one per core, for boot storms); the admin API runs in the first",
    )
    s.add_argument("--access-log", metavar="DEST", help='"-" (stderr), "off" or a file')
    s.add_argument("--check", action="store_true", help="validate the settings and exit")
    s.set_defaults(handler=_serve)

    r = sub.add_parser(
        "register",
        help="register an instance spec with a running metadata service",
        description="Send a spec file to the admin API (token from CONFIGDRIVE_ADMIN_TOKEN).",
    )
    r.add_argument("--spec", required=True, metavar="FILE", help="instance spec (YAML/JSON)")
    r.add_argument("--url", default="http://127.0.0.1:8776", help="admin API base URL")
    r.add_argument("--imds", choices=["optional", "required"], default="optional")
    r.add_argument(
        "--replace",
        action="store_true",
        help="replace the instance if its uuid is registered (without it, that is an error)",
    )
    r.set_defaults(handler=_register)

    c = sub.add_parser(
        "proxy-chain",
        help="put the metadata service behind nova-like forwarding hops with added latency",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run the hops that stand between a guest and nova's metadata API, each waiting its latency
before it forwards a request, in front of `configdrive serve --mode proxy`:

  guest -> haproxy -> [forward …] -> agent -> [forward …] -> server (--upstream)

haproxy drops identity headers the guest sent and appends the guest's address to
X-Forwarded-For; the agent looks that address up among the instances' fixed IPs in the
server's store (--store) and adds X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature
(HMAC-SHA256 with the shared secret, from CONFIGDRIVE_SHARED_SECRET); forward hops only add
latency. The server must run in proxy mode with the same secret and trust 127.0.0.1
(--proxy-address 127.0.0.1/32): the hops talk to each other over loopback.

Guests on QEMU's restricted user networking (configdrive boot --guestfwd
169.254.169.254:80=127.0.0.1:PORT) all arrive from 127.0.0.1: give each its own
--front GUEST_IP=PORT and point its guestfwd at that PORT.

Prints one JSON line when ready ({"ready": true, "listen": …, "hops": […]}); stops cleanly on
SIGTERM or SIGINT.""",
        epilog="""\
example (the server: configdrive serve --mode proxy --proxy-address 127.0.0.1/32 …):
  export CONFIGDRIVE_SHARED_SECRET=…        # the server's shared_secret
  configdrive proxy-chain --upstream 127.0.0.1:8775 --listen 127.0.0.1:8780 \\
      --hop haproxy:1ms --hop agent:20ms --hop forward:30ms \\
      --store sqlite:///var/lib/configdrive/metadata.db""",
    )
    c.add_argument(
        "--hop",
        action="append",
        default=[],
        metavar="KIND[:LATENCY]",
        help="a hop, guest-facing first (repeatable): haproxy, agent or forward, with a "
        "latency in us, ms or s (e.g. haproxy:1ms, agent:20ms, forward:0.03s; default 0)",
    )
    c.add_argument(
        "--front",
        action="append",
        default=[],
        metavar="GUEST_IP[=PORT]",
        help="one more haproxy listener on 127.0.0.1:PORT (default: a free port, in the "
        "ready line) whose requests count as coming from GUEST_IP: QEMU's user networking "
        "NATs every guest to 127.0.0.1, so a guest's guestfwd targets its own front "
        "(repeatable)",
    )
    c.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        help="the metadata server's listener (default: the first listen of --config)",
    )
    c.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the guest-facing (haproxy) listener (default 127.0.0.1:0, a free port, printed "
        "in the ready line)",
    )
    c.add_argument(
        "--store",
        metavar="URL",
        help="the server's store, where the agent looks guests up: sqlite:///PATH or "
        "postgresql://… (default: --config's, else the server's default)",
    )
    c.add_argument(
        "--config",
        metavar="FILE",
        help="the server's settings file (YAML/JSON): store, shared_secret, poll_interval and "
        "the upstream default are read from it",
    )
    c.add_argument(
        "--poll-interval",
        type=float,
        metavar="S",
        help="how often the agent rereads the store for new instances (default 1)",
    )
    c.set_defaults(handler=_proxy_chain)


def main(argv: list[str] | None = None) -> int:
    """Run these verbs alone (tests; until the main parser wires them in)."""
    parser = argparse.ArgumentParser(prog="configdrive")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except ConfigDriveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
