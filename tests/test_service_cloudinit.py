"""cloud-init's own Ec2 and OpenStack datasources (22.4, 25.1, 26.x) crawl the service over
loopback.

The datasources are Debian's, unpacked, each version in its judge process (see conftest's
``cloudinit`` fixture); their ``metadata_urls`` point at the server. The guest is 127.0.0.1 (the address cloud-init's requests
leave from), registered with the seed example's spec, so what they return must be the spec's
values. IMDSv2: Ec2 only fetches a token on AWS, so ``cloud_name`` is set to ``aws`` for the
token runs, with the instance in ``imds: required`` mode (any token-less request gets 401).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configdrive.service.config import ServiceConfig
from configdrive.service.security import sign_instance_id
from configdrive.service.testing import ServerThread, http_request
from configdrive.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cloudinit


def _seed_spec() -> dict[str, Any]:
    data, base = load_spec(ROOT / "examples/seed/instance.yaml")
    spec = dict(data)
    # the admin API takes no file references: inline what the example reads from files
    spec["keys"] = [
        {"name": "mykey", "public_key": (base / "mykey.pub").read_text().strip()},
    ]
    spec.pop("user_data_file")
    spec["user_data"] = (base / "my-user-data.txt").read_text()
    spec["files"] = {
        "/etc/network/interfaces": {"content": (base / "instance-interfaces").read_text()},
        "known_hosts": {"content": (base / "known_hosts").read_text()},
    }
    spec["networks"] = [
        {
            "mac": "fa:16:3e:11:22:33",
            "subnets": [{"cidr": "127.0.0.0/8", "ips": ["127.0.0.1"], "gateway": "127.0.0.254"}],
        }
    ]
    return spec


@pytest.fixture(params=["optional", "required", "required-ec2-only"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    """``required-ec2-only``: imds required, with ``token_trees: [ec2]`` (the OpenStack tree
    opted out of the token rule for clients that cannot send one)."""
    config = ServiceConfig(
        listen=("127.0.0.1:0",),
        admin_listen="127.0.0.1:0",
        admin_token="admin-secret",
        store=str(tmp_path / "md.db"),
        access_log="off",
        token_trees=("ec2",)
        if request.param == "required-ec2-only"
        else ("ec2", "openstack", "nocloud"),
    )
    server = ServerThread(config)
    imds = request.param.partition("-")[0]
    status, body = server.admin("POST", "/v1/instances", {"spec": _seed_spec(), "imds": imds})
    assert status == 201, body
    try:
        yield server, request.param
    finally:
        server.stop()


def test_ec2_datasource_reads_the_spec(
    cloudinit: Any, served: tuple[ServerThread, str], tmp_path: Path
) -> None:
    server, imds = served
    ds = cloudinit.datasource(
        "Ec2", tmp_path, url=f"http://127.0.0.1:{server.port}",
        cloud_name="unknown" if imds == "optional" else "aws",
    )  # fmt: skip
    assert ds["found"] is True
    md = ds["metadata"]
    assert ds["userdata_raw"] == (ROOT / "examples/seed/my-user-data.txt").read_bytes()
    assert md["instance-id"] == "i-%08x" % (0x37BF37E7FD384B31AA1B5DFFA0C35ABE & 0xFFFFFFFF)
    assert md["hostname"] == "myinstance.novalocal"
    assert md["local-ipv4"] == "127.0.0.1"
    assert md["instance-type"] == "m1.tiny"
    assert md["placement"] == {"availability-zone": "nova"}
    assert md["public-keys"] == {"mykey": (ROOT / "examples/seed/mykey.pub").read_text().strip()}
    assert ds["public_ssh_keys"] == [(ROOT / "examples/seed/mykey.pub").read_text().strip()]
    assert ds["availability_zone"] == "nova"
    if imds != "optional":  # the token was used, and the identity document was read
        assert ds["_api_token"]
        assert ds["identity"]["instanceId"] == md["instance-id"]
        assert ds["instance_id"] == md["instance-id"]
        status, _, body = http_request(server.port, "/latest/meta-data/hostname")
        assert (status, body) == (401, b"")


def test_openstack_datasource_reads_the_spec(
    cloudinit: Any, served: tuple[ServerThread, str], tmp_path: Path
) -> None:
    server, imds = served
    ds = cloudinit.datasource(
        "OpenStack", tmp_path, url=f"http://127.0.0.1:{server.port}",
        nics={"ens3": "fa:16:3e:11:22:33"},
    )  # fmt: skip
    if imds == "required":  # cloud-init's OpenStack reader sends no token: it gets nothing
        assert ds["found"] is False
        status, _, body = http_request(server.port, "/openstack/latest/user_data")
        assert (status, body) == (401, b"")
        return
    assert ds["found"] is True
    md = ds["metadata"]
    seed = load_spec(ROOT / "examples/seed/instance.yaml")[0]
    assert md["uuid"] == seed["uuid"]
    assert md["name"] == "myinstance"
    assert md["hostname"] == "myinstance.novalocal"
    assert md["meta"] == {"role": "webservers", "essential": "false"}
    assert md["availability_zone"] == "nova"
    assert "admin_pass" not in md
    assert len(md["random_seed"]) == 512  # cloud-init decodes it
    assert ds["version"] == 2
    assert ds["userdata_raw"] == (ROOT / "examples/seed/my-user-data.txt").read_bytes()
    assert ds["files"] == {
        "/etc/network/interfaces": (ROOT / "examples/seed/instance-interfaces").read_bytes(),
        "known_hosts": (ROOT / "examples/seed/known_hosts").read_bytes(),
    }
    assert ds["network_json"]["links"][0]["ethernet_mac_address"] == "fa:16:3e:11:22:33"
    assert ds["network_json"]["networks"][0]["ip_address"] == "127.0.0.1"
    assert ds["public_ssh_keys"] == [(ROOT / "examples/seed/mykey.pub").read_text().strip()]
    # (22.4's MetadataReader fetches its EC2 view from the default 169.254.169.254, not
    # from metadata_urls, so ds["ec2_metadata"] says nothing about this server)


class MetadataAgent:
    """neutron's metadata agent in one thread: forwards a guest's GETs to the service with the
    instance's signed identity headers (proxy mode), as it does for a port the service cannot
    tell by address. An instance that describes no port has no address to be found by."""

    def __init__(self, upstream: int, instance_id: str, tenant_id: str, secret: str) -> None:
        headers = {
            "X-Instance-ID": instance_id,
            "X-Tenant-ID": tenant_id,
            "X-Instance-ID-Signature": sign_instance_id(secret, instance_id),
        }

        class Forward(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, answer, body = http_request(upstream, self.path, headers=headers)
                self.send_response(status)
                self.send_header("Content-Type", answer.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.mark.parametrize("networks", ["auto", "none"])
def test_openstack_datasource_network_modes(cloudinit: Any, tmp_path: Path, networks: str) -> None:
    """auto: the service has no network_data.json (404, not listed), and cloud-init falls back
    to DHCP on the guest's NIC; none: network_data.json is nova's {}, cloud-init configures
    nothing."""
    secret = "agent-secret"
    config = ServiceConfig(
        listen=("127.0.0.1:0",), admin_listen="127.0.0.1:0", admin_token="admin-secret",
        store=str(tmp_path / "md.db"), access_log="off", mode="proxy", shared_secret=secret,
        proxy_addresses=("127.0.0.1/32",),
    )  # fmt: skip
    spec = {**_seed_spec(), "project_id": "9b3e2a51c4d84f5e8a7b6c5d4e3f2a1b"}
    spec.pop("networks")
    if networks == "none":
        spec["networks"] = "none"
    server = ServerThread(config)
    agent = None
    try:
        status, body = server.admin("POST", "/v1/instances", {"spec": spec})
        assert status == 201, body
        agent = MetadataAgent(server.port, spec["uuid"], spec["project_id"], secret)
        status, _, listing = http_request(agent.port, "/openstack/latest/")
        assert status == 200 and (b"network_data.json" in listing) == (networks == "none")
        status, _, served = http_request(agent.port, "/openstack/latest/network_data.json")
        assert status == (404 if networks == "auto" else 200)
        nics = {"enp1s0": "52:54:00:9a:8b:7c"}
        ds = cloudinit.datasource(
            "OpenStack", tmp_path / "ds", url=f"http://127.0.0.1:{agent.port}", nics=nics
        )
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
    assert ds["found"] is True and ds["metadata"]["uuid"] == spec["uuid"]
    if networks == "auto":
        assert ds["network"]["source"] == "fallback", ds["network"]
        (name, eth), *others = ds["network"]["config"]["ethernets"].items()
        assert not others and name == "enp1s0"
        assert eth["match"]["macaddress"] == "52:54:00:9a:8b:7c" and eth["dhcp4"] is True
    else:
        assert served == b"{}"
        assert ds["network"] == {"source": "ds", "config": {"version": 1, "config": []}}
