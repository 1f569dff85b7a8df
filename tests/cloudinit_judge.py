"""cloud-init's own code as a judge, one process per cloud-init version.

Run by tests/conftest.py as ``python tests/cloudinit_judge.py`` with ``PYTHONPATH`` set to one
unpacked package's ``dist-packages`` (bookworm's, trixie's or sid's cloud-init cannot share a
process: they are the same package). It reads one JSON request a line on stdin and answers one
JSON line on stdout: ``{"ok": result}`` or ``{"error": {"type", "message"}}``. Bytes travel as
``{"$bytes": base64}``. Everything cloud-init prints goes to stderr.

Requests (``op`` plus arguments), each calling cloud-init the way its own stages do:

- ``version``
- ``read_config_drive {path}``: ``DataSourceConfigDrive.read_config_drive`` (v2, then v1)
- ``read_v2 {path}``: ``ConfigDriveReader(path).read_v2()``
- ``convert_net_json {network_json, known_macs}``
- ``datasource {kind, seed | url, work, known_macs, nics, cloud_name}``: a whole datasource
  (``ConfigDrive`` or ``NoCloud`` on a seed directory, ``OpenStack`` or ``Ec2`` on a metadata
  URL) through ``get_data()``; then what ``stages.Init._find_networking_config`` picks as the
  network config and from which source, with the guest's NICs (``nics``: name -> MAC) in a
  sysfs tree of their own (``fallback`` means cloud-init generated its DHCP fallback)
- ``read_conf_d {path}``: ``util.read_conf_d``, how cloud-init merges ``cloud.cfg.d``
- ``renderer_choice {path}``: the network renderer cloud-init selects with that ``cloud.cfg.d``
- ``schema_errors {config}``: cloud-init's strict cloud-config schema validation
- ``render {network_config, renderer, target, nics}``: cloud-init's parser
  (``network_state.parse_net_config_data``) and ``cloudinit.net.<renderer>.Renderer`` writing
  into ``target``; answers the files written, relative path -> text
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")  # older cloud-init predates some Python 3.11 deprecations


def encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def version() -> str:
    from cloudinit import version as v

    return str(v.version_string())


def read_config_drive(path: str) -> Any:
    from cloudinit.sources import DataSourceConfigDrive

    return DataSourceConfigDrive.read_config_drive(path)


def read_v2(path: str) -> Any:
    from cloudinit.sources.helpers import openstack

    return openstack.ConfigDriveReader(path).read_v2()


def convert_net_json(network_json: Any, known_macs: dict[str, str]) -> Any:
    from cloudinit.sources.helpers import openstack

    return openstack.convert_net_json(network_json, known_macs=known_macs)


def fake_sysfs(root: Path, nics: dict[str, str]) -> str:
    """A /sys/class/net of the guest: virtio NICs ``name -> MAC``, link up, and ``lo``."""
    for name, mac in {"lo": "00:00:00:00:00:00", **nics}.items():
        dev = root / name
        dev.mkdir(parents=True, exist_ok=True)
        values = {
            "address": mac,
            "addr_assign_type": "0",
            "carrier": "1",
            "dormant": "0",
            "operstate": "up" if name != "lo" else "unknown",
            "type": "1" if name != "lo" else "772",
            "flags": "0x1003",
            "mtu": "1500",
            "ifindex": str(len(list(root.iterdir()))),
            "iflink": "1",
        }
        for key, value in values.items():
            (dev / key).write_text(value + "\n")
        if name != "lo":
            device = root.parent / "devices" / name
            (device / "driver").mkdir(parents=True, exist_ok=True)
            (device / "device").write_text("0x0001\n")
            with contextlib.suppress(FileExistsError):
                (dev / "device").symlink_to(device)
            with contextlib.suppress(FileExistsError):
                (device / "driver" / "module").symlink_to(device / "driver")
    return str(root) + "/"


def _use_sysfs(work: Path, nics: dict[str, str]) -> None:
    from cloudinit import net

    net.SYS_CLASS_NET = fake_sysfs(work / "sys" / "class" / "net", nics)


def _paths(work: Path) -> Any:
    from cloudinit import helpers

    return helpers.Paths({"cloud_dir": str(work / "cloud"), "run_dir": str(work / "run")})


def _distro(paths: Any) -> Any:
    from cloudinit import distros

    cls = distros.fetch("debian")
    return cls("debian", {}, paths)


def datasource(
    kind: str,
    work: str,
    seed: str | None = None,
    url: str | None = None,
    known_macs: dict[str, str] | None = None,
    nics: dict[str, str] | None = None,
    cloud_name: str | None = None,
    instance_id: str | None = None,
) -> Any:
    from cloudinit import stages

    root = Path(work)
    root.mkdir(parents=True, exist_ok=True)
    _use_sysfs(root, nics or {})
    paths = _paths(root)
    cloud = root / "cloud"
    sys_cfg: dict[str, Any] = {"datasource_list": [kind, "None"]}
    if kind == "ConfigDrive":
        from cloudinit.sources import DataSourceConfigDrive as mod

        (cloud / "seed").mkdir(parents=True, exist_ok=True)
        (cloud / "seed" / "config_drive").symlink_to(Path(str(seed)).resolve())
        cls = mod.DataSourceConfigDrive
    elif kind == "NoCloud":
        from cloudinit.sources import DataSourceNoCloud as mod

        (cloud / "seed").mkdir(parents=True, exist_ok=True)
        (cloud / "seed" / "nocloud").symlink_to(Path(str(seed)).resolve())
        cls = mod.DataSourceNoCloud
    elif kind == "OpenStack":
        from cloudinit.sources import DataSourceOpenStack as mod

        sys_cfg["datasource"] = {
            kind: {"metadata_urls": [url], "max_wait": 10, "timeout": 5, "retries": 1}
        }
        # the platform check reads DMI (product "OpenStack Nova"), which this host is not:
        # from 23.2 a datasource_list of this one datasource alone skips the check (as a
        # configured image does); 22.4 always checks, so its check is answered here
        sys_cfg["datasource_list"] = [kind]
        if hasattr(mod, "detect_openstack"):
            mod.detect_openstack = lambda accept_oracle=False: True
        cls = mod.DataSourceOpenStack
    elif kind == "Ec2":
        from cloudinit.sources import DataSourceEc2 as mod

        sys_cfg["datasource"] = {
            kind: {"metadata_urls": [url], "max_wait": 10, "timeout": 5, "retries": 1}
        }
        cls = mod.DataSourceEc2
    else:
        raise ValueError(f"unknown datasource {kind}")
    if kind == "ConfigDrive" and not instance_id:
        instance_id = read_config_drive(str(seed))["metadata"]["instance-id"]
    if instance_id:
        # the instance is not new: ConfigDrive's first-boot step would write injected files
        # under this host's / (always so for ConfigDrive, whose files the reader returns)
        (cloud / "data").mkdir(parents=True, exist_ok=True)
        (cloud / "data" / "instance-id").write_text(instance_id + "\n")
    distro = _distro(paths)
    ds = cls(sys_cfg, distro, paths)
    if known_macs is not None:
        ds.known_macs = dict(known_macs)
    if cloud_name is not None:
        ds._cloud_name = cloud_name
    if not ds.get_data():
        return {"found": False}
    init = stages.Init(ds_deps=[])
    init._cfg = {
        "system_info": {
            "distro": "debian",
            "paths": {"cloud_dir": str(cloud), "run_dir": str(root / "run")},
        }
    }
    init._paths = paths
    init._distro = distro
    init.datasource = ds
    try:
        ncfg, source = init._find_networking_config()
        network: dict[str, Any] = {"source": str(getattr(source, "value", source)), "config": ncfg}
    except Exception as exc:  # e.g. Ec2 without its network tree: the test decides
        network = {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {
        "found": True,
        "instance_id": ds.get_instance_id(),
        "metadata": ds.metadata,
        "userdata_raw": ds.userdata_raw,
        "vendordata_raw": ds.vendordata_raw,
        "public_ssh_keys": ds.get_public_ssh_keys(),
        "availability_zone": ds.availability_zone,
        "network": network,
    }
    for attr in ("network_json", "files", "version", "ec2_metadata", "identity", "_api_token"):
        if hasattr(ds, attr):
            value = getattr(ds, attr)
            out[attr] = value if attr != "_api_token" else bool(value)
    if kind in ("ConfigDrive", "OpenStack", "NoCloud"):
        out["ds_network_config"] = ds.network_config
    return out


# Each renderer with the settings of the distribution that uses it (Debian's for eni and
# netplan, RHEL's for sysconfig). Paths are given relative where a renderer joins them with
# os.path.join: an absolute default (netplan's from 25.1) would write into this host's /etc.
RENDERER_DISTRO = {"sysconfig": "rhel"}
RENDERER_PATHS: dict[str, dict[str, Any]] = {
    "eni": {
        "eni_path": "etc/network/interfaces.d/50-cloud-init",
        "netrules_path": "etc/udev/rules.d/70-persistent-net.rules",
    },
    "netplan": {"netplan_path": "etc/netplan/50-cloud-init.yaml", "postcmds": False},
    # networkd concatenates target and directory, so its absolute default is the safe one
}


def _renderer_config(name: str) -> dict[str, Any]:
    import copy

    from cloudinit import distros

    cls = distros.fetch(RENDERER_DISTRO.get(name, "debian"))
    config: dict[str, Any] = copy.deepcopy(cls.renderer_configs.get(name, {}))
    config.update(RENDERER_PATHS.get(name, {}))
    return config


def render(
    network_config: Any, renderer: str, target: str, nics: dict[str, str] | None = None
) -> dict[str, str]:
    import cloudinit.distros  # noqa: F401 - the renderers' modules import each other through it
    from cloudinit.net import network_state, renderers

    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    _use_sysfs(root / ".judge", nics or {})
    cls = renderers.NAME_TO_RENDERER[renderer].Renderer
    config = network_config.get("network", network_config)
    chosen = cls(_renderer_config(renderer))
    # as Distro._apply_network_from_network_config: the renderer goes to the parser too (a v2
    # config passes through to netplan unparsed)
    state = network_state.parse_net_config_data(config, renderer=chosen)
    chosen.render_network_state(state, target=str(root))
    return {
        p.relative_to(root).as_posix(): p.read_text(errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".judge" not in p.relative_to(root).parts
    }


def read_conf_d(path: str) -> Any:
    from cloudinit import util

    return util.read_conf_d(path)


def schema_errors(config: dict[str, Any]) -> list[str]:
    """What this cloud-init's own schema says of a cloud-config: [] when it is valid."""
    from cloudinit.config import schema

    try:
        schema.validate_cloudconfig_schema(config, schema.get_schema(), strict=True)
    except schema.SchemaValidationError as exc:
        return [str(exc)]
    return []


def renderer_choice(path: str) -> str:
    """The network renderer this cloud-init picks with ``path`` (a cloud.cfg.d) merged in: as
    ``Distro._get_renderer`` / ``Distro.network_renderer`` do, from ``system_info: network:
    renderers`` (its default order when unset)."""
    from cloudinit import util
    from cloudinit.net import renderers

    system_info = util.read_conf_d(path).get("system_info") or {}
    priority = util.get_cfg_by_path(system_info, ("network", "renderers"), None)
    name, _cls = renderers.select(priority=priority)
    return str(name)


OPS = {
    "version": version,
    "read_config_drive": read_config_drive,
    "read_v2": read_v2,
    "convert_net_json": convert_net_json,
    "datasource": datasource,
    "render": render,
    "read_conf_d": read_conf_d,
    "schema_errors": schema_errors,
    "renderer_choice": renderer_choice,
}


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # whatever cloud-init prints must not mix with the answers
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            answer: dict[str, Any] = {"ok": encode(OPS[op](**request))}
        except Exception as exc:  # the judge's verdict: the test decides what it means
            buffer = io.StringIO()
            traceback.print_exc(file=buffer)
            answer = {
                "error": {
                    "type": type(exc).__name__,
                    "module": type(exc).__module__,
                    "message": str(exc),
                    "traceback": buffer.getvalue(),
                }
            }
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
