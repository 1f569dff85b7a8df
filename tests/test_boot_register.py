"""`configdrive boot` registers instances with a real metadata service; `delete` unregisters.

Fast tier: the host settings, the registration policy, the spec an instance is sent as (it must
build exactly the same instance on the service's side), the admin client against a running
server, `configdrive register`, and the failures that are caught before anything is made.
`tools`: failed registrations during a boot (wrong token, unreachable service, a fixed IP that
is taken) with real qemu-img overlays, which must leave nothing behind. `vm`: real guests under
plain QEMU, registered, served to their fixed IP, unregistered by delete.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from configdrive.compute import registers
from configdrive.drive import read_drive
from configdrive.errors import SpecError
from configdrive.host import HostConfig, RegisterPolicy, load_host_config
from configdrive.model import (
    BlockDevice,
    BlockDeviceKind,
    BootSource,
    Instance,
    KeyPair,
    KeyType,
    Port,
    Subnet,
)
from configdrive.render import render
from configdrive.service.client import AdminClient, RegistrationError, instance_spec
from configdrive.service.config import ServiceConfig
from configdrive.service.registry import prepare_spec
from configdrive.service.testing import (
    ServerThread,
    guest_ip,
    guest_spec,
    http_request,
    refusing_port,
)
from configdrive.spec import instance_from_mapping, load_spec

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed" / "instance.yaml"
DUAL = ROOT / "examples" / "dual-stack.yaml"
TOKEN = "boot-register-admin-token"
META = "/openstack/latest/meta_data.json"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def _zeros(n: int) -> bytes:
    return b"\0" * n


def cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONFIGDRIVE_ADMIN_TOKEN"}
    if token is not None:
        env["CONFIGDRIVE_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port that refuses connections for the whole module (bound, never listening: no
    server can take it meanwhile, and no client can self-connect to it)."""
    with refusing_port() as port:
        yield port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("register")
    srv = ServerThread(
        ServiceConfig(
            listen=("127.0.0.1:0",),
            admin_listen="127.0.0.1:0",
            admin_token=TOKEN,
            store=str(tmp / "md.db"),
            access_log="off",
        )  # fmt: skip
    )
    yield srv
    srv.stop()


def _admin_url(srv: ServerThread) -> str:
    return f"http://127.0.0.1:{srv.admin_port}"


# ---------------------------------------------------------------------------------------------
# host settings and policy


def test_host_config_metadata_settings(tmp_path: Path) -> None:
    conf = tmp_path / "host.conf"
    assert HostConfig().metadata_admin_url is None
    assert HostConfig().metadata_register is RegisterPolicy.NO_DRIVE
    conf.write_text(
        "[configdrive]\nmetadata_admin_url = http://127.0.0.1:8776/  # the admin listener\n"
        "metadata_register = always\n"
    )
    host = load_host_config(conf)
    assert host.metadata_admin_url == "http://127.0.0.1:8776"
    assert host.metadata_register is RegisterPolicy.ALWAYS
    conf.write_text("[configdrive]\nmetadata_admin_url =\n")
    assert load_host_config(conf).metadata_admin_url is None
    bad = [
        ("metadata_register = sometimes", "metadata_register: must be no-drive or always"),
        ("metadata_admin_url = 127.0.0.1:8776", "metadata_admin_url: '127.0.0.1:8776' is not"),
        ("metadata_admin_url = ftp://h/", "metadata_admin_url: 'ftp://h/' is not an http"),
        ("metadata_admin_url = http://h:99999", "metadata_admin_url: 'http://h:99999' is not"),
        ("metadata_admin_url = http://u:pw@h:1", "metadata_admin_url: must be scheme://host"),
    ]
    for line, message in bad:
        conf.write_text(f"[configdrive]\n{line}\n")
        with pytest.raises(SpecError) as info:
            load_host_config(conf)
        assert str(info.value).startswith(message), str(info.value)


def test_who_registers() -> None:
    off = HostConfig()
    on = HostConfig(metadata_admin_url="http://127.0.0.1:8776")
    always = replace(on, metadata_register=RegisterPolicy.ALWAYS)
    table = [(h, drive, registers(drive, h)) for h in (off, on, always) for drive in (False, True)]
    assert [r for *_, r in table] == [False, False, True, False, True, True]


# ---------------------------------------------------------------------------------------------
# the spec an instance is registered as


def _instances() -> list[Instance]:
    seed, base = load_spec(SEED)
    dual, dual_base = load_spec(DUAL)
    every = Instance(
        name="Every Field", hostname="every", dhcp_domain=None, launch_index=3,
        files=(), availability_zone="az9", admin_pass="pw", ami_id="ami-00000001",
        reservation_id="r-00000001", ec2_instance_id="i-0000abcd", floating_ip="203.0.113.9",
        root_device_name=None, security_groups=("web", "ssh"), flavor="m1.large",
        user_data=b"", vendor_data={"x": [1, {"y": None}]}, dedicated_cpus=frozenset({0}),
        key_pairs=(KeyPair("cert", CERT, KeyType.X509),), meta={"a": "", "b": "c"},
        ports=(Port("fa:16:3e:00:00:09", subnets=(Subnet("10.0.0.0/24", ("10.0.0.9",)),)),),
        boot_source=BootSource.IMAGE, image_id="b1d2e3f4-0000-4000-8000-00000000abcd",
        kernel_id="11111111-2222-4333-8444-555555555555",
        block_devices=(BlockDevice(BlockDeviceKind.SWAP, "/dev/vdb"),),
    )  # fmt: skip
    return [
        instance_from_mapping(seed, base=base),
        instance_from_mapping(dual, base=dual_base),
        instance_from_mapping(guest_spec(3)),
        instance_from_mapping(
            {
                "name": "x" * 100,
                "files": [{"path": "/a", "content": "1"}, {"path": "/a", "content": "2"}],
            }
        ),  # fmt: skip
        instance_from_mapping(instance_spec(every)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_instance_spec_rebuilds_the_same_instance(index: int) -> None:
    instance = _instances()[index]
    spec = instance_spec(instance)
    assert json.loads(json.dumps(spec)) == spec  # JSON as it is
    assert instance_from_mapping(spec) == instance
    # the admin API's own validation (no file references; nothing drawn at random)
    served, stored = prepare_spec(spec)
    assert served == instance and instance_from_mapping(stored) == instance
    assert render(served, urandom=_zeros) == render(instance, urandom=_zeros)


def test_instance_spec_inlines_the_seed_files() -> None:
    seed, base = load_spec(SEED)
    spec = instance_spec(instance_from_mapping(seed, base=base))
    text = json.dumps(spec)
    assert "_file" not in text and '"source"' not in text
    user_data = (SEED.parent / "my-user-data.txt").read_bytes()
    assert base64.b64decode(spec["user_data_base64"]) == user_data
    assert spec["keys"][0]["public_key"] == (SEED.parent / "mykey.pub").read_text()
    assert [f["path"] for f in spec["files"]] == ["/etc/network/interfaces", "known_hosts"]


# ---------------------------------------------------------------------------------------------
# the client, `configdrive register`


def test_admin_client_registers_and_unregisters(server: ServerThread) -> None:
    client = AdminClient(_admin_url(server), TOKEN)
    instance = instance_from_mapping(guest_spec(20))
    described = client.register(instance, "required")
    assert described["uuid"] == instance.uuid and described["fixed_ips"] == [guest_ip(20)]
    assert client.show(instance.uuid) == {**described, "imds": "required"}
    assert client.unregister(instance.uuid) is True
    assert client.unregister(instance.uuid) is False  # 404 tolerated
    assert client.show(instance.uuid) is None
    assert "boot-register" not in repr(client)  # the token stays out of reprs and logs


def test_admin_client_failures(server: ServerThread, closed_port: int) -> None:
    instance = instance_from_mapping(guest_spec(21))
    with pytest.raises(RegistrationError) as info:
        AdminClient(_admin_url(server), "wrong").register(instance)
    assert "refused POST /v1/instances: 401 missing or wrong admin token" in str(info.value)
    assert info.value.hint and "CONFIGDRIVE_ADMIN_TOKEN" in info.value.hint
    assert info.value.status == 401
    with pytest.raises(RegistrationError, match="cannot reach the metadata service's admin API"):
        AdminClient(f"http://127.0.0.1:{closed_port}", TOKEN).register(instance)
    with pytest.raises(RegistrationError) as info:
        AdminClient(_admin_url(server), "wrong").unregister(instance.uuid)
    assert info.value.status == 401  # refused, not "not found": delete must not go on
    with pytest.raises(RegistrationError, match="is not a metadata service's admin API"):
        AdminClient(f"http://127.0.0.1:{server.port}", TOKEN).register(instance)
    assert server.admin("GET", f"/v1/instances/{instance.uuid}")[0] == 404


def test_register_cli_resolves_files_and_the_service_serves_them(
    server: ServerThread, tmp_path: Path
) -> None:
    seed = shutil.copytree(SEED.parent, tmp_path / "seed")  # the spec's relative references
    data, _ = load_spec(SEED)
    ip = guest_ip(22)
    network = {"mac": "fa:16:3e:00:00:22", "subnets": [{"cidr": "127.0.0.0/8", "ips": [ip]}]}
    spec = dict(data, uuid="00000000-0000-4000-8000-0000000000aa", networks=[network])
    path = seed / "registered.json"
    path.write_text(json.dumps(spec))
    proc = cli("register", "--spec", str(path), "--url", _admin_url(server))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fixed_ips"] == [ip]
    user_data = http_request(server.port, "/openstack/latest/user_data", source=ip)[2]
    assert user_data == (SEED.parent / "my-user-data.txt").read_bytes()
    meta = json.loads(http_request(server.port, META, source=ip)[2])
    assert meta["public_keys"] == {"mykey": (SEED.parent / "mykey.pub").read_text()}
    assert [f["path"] for f in meta["files"]] == ["/etc/network/interfaces", "known_hosts"]
    content = http_request(server.port, f"/openstack{meta['files'][1]['content_path']}", source=ip)
    assert content[2] == (SEED.parent / "known_hosts").read_bytes()
    assert server.admin("DELETE", f"/v1/instances/{spec['uuid']}")[0] == 204
    # without the token: exit 2, nothing sent
    proc = cli("register", "--spec", str(SEED), "--url", _admin_url(server), token=None)
    assert proc.returncode == 2 and proc.stderr.startswith("error: register needs the admin token")


# ---------------------------------------------------------------------------------------------
# boot failures


def _host_conf(work: Path, url: str, policy: str = "no-drive", name: str = "host.conf") -> Path:
    conf = work / name
    conf.write_text(
        f"[DEFAULT]\ninstances_path = {work / 'instances'}\n"
        f"[libvirt]\nvirt_type = qemu\n"
        f"[configdrive]\nbackend = qemu\nmetadata_admin_url = {url}\nmetadata_register = {policy}\n"
        f"cache_dir = {work / 'cache'}\n"
    )
    return conf


def _instance_dirs(work: Path) -> list[str]:
    root = work / "instances"
    return sorted(p.name for p in root.iterdir() if p.name != "_base") if root.exists() else []


def test_boot_without_the_token_fails_before_anything(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")  # never read: the token is checked first
    conf = _host_conf(tmp_path, "http://127.0.0.1:8776")
    proc = cli("boot", "vm1", "--image", str(image), "--config-drive", "false",
               "--host-config", str(conf), token=None)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "error: CONFIGDRIVE_ADMIN_TOKEN: must be set: the host config names a metadata service"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "instances").exists()
    # a drive boot under no-drive does not register, so needs no token: it gets past the check
    proc = cli("boot", "vm1", "--image", str(image), "--config-drive", "true",
               "--host-config", str(conf), token=None)  # fmt: skip
    assert "CONFIGDRIVE_ADMIN_TOKEN" not in proc.stderr


@pytest.mark.tools
def test_failed_registration_leaves_nothing_behind(
    server: ServerThread, tmp_path: Path, sh: Any, closed_port: int
) -> None:
    image = tmp_path / "blank.qcow2"
    sh(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"])
    spec = tmp_path / "vm.json"
    spec.write_text(json.dumps(guest_spec(30, name="vm30")))
    taken = guest_spec(31, uuid="00000000-0000-4000-8000-0000000000bb")
    taken["networks"][0]["subnets"][0]["ips"] = [guest_ip(30)]
    assert server.admin("POST", "/v1/instances", {"spec": taken})[0] == 201
    cases = [
        (_admin_url(server), "wrong-token",
         f"error: metadata service at {_admin_url(server)} refused POST /v1/instances: 401"),
        (f"http://127.0.0.1:{closed_port}", TOKEN,
         "error: cannot reach the metadata service's admin API at http://127.0.0.1:"),
        (_admin_url(server), TOKEN, f"error: metadata service at {_admin_url(server)} refused "
         f"POST /v1/instances: 409 fixed IP {guest_ip(30)} already belongs to instance"),
    ]  # fmt: skip
    try:
        for case, (url, token, message) in enumerate(cases):
            work = tmp_path / f"case{case}"
            work.mkdir()
            conf = _host_conf(work, url)
            proc = cli("boot", "--spec", str(spec), "--image", str(image),
                       "--config-drive", "false", "--host-config", str(conf), token=token)  # fmt: skip
            assert proc.returncode == 1, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert lines[-1].startswith(message), proc.stderr
            assert [line for line in lines if not line.startswith("-- ")] == [lines[-1]]
            assert "-- disk: qcow2 overlay" in proc.stderr  # it failed after the overlay was made
            assert _instance_dirs(work) == []
            assert server.admin("GET", f"/v1/instances/{guest_spec(30)['uuid']}")[0] == 404
            served = json.loads(http_request(server.port, META, source=guest_ip(30))[2])
            assert served["uuid"] == taken["uuid"]  # the holder of the IP is untouched
    finally:
        server.admin("DELETE", f"/v1/instances/{taken['uuid']}")


# ---------------------------------------------------------------------------------------------
# real guests (plain QEMU): registered before they start, unregistered by delete


@pytest.fixture
def vm_work() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="configdrive-register-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _strip_seed(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data.pop("random_seed", None)
    return data


@pytest.mark.vm
def test_boot_registers_and_delete_unregisters(
    server: ServerThread, tuned_image: Any, vm_work: Path, closed_port: int
) -> None:
    image = str(tuned_image.qcow2.parent)
    url = _admin_url(server)
    ip = guest_ip(40)
    spec = vm_work / "vm.json"
    spec.write_text(json.dumps(guest_spec(40, name="reg-vm")))
    uuid = guest_spec(40)["uuid"]
    conf = _host_conf(vm_work, url)
    booted = False
    try:
        # --- no drive: registered before the guest starts, served to its fixed IP
        proc = cli("boot", "--spec", str(spec), "--image", image, "--config-drive", "false",
                   "--host-config", str(conf))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        booted = True
        directory = vm_work / "instances" / uuid
        assert proc.stdout == (
            f"reg-vm {uuid} started: qemu, tcg, pc, config drive none, registered at {url}; "
            f"{directory}\n"
        )
        assert f"-- metadata service: registered {uuid} ({ip}) at {url}" in proc.stderr
        order = [line.split(":")[0] for line in proc.stderr.splitlines()]
        assert order.index("-- metadata service") < order.index(
            "-- starting reg-vm (qemu, tcg, pc)"
        )
        assert not (directory / "disk.config").exists()
        listed = json.loads(cli("list", "--host-config", str(conf), "--json").stdout)
        assert [(r["name"], r["state"], r["metadata_url"]) for r in listed] == [
            ("reg-vm", "running", url)
        ]
        status, _, body = http_request(server.port, META, source=ip)
        assert status == 200
        expected = render(instance_from_mapping(guest_spec(40, name="reg-vm")), urandom=_zeros)
        assert _strip_seed(body) == _strip_seed(expected["openstack/latest/meta_data.json"])
        assert http_request(server.port, "/latest/meta-data/instance-id", source=ip)[0] == 200
        # --- delete with the service out of reach: refused, nothing changed
        bad_conf = _host_conf(vm_work, f"http://127.0.0.1:{closed_port}", name="down.conf")
        proc = cli("delete", "reg-vm", "--host-config", str(bad_conf))
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: reg-vm not deleted: cannot reach"), proc.stderr
        assert "unset metadata_admin_url" in proc.stderr
        assert directory.is_dir()
        assert http_request(server.port, META, source=ip)[0] == 200
        # --- delete: unregistered, stopped, gone
        proc = cli("delete", "reg-vm", "--host-config", str(conf))
        assert proc.returncode == 0, proc.stderr
        booted = False
        assert f"-- metadata service: {uuid} unregistered from {url}" in proc.stderr
        assert server.admin("GET", f"/v1/instances/{uuid}")[0] == 404
        assert http_request(server.port, META, source=ip)[0] == 404
        assert not directory.exists()

        # --- always: the drive and the service hand out the same metadata
        always = vm_work / "always"
        always.mkdir()
        conf = _host_conf(always, url, "always")
        proc = cli("boot", "--spec", str(spec), "--image", image, "--config-drive", "true",
                   "--host-config", str(conf), "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        booted = True
        result = json.loads(proc.stdout)
        assert (result["config_drive"], result["metadata_url"]) == ("iso9660", url)
        drive = read_drive(Path(result["path"]) / "disk.config").files
        for name in ("meta_data.json", "network_data.json", "vendor_data.json", "user_data"):
            status, _, body = http_request(server.port, f"/openstack/latest/{name}", source=ip)
            on_drive = drive[f"openstack/latest/{name}"]
            if name == "meta_data.json":
                assert (status, _strip_seed(body)) == (200, _strip_seed(on_drive)), name
            else:
                assert (status, body) == (200, on_drive), name
        proc = cli("delete", "reg-vm", "--host-config", str(conf))
        assert proc.returncode == 0, proc.stderr
        booted = False
        assert server.admin("GET", f"/v1/instances/{uuid}")[0] == 404
    finally:
        if booted:
            cli("delete", "reg-vm", "--host-config", str(conf))
