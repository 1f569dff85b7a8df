"""Pre-flight: check any config drive or NoCloud seed before a guest boots from it.

On top of ``inspect`` (what cloud-init would refuse outright), the rules operators trip on:

- ``schema``: user data and vendor data that are cloud-config, against cloud-init's own
  schema code. It runs in a child process on the host's cloud-init, or on the tree given
  with ``cloud_init``; when neither is there, the report says the schema was not checked;
- ``network``: an empty or ``{}`` network description, which leaves newer cloud-init with no
  NIC configured, and (given the guest's NICs) MACs that match no NIC, or NICs that no link
  describes;
- ``size``: nova's limits (errors), and common platform limits (warnings): EC2 user data
  16 KiB, KubeVirt inline user data 2 KiB;
- ``drive``: everything ``inspect`` finds, such as a NoCloud seed without ``meta-data`` or
  ``user-data``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configdrive.drive import read_drive
from configdrive.inspection import inspect_contents
from configdrive.spec import Limits

__all__ = [
    "PLATFORM_USER_DATA_LIMITS",
    "CheckReport",
    "Finding",
    "SchemaJudge",
    "check_drive",
    "find_cloud_init",
]

PLATFORM_USER_DATA_LIMITS = (("EC2", 16 * 1024), ("KubeVirt inline", 2 * 1024))
_DIST = Path("usr/lib/python3/dist-packages")

# Runs under the judge's interpreter with cloud-init importable: one JSON request on stdin,
# one JSON answer on stdout. Works with cloud-init 22.4 through 26.x (schema_errors are
# (path, message) pairs in all of them).
_SCHEMA_SCRIPT = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
import yaml
from cloudinit import version
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_schema
request = json.load(sys.stdin)
schema = get_schema()
results = []
for doc in request["docs"]:
    errors = []
    try:
        config = yaml.safe_load(doc["text"])
    except yaml.YAMLError as exc:
        errors.append("not valid YAML: %s" % str(exc).splitlines()[0])
        config = None
    if config is not None and not isinstance(config, dict):
        errors.append("a cloud-config must be a mapping")
    elif config is not None:
        try:
            validate_cloudconfig_schema(config, schema, strict=True)
        except SchemaValidationError as exc:
            errors += ["%s: %s" % (p, m) for p, m in exc.schema_errors]
    results.append({"name": doc["name"], "errors": errors})
print(json.dumps({"version": version.version_string(), "results": results}))
"""


@dataclass(frozen=True)
class Finding:
    """One thing the check found: its rule, ``problem`` or ``warning``, and what it is."""

    rule: str
    level: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "level": self.level, "message": self.message}


@dataclass
class CheckReport:
    path: str
    kind: str
    label: str
    findings: list[Finding] = field(default_factory=list)
    schema: str = "not checked"

    @property
    def ok(self) -> bool:
        return not any(f.level == "problem" for f in self.findings)

    def add(self, rule: str, level: str, message: str) -> None:
        self.findings.append(Finding(rule, level, message))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "label": self.label,
            "ok": self.ok,
            "schema": self.schema,
            "findings": [f.to_json() for f in self.findings],
        }

    def text(self) -> str:
        lines = [f"{self.path}: {self.kind} ({self.label}); schema: {self.schema}"]
        for f in self.findings:
            lines.append(f"  {f.level}: {f.rule}: {f.message}")
        lines.append("ok" if self.ok else "problems found")
        return "\n".join(lines)


@dataclass(frozen=True)
class SchemaJudge:
    """A cloud-init to run the schema with: an interpreter and the ``PYTHONPATH`` that makes
    ``cloudinit`` importable (empty: the interpreter finds it itself)."""

    python: str
    path: str = ""

    def validate(self, docs: Sequence[tuple[str, str]]) -> tuple[str, dict[str, list[str]]]:
        """cloud-init's version, and each named document's schema errors."""
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        if self.path:
            env["PYTHONPATH"] = self.path
        request = {"docs": [{"name": n, "text": t} for n, t in docs]}
        proc = subprocess.run(
            [self.python, "-c", _SCHEMA_SCRIPT],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cloud-init's schema check failed: {tail}")
        answer = json.loads(proc.stdout)
        return answer["version"], {r["name"]: r["errors"] for r in answer["results"]}


def _importable(python: str, path: str = "") -> bool:
    env = {**os.environ, **({"PYTHONPATH": path} if path else {})}
    probe = "import cloudinit.config.schema, jsonschema"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, env=env, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def find_cloud_init(given: str | os.PathLike[str] | None = None) -> SchemaJudge | None:
    """The cloud-init to judge schemas with: ``given`` (an unpacked package's root or its
    ``dist-packages``), else this interpreter's, else the host's ``python3``'s."""
    if given is not None:
        root = Path(given)
        dist = root / _DIST if (root / _DIST / "cloudinit").is_dir() else root
        if not (dist / "cloudinit").is_dir():
            raise FileNotFoundError(f"{given} holds no cloudinit package")
        return SchemaJudge(sys.executable, str(dist))
    if _importable(sys.executable):
        return SchemaJudge(sys.executable)
    host = shutil.which("python3", path="/usr/bin:/bin")
    if host is not None and _importable(host):
        return SchemaJudge(host)
    return None


def _cloud_configs(files: Mapping[str, bytes], kind: str, base: str) -> list[tuple[str, str]]:
    """The drive's cloud-config documents: user data, and vendor data that carries one."""
    docs: list[tuple[str, str]] = []
    user = files.get("user-data" if kind == "nocloud" else f"{base}/user_data")
    if user is not None and user.lstrip().startswith(b"#cloud-config"):
        docs.append(("user data", user.decode("utf-8", "replace")))
    if kind == "nocloud":
        vendor = files.get("vendor-data")
        if vendor is not None and vendor.lstrip().startswith(b"#cloud-config"):
            docs.append(("vendor data", vendor.decode("utf-8", "replace")))
        return docs
    for name in ("vendor_data.json", "vendor_data2.json"):
        raw = files.get(f"{base}/{name}")
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            continue
        # cloud-init reads vendor data as a string, or a dict's "cloud-init" entry
        candidates = [value] if isinstance(value, str) else []
        if isinstance(value, dict):
            candidates += [v for v in value.values() if isinstance(v, str)]
            candidates += [
                v["cloud-init"]
                for v in value.values()
                if isinstance(v, dict) and isinstance(v.get("cloud-init"), str)
            ]
            if isinstance(value.get("cloud-init"), str):
                candidates.append(value["cloud-init"])
        for text in dict.fromkeys(candidates):
            if text.lstrip().startswith("#cloud-config"):
                docs.append((f"vendor data ({name})", text))
    return docs


def _check_sizes(report: CheckReport, md: Mapping[str, Any], user: bytes | None) -> None:
    limits = Limits()
    if user is not None:
        encoded = 4 * ((len(user) + 2) // 3)
        if encoded > limits.user_data_b64:
            report.add(
                "size",
                "problem",
                f"user data is {len(user)} bytes ({encoded} base64 characters); nova allows "
                f"{limits.user_data_b64}",
            )
        for platform, limit in PLATFORM_USER_DATA_LIMITS:
            if len(user) > limit:
                report.add(
                    "size",
                    "warning",
                    f"user data is {len(user)} bytes, over {platform}'s {limit // 1024} KiB",
                )
    files = [f for f in md.get("files") or [] if isinstance(f, dict)]
    if len(files) > limits.files:
        report.add("size", "problem", f"{len(files)} injected files; nova allows {limits.files}")
    meta = md.get("meta") or {}
    if isinstance(meta, dict) and len(meta) > limits.meta_items:
        report.add("size", "problem", f"{len(meta)} meta items; nova allows {limits.meta_items}")


def _check_network(
    report: CheckReport, network: Any, present: bool, macs: Sequence[str] | None
) -> None:
    if present and (network in ({}, None, []) or (isinstance(network, dict) and not any(
        network.get(k) for k in ("links", "networks", "config", "ethernets")
    ))):  # fmt: skip
        report.add(
            "network",
            "problem",
            "the network description is empty: newer cloud-init then configures no NIC "
            "at all (leave the file out to get DHCP on the first NIC)",
        )
    if macs is None:
        return
    wanted = {m.lower() for m in macs}
    described = _described_macs(network)
    for mac in sorted(described - wanted):
        report.add(
            "network", "problem", f"the drive describes {mac}, which no NIC of the guest has"
        )
    if present and described:
        for mac in sorted(wanted - described):
            report.add(
                "network", "problem", f"NIC {mac} is described by no link: it stays unconfigured"
            )


def _described_macs(network: Any) -> set[str]:
    out: set[str] = set()
    if not isinstance(network, dict):
        return out
    for link in network.get("links") or []:  # network_data.json
        if isinstance(link, dict) and isinstance(link.get("ethernet_mac_address"), str):
            out.add(link["ethernet_mac_address"].lower())
    for entry in network.get("config") or []:  # network config v1
        if isinstance(entry, dict) and isinstance(entry.get("mac_address"), str):
            out.add(entry["mac_address"].lower())
    for eth in (network.get("ethernets") or {}).values():  # v2
        match = eth.get("match") if isinstance(eth, dict) else None
        if isinstance(match, dict) and isinstance(match.get("macaddress"), str):
            out.add(match["macaddress"].lower())
    return out


def check_drive(
    path: str | os.PathLike[str],
    *,
    macs: Sequence[str] | None = None,
    judge: SchemaJudge | None = None,
) -> CheckReport:
    """Every rule on the drive at ``path``; ``macs`` are the guest's NICs, when known."""
    drive = read_drive(path)
    inspection = inspect_contents(drive)
    report = CheckReport(str(path), inspection.kind, drive.label)
    for message in inspection.problems:
        report.add("drive", "problem", message)
    for message in inspection.warnings:
        report.add("drive", "warning", message)
    files = drive.files
    base = f"openstack/{inspection.version_used or 'latest'}"
    if inspection.kind == "nocloud":
        md = _yaml(files.get("meta-data")) or {}
        user = files.get("user-data")
        net_raw = files.get("network-config")
        network = _yaml(net_raw)
    else:
        md = _json_or(files.get(f"{base}/meta_data.json"), {})
        user = files.get(f"{base}/user_data")
        net_raw = files.get(f"{base}/network_data.json")
        network = _json_or(net_raw, None)
    _check_sizes(report, md if isinstance(md, dict) else {}, user)
    _check_network(report, network, net_raw is not None, macs)
    docs = _cloud_configs(files, inspection.kind, base)
    if judge is None:
        report.schema = "not checked: no cloud-init on this host (--cloud-init DIR names one)"
    elif not docs:
        report.schema = "nothing to check (no cloud-config)"
    else:
        version, errors = judge.validate(docs)
        report.schema = f"cloud-init {version}"
        for name, problems in errors.items():
            for problem in problems:
                report.add("schema", "problem", f"{name}: {problem}")
    return report


def _yaml(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError:
        return None


def _json_or(data: bytes | None, default: Any) -> Any:
    if data is None:
        return default
    try:
        return json.loads(data)
    except ValueError:
        return default
