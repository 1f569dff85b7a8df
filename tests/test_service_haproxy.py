"""The benchmark's real first hop: Debian's haproxy with neutron's metadata-proxy template, in
front of the agent's unix socket, each guest network its own haproxy (tools tier)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from configdrive.benchmark import MetadataChain
from configdrive.errors import ConfigDriveError
from configdrive.model import Instance
from configdrive.service.config import HopSpec
from configdrive.service.haproxy import MetadataProxy, haproxy_version, metadata_proxy_config
from configdrive.service.testing import http_request
from configdrive.spec import instance_from_mapping
from configdrive.virt.domain import USER_NET

pytestmark = pytest.mark.tools


def _instance(index: int) -> Instance:
    address = f"169.254.2.{15 + index}"
    return instance_from_mapping({
        "name": f"guest{index}",
        "uuid": str(uuid.UUID(int=index + 1)),
        "networks": [{"mac": f"fa:16:3e:00:01:{index:02x}",
                      "subnets": [{"cidr": str(USER_NET), "ips": [address], "dhcp": True}]}],
    })  # fmt: skip


@pytest.fixture()
def chain() -> Iterator[MetadataChain]:
    import tempfile

    # a short path: the agent's unix socket lives in it (sun_path holds 108 bytes)
    with tempfile.TemporaryDirectory(prefix="cd-hap-", dir="/tmp") as work:
        chain = MetadataChain(Path(work), (HopSpec("agent", 0.0), HopSpec("forward", 0.0)))
        try:
            yield chain
        finally:
            chain.close()


def test_the_template_is_neutrons_and_haproxy_accepts_it(tmp_path: Path) -> None:
    text = metadata_proxy_config(bind=("127.0.0.1", 8775), upstream=tmp_path / "agent.sock",
                                 guest_address="10.0.0.5",
                                 network_id="6b1c5a43-95a3-4cc5-9d8e-1f0e6c2f7a10")  # fmt: skip
    for line in ("option forwardfor", "option http-server-close", "maxconn     1024",
                 "timeout http-request    30s", "timeout client          32s",
                 "http-request del-header X-Neutron-Network-ID",
                 "http-request set-header X-Neutron-Network-ID "
                 "6b1c5a43-95a3-4cc5-9d8e-1f0e6c2f7a10",
                 f"server metadata {tmp_path / 'agent.sock'}"):  # fmt: skip
        assert line in text
    assert "daemon" not in text
    assert haproxy_version().startswith("HAProxy version")
    with pytest.raises(ValueError):
        metadata_proxy_config(bind=("127.0.0.1", 1), upstream=tmp_path / "s",
                              guest_address="10.0.0.5", network_id="x\n    server evil")  # fmt: skip


def test_each_guest_is_served_its_own_data_through_real_haproxy(chain: MetadataChain) -> None:
    guests = [_instance(i) for i in range(2)]
    forwards = [chain.attach(g) for g in guests]
    assert forwards[0].host_port != forwards[1].host_port  # one haproxy per guest network
    for guest, forward in zip(guests, forwards, strict=True):
        status, _, body = http_request(forward.host_port, "/openstack/latest/meta_data.json")
        assert status == 200, body
        assert f'"uuid": "{guest.uuid}"'.encode() in body
    # a guest's own X-Forwarded-For does not make it another guest: haproxy appends the real
    # address, and the agent reads the last entry
    status, _, body = http_request(
        forwards[0].host_port, "/openstack/latest/meta_data.json",
        headers={"X-Forwarded-For": "169.254.2.16", "X-Instance-ID": guests[1].uuid},
    )  # fmt: skip
    assert status == 200 and guests[0].uuid.encode() in body
    assert chain.requests_from(guests[0]) == 2
    proxy = chain.proxies[guests[0].uuid]
    chain.detach(guests[0])
    assert proxy.process.poll() is not None  # its haproxy is gone
    with pytest.raises(OSError):
        http_request(forwards[0].host_port, "/openstack/latest/meta_data.json")


def test_an_unregistered_address_gets_404(chain: MetadataChain, tmp_path: Path) -> None:
    with MetadataProxy(tmp_path, chain.socket, "169.254.9.9") as proxy:
        status, _, _ = http_request(proxy.port, "/openstack/latest/meta_data.json")
    assert status == 404
    assert proxy.process.poll() is not None


def test_a_proxy_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: haproxy cannot share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigDriveError, match=f"127.0.0.1:{port} is in use"):
            MetadataProxy(tmp_path, tmp_path / "none.sock", "10.0.0.5", port=port)
    assert not list(tmp_path.iterdir())  # nothing written, nothing started
