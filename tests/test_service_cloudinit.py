"""cloud-init 22.4.2's own Ec2 and OpenStack datasources crawl the service over loopback.

The datasources are Debian 12's, unpacked (see conftest's ``cloudinit`` fixture); their
``metadata_urls`` point at the server. The guest is 127.0.0.1 (the address cloud-init's requests
leave from), registered with the seed example's spec, so what they return must be the spec's
values. IMDSv2: Ec2 only fetches a token on AWS, so ``cloud_name`` is set to ``aws`` for the
token runs, with the instance in ``imds: required`` mode (any token-less request gets 401).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configdrive.service.config import ServiceConfig
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


@pytest.fixture(params=["optional", "required"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    config = ServiceConfig(
        listen=("127.0.0.1:0",),
        admin_listen="127.0.0.1:0",
        admin_token="admin-secret",
        store=str(tmp_path / "md.db"),
        access_log="off",
    )
    server = ServerThread(config)
    status, body = server.admin(
        "POST", "/v1/instances", {"spec": _seed_spec(), "imds": request.param}
    )
    assert status == 201, body
    try:
        yield server, request.param
    finally:
        server.stop()


def _datasource(module: str, cls: str, url: str, tmp_path: Path, dsname: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = importlib.import_module(f"cloudinit.sources.{module}")
        helpers = importlib.import_module("cloudinit.helpers")
    paths = helpers.Paths({"cloud_dir": str(tmp_path / "cloud"), "run_dir": str(tmp_path / "run")})
    sys_cfg = {
        "datasource_list": [dsname, "None"],
        "datasource": {
            dsname: {"metadata_urls": [url], "max_wait": 10, "timeout": 5, "retries": 1}
        },
    }
    return mod, getattr(mod, cls)(sys_cfg, None, paths)


def test_ec2_datasource_reads_the_spec(
    cloudinit: Any, served: tuple[ServerThread, str], tmp_path: Path
) -> None:
    server, imds = served
    url = f"http://127.0.0.1:{server.port}"
    _, ds = _datasource("DataSourceEc2", "DataSourceEc2", url, tmp_path, "Ec2")
    ds._cloud_name = "aws" if imds == "required" else "unknown"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds.get_data() is True
    md = ds.metadata
    assert ds.userdata_raw == (ROOT / "examples/seed/my-user-data.txt").read_bytes()
    assert md["instance-id"] == "i-%08x" % (0x37BF37E7FD384B31AA1B5DFFA0C35ABE & 0xFFFFFFFF)
    assert md["hostname"] == "myinstance.novalocal"
    assert md["local-ipv4"] == "127.0.0.1"
    assert md["instance-type"] == "m1.tiny"
    assert md["placement"] == {"availability-zone": "nova"}
    assert md["public-keys"] == {"mykey": (ROOT / "examples/seed/mykey.pub").read_text().strip()}
    assert ds.get_public_ssh_keys() == [(ROOT / "examples/seed/mykey.pub").read_text().strip()]
    assert ds.availability_zone == "nova"
    if imds == "required":  # the token was used, and the identity document was read
        assert ds._api_token
        assert ds.identity["instanceId"] == md["instance-id"]
        assert ds.get_instance_id() == md["instance-id"]
        status, _, body = http_request(server.port, "/latest/meta-data/hostname")
        assert (status, body) == (401, b"")


def test_openstack_datasource_reads_the_spec(
    cloudinit: Any,
    served: tuple[ServerThread, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, imds = served
    url = f"http://127.0.0.1:{server.port}"
    mod, ds = _datasource("DataSourceOpenStack", "DataSourceOpenStack", url, tmp_path, "OpenStack")
    monkeypatch.setattr(mod, "detect_openstack", lambda accept_oracle=False: True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds.get_data() is True
    md = ds.metadata
    seed = load_spec(ROOT / "examples/seed/instance.yaml")[0]
    assert md["uuid"] == seed["uuid"]
    assert md["name"] == "myinstance"
    assert md["hostname"] == "myinstance.novalocal"
    assert md["meta"] == {"role": "webservers", "essential": "false"}
    assert md["availability_zone"] == "nova"
    assert "admin_pass" not in md
    assert len(md["random_seed"]) == 512  # cloud-init decodes it
    assert ds.version == 2
    assert ds.userdata_raw == (ROOT / "examples/seed/my-user-data.txt").read_bytes()
    assert ds.files == {
        "/etc/network/interfaces": (ROOT / "examples/seed/instance-interfaces").read_bytes(),
        "known_hosts": (ROOT / "examples/seed/known_hosts").read_bytes(),
    }
    assert ds.network_json["links"][0]["ethernet_mac_address"] == "fa:16:3e:11:22:33"
    assert ds.network_json["networks"][0]["ip_address"] == "127.0.0.1"
    assert ds.get_public_ssh_keys() == [(ROOT / "examples/seed/mykey.pub").read_text().strip()]
    # (22.4.2's MetadataReader fetches its EC2 view from the default 169.254.169.254, not
    # from metadata_urls, so ds.ec2_metadata says nothing about this server)
