"""Spec loading and validation: nova's rules, one SpecError per broken rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from configdrive.errors import SpecError
from configdrive.spec import Limits, instance_from_mapping, load_spec, sanitize_hostname

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("myinstance", "myinstance"),
        ("Hello World", "hello-world"),
        ("test_host", "test-host"),
        ("....test.example.com...", "test-example-com"),
        ("<}\x1fh\x10e\x08l\x02l\x05o\x12!{>", "hello"),
        ("\u7684.test.example.com", "test-example-com"),
        ("a" * 80, "a" * 63),
    ],
)
def test_sanitize_hostname_like_nova(name: str, expected: str) -> None:
    assert sanitize_hostname(name) == expected


def test_empty_sanitised_hostname_falls_back_to_server_uuid() -> None:
    inst = instance_from_mapping({"name": "\u7684", "uuid": "37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"})
    assert inst.hostname == "Server-37bf37e7-fd38-4b31-aa1b-5dffa0c35abe"


def test_seed_example_spec_loads() -> None:
    data, base = load_spec(EXAMPLES / "seed" / "instance.yaml")
    inst = instance_from_mapping(data, base=base)
    assert inst.name == "myinstance" and inst.hostname == "myinstance"
    assert inst.fqdn == "myinstance.novalocal"
    assert inst.meta == {"role": "webservers", "essential": "false"}
    assert [f.path for f in inst.files] == ["/etc/network/interfaces", "known_hosts"]
    assert inst.files[0].content == (EXAMPLES / "seed" / "instance-interfaces").read_bytes()
    assert inst.key_pairs[0].name == "mykey"
    assert inst.user_data == (EXAMPLES / "seed" / "my-user-data.txt").read_bytes()


def test_dual_stack_spec_loads() -> None:
    data, base = load_spec(EXAMPLES / "dual-stack.yaml")
    inst = instance_from_mapping(data, base=base)
    assert inst.hostname == "web-01-example"
    assert len(inst.ports) == 2 and inst.ports[0].subnets[1].version == 6
    assert inst.ports[1].subnets[0].dhcp


def test_limits_are_configurable() -> None:
    data = {"name": "x", "user_data": "a" * 49152}  # 65536 base64 chars
    with pytest.raises(SpecError, match="user_data: is 49152 bytes, 65536 once base64-encoded"):
        instance_from_mapping(data)
    inst = instance_from_mapping(data, limits=Limits().replace("user_data_b64", 70000))
    assert inst.user_data is not None and len(inst.user_data) == 49152
    assert instance_from_mapping({"name": "x", "user_data": "a" * 49149}).user_data  # 65532: ok


def test_guest_paths() -> None:
    ok = instance_from_mapping(
        {"name": "x", "files": {"a/../b": {"content": ""}, "/etc/x": {"content": "y"}}}
    )
    assert [f.path for f in ok.files] == ["a/../b", "/etc/x"]
    with pytest.raises(SpecError, match=r"files\[\.\./x\]: guest path must not escape"):
        instance_from_mapping({"name": "x", "files": {"../x": {"content": ""}}})
