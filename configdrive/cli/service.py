"""`configdrive serve|register`: the metadata service and its admin API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from configdrive.cli._common import EXIT_FAIL, EXIT_OK, UsageError
from configdrive.errors import ConfigDriveError
from configdrive.service.config import ServiceConfig, config_from_mapping, load_config
from configdrive.spec import load_spec

__all__ = ["register"]

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
    # secrets come from the file or the environment, never from argv (visible in ps)
    import os

    for env, key in (
        ("CONFIGDRIVE_ADMIN_TOKEN", "admin_token"),
        ("CONFIGDRIVE_SHARED_SECRET", "shared_secret"),
    ):
        if os.environ.get(env):
            changes[key] = os.environ[env]
    if not changes:
        return config
    merged = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "proxy_networks"}
    merged.update(changes)
    return config_from_mapping(
        {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}
    )


def _serve(args: argparse.Namespace) -> int:
    from configdrive.service.server import Running, run

    config = _config(args)
    if args.check:
        print(json.dumps({"ok": True, "listen": list(config.listen), "mode": config.mode}))
        return EXIT_OK

    def ready(running: Running) -> None:
        admin = running.admin_address
        listen = [f"{h}:{p}" for h, p in running.addresses]
        state = {
            "ready": True,
            "listen": listen,
            "admin": f"{admin[0]}:{admin[1]}" if admin else None,
        }
        print(json.dumps(state), flush=True)

    run(config, ready=ready)
    return EXIT_OK


def _register(args: argparse.Namespace) -> int:
    import os

    token = os.environ.get("CONFIGDRIVE_ADMIN_TOKEN")
    if not token:
        raise UsageError(
            "register needs the admin token", hint="set CONFIGDRIVE_ADMIN_TOKEN in the environment"
        )
    data, base = load_spec(args.spec)
    # the admin API takes no file references: resolve them here, on the caller's side
    from configdrive.spec import instance_from_mapping

    instance = instance_from_mapping(data, base=base)
    spec = dict(data)
    for key in ("user_data_file", "user_data", "user_data_base64"):
        spec.pop(key, None)
    if instance.user_data is not None:
        import base64

        spec["user_data_base64"] = base64.b64encode(instance.user_data).decode()
    if instance.key_pairs:
        spec["keys"] = [
            {"name": k.name, "public_key": k.public_key, "type": str(k.type)}
            for k in instance.key_pairs
        ]
    if instance.files:
        import base64

        spec["files"] = {
            f.path: {"content_base64": base64.b64encode(f.content).decode()} for f in instance.files
        }
    spec["uuid"] = instance.uuid
    body = json.dumps({"spec": spec, "imds": args.imds}).encode()
    request = urllib.request.Request(
        args.url.rstrip("/") + "/v1/instances",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise ConfigDriveError(f"admin API answered {exc.code}: {exc.read().decode()}") from None
    except urllib.error.URLError as exc:
        raise ConfigDriveError(f"cannot reach the admin API at {args.url}: {exc.reason}") from None
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
    r.set_defaults(handler=_register)


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
