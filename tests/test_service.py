"""The metadata service over loopback: EC2, IMDSv2, OpenStack, NoCloud, isolation, admin API.

Guests are loopback addresses (127.1.0.x): a client bound to one *is* that guest to the server.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configdrive.errors import SpecError
from configdrive.render import meta_data
from configdrive.service.config import ServiceConfig, listen_text, load_config, parse_listen
from configdrive.service.security import RateLimiter, TokenSigner, sign_instance_id
from configdrive.service.testing import (
    GuestConnection,
    ServerThread,
    connect,
    guest_ip,
    guest_spec,
    http_request,
)
from configdrive.service.views import Seeded, SeedPool, ec2_md_print, openstack_listing
from configdrive.spec import instance_from_mapping

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
A, B, C = guest_ip(0), guest_ip(1), guest_ip(2)
SECRET = "proxy-shared-secret"


def _config(tmp: Path, **changes: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "listen": ("127.0.0.1:0",),
        "admin_listen": "127.0.0.1:0",
        "admin_token": "admin-token",
        "store": str(tmp / "md.db"),
        "access_log": "off",
    }
    base.update(changes)
    return ServiceConfig(**base)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Guest 0 (A, imds optional, user data), 1 (B, imds required), 2 (C, no user data)."""
    tmp = tmp_path_factory.mktemp("svc")
    srv = ServerThread(
        _config(tmp, mode="proxy", shared_secret=SECRET, proxy_addresses=("127.0.0.1/32",))
    )
    for index, imds in ((0, "optional"), (1, "required")):
        status, body = srv.admin("POST", "/v1/instances", {"spec": guest_spec(index), "imds": imds})
        assert status == 201, body
    spec_c = guest_spec(2)
    del spec_c["user_data"], spec_c["keys"]
    assert srv.admin("POST", "/v1/instances", {"spec": spec_c})[0] == 201
    yield srv
    srv.stop()


def get(
    srv: ServerThread, path: str, source: str = A, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    return http_request(srv.port, path, source=source, **kw)


def token(srv: ServerThread, source: str, ttl: str = "60") -> str:
    status, headers, body = get(srv, "/latest/api/token", source, method="PUT", headers={TTL: ttl})
    assert status == 200 and headers[TTL.lower()] == ttl
    return body.decode()


# ---------------------------------------------------------------------------------------------
# views: nova's printing rules, the seed splice


def test_ec2_md_print_follows_nova() -> None:
    assert ec2_md_print({"b": 1, "a": {"x": 1}, "k": {"_name": "0=key"}}) == b"a/\nb\n0=key"
    assert ec2_md_print(["default", "web"]) == b"default\nweb"
    assert ec2_md_print(None) == b"None"
    assert ec2_md_print(0) == b"0"


def test_seeded_document_is_meta_data_with_a_fresh_seed() -> None:
    instance = instance_from_mapping(guest_spec(3))
    seed = bytes(range(256)) * 2
    expected = json.dumps(meta_data(instance, "latest", urandom=lambda n: seed[:n])).encode()
    from configdrive.service.views import InstanceView

    doc = InstanceView(instance).section("openstack/latest")
    assert doc is not None
    body = doc["meta_data.json"].body
    assert isinstance(body, Seeded)
    assert body.fresh(lambda n: seed[:n]) == expected


def test_seed_pool_never_hands_out_the_same_bytes() -> None:
    pool = SeedPool()
    seeds = [pool(512) for _ in range(3 * SeedPool.FILL // 512 + 7)]  # across refills
    assert all(len(s) == 512 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert len(pool(SeedPool.FILL + 1)) == SeedPool.FILL + 1  # more than a buffer at once
    encoded = [pool.encoded() for _ in range(3 * SeedPool.FILL // 512 + 7)]  # across batches
    assert len(set(encoded)) == len(encoded)
    assert all(len(base64.b64decode(e, validate=True)) == 512 for e in encoded)
    # a forked child starts from a fresh buffer, not the rest of its parent's (forked in a
    # clean interpreter of its own: this one runs server threads)
    script = """
import base64, os, sys
from configdrive.service.views import SeedPool
pool = SeedPool()
first = pool(512) + base64.b64decode(pool.encoded())
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, pool(512) + base64.b64decode(pool.encoded()))
    os._exit(0)
os.close(write)
child = b""
while len(child) < 1024:
    chunk = os.read(read, 1024)
    if not chunk:
        break
    child += chunk
os.waitpid(pid, 0)
parent = pool(512) + base64.b64decode(pool.encoded())
sys.stdout.write(" ".join(x.hex() for x in (first, child, parent)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    first, child, parent = (bytes.fromhex(x) for x in done.stdout.split())
    assert len(child) == len(parent) == 1024
    halves = [x[i : i + 512] for x in (first, child, parent) for i in (0, 512)]
    assert len(set(halves)) == 6  # raw and encoded seeds alike


def test_openstack_listing_hides_future_versions() -> None:
    listing = openstack_listing(datetime(2019, 1, 1, tzinfo=UTC)).decode().split("\n")
    assert listing[-2:] == ["2018-08-27", "latest"] and "2020-10-14" not in listing


# ---------------------------------------------------------------------------------------------
# EC2


def test_ec2_tree(server: ServerThread) -> None:
    status, _, body = get(server, "/")
    assert status == 200 and body.split(b"\n")[-2:] == [b"2009-04-04", b"latest"]
    assert get(server, "/latest/")[2] == b"dynamic/\nmeta-data/\nuser-data"
    listing = get(server, "/2009-04-04/meta-data/")[2].decode().split("\n")
    assert "block-device-mapping/" in listing and "public-keys/" in listing
    assert "instance-id" in listing and "_name" not in "".join(listing)
    assert get(server, "/latest/meta-data/public-keys/")[2] == b"0=key0"
    assert get(server, "/latest/meta-data/public-keys/0/")[2] == b"openssh-key"
    key = get(server, "/latest/meta-data/public-keys/0/openssh-key")[2]
    assert key.startswith(b"ssh-ed25519 ")
    # values with or without a trailing slash; /ec2/… is the same tree (nova)
    assert get(server, "/latest/meta-data/local-ipv4/")[2] == A.encode()
    assert get(server, "/ec2/latest/meta-data/local-ipv4")[2] == A.encode()
    assert get(server, "/latest/meta-data/placement/availability-zone")[2] == b"nova"
    status, headers, body = get(server, "/latest/user-data")
    assert (status, headers["content-type"]) == (200, "application/octet-stream")
    assert body == b"#cloud-config\nhostname: guest-0\n"
    assert get(server, "/latest/user-data", C)[0] == 404
    assert b"user-data" not in get(server, "/latest/", C)[2]
    doc = json.loads(get(server, "/latest/dynamic/instance-identity/document")[2])
    assert doc["instanceId"] == get(server, "/latest/meta-data/instance-id")[2].decode()
    assert doc["privateIp"] == A
    for missing in ("/2021-03-23/meta-data/instance-id", "/latest/meta-data/nope", "/latest//x"):
        assert get(server, missing)[0] == 404


# ---------------------------------------------------------------------------------------------
# OpenStack and NoCloud


def test_openstack_tree(server: ServerThread) -> None:
    assert get(server, "/openstack")[2].endswith(b"\nlatest")
    assert get(server, "/openstack/latest")[2] == (
        b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"
    )
    first = get(server, "/openstack/latest/meta_data.json")
    second = get(server, "/openstack/latest/meta_data.json")
    assert first[1]["content-type"] == "application/json"
    one, two = json.loads(first[2]), json.loads(second[2])
    assert one["random_seed"] != two["random_seed"]  # fresh per request, as nova
    assert len(base64.b64decode(one["random_seed"])) == 512
    assert {**one, "random_seed": ""} == {**two, "random_seed": ""}
    assert one["uuid"] == guest_spec(0)["uuid"] and "admin_pass" not in one
    assert "random_seed" not in json.loads(get(server, "/openstack/2012-08-10/meta_data.json")[2])
    assert get(server, "/openstack/latest/network_data.json")[1]["content-type"] == "text/plain"
    assert (
        get(server, "/openstack/latest/vendor_data2.json")[1]["content-type"] == "application/json"
    )
    assert get(server, "/openstack/2012-08-10/vendor_data.json")[0] == 404
    assert get(server, "/openstack/latest/user_data")[2].startswith(b"#cloud-config")
    assert get(server, "/openstack/latest/user_data", C)[0] == 404
    assert get(server, "/openstack/1999-01-01/meta_data.json")[0] == 404


def test_password_is_write_once(server: ServerThread) -> None:
    path = "/openstack/latest/password"
    assert get(server, path, C)[:1] == (200,) and get(server, path, C)[2] == b""
    assert get(server, path, C, method="POST", body=b"x" * 1021)[0] == 400
    assert get(server, path, C, method="POST", body=b"p" * 1020)[0] == 200
    assert get(server, path, C, method="POST", body=b"again")[0] == 409
    assert get(server, path, C)[2] == b"p" * 1020
    assert get(server, path, A)[2] == b""  # another instance sees its own (none)
    assert get(server, path, C, method="DELETE")[0] == 400
    assert get(server, "/openstack/2012-08-10/password", C)[0] == 404  # before GRIZZLY


def test_nocloud_under_prefix(server: ServerThread) -> None:
    meta = json.loads(get(server, "/nocloud/meta-data")[2])
    assert meta["instance-id"] == guest_spec(0)["uuid"]
    assert get(server, "/nocloud/user-data")[2].startswith(b"#cloud-config")
    assert get(server, "/nocloud/network-config")[0] == 200
    assert get(server, f"/nocloud/{guest_spec(0)['uuid']}/meta-data")[0] == 200
    assert get(server, f"/nocloud/{guest_spec(1)['uuid']}/meta-data")[0] == 404  # not A's
    assert get(server, "/nocloud/")[2].split(b"\n")[:2] == [b"meta-data", b"user-data"]


# ---------------------------------------------------------------------------------------------
# IMDSv2


@pytest.mark.parametrize("ttl", ["0", "21601", "-1", "abc", "1.5", " ", "+60", "0x10"])
def test_token_ttl_out_of_range_is_400(server: ServerThread, ttl: str) -> None:
    headers = {TTL: ttl}
    assert get(server, "/latest/api/token", method="PUT", headers=headers)[0] == 400


def test_token_rules(server: ServerThread) -> None:
    assert get(server, "/latest/api/token", method="PUT")[0] == 400  # no TTL header
    assert token(server, A, "1") and token(server, A, "21600")
    status, headers, _ = get(server, "/latest/api/token")
    assert (status, headers["allow"]) == (405, "OPTIONS, PUT")
    assert get(server, "/latest/api/token/", method="PUT", headers={TTL: "60"})[0] == 403
    assert get(server, "/2009-04-04/api/token", method="PUT", headers={TTL: "60"})[0] == 403
    xff = {TTL: "60", "X-Forwarded-For": "10.0.0.1"}
    assert get(server, "/latest/api/token", method="PUT", headers=xff)[0] == 403


def test_required_mode(server: ServerThread) -> None:
    status, headers, body = get(server, "/latest/meta-data/instance-id", B)
    assert (status, body, headers["content-length"]) == (401, b"", "0")
    tok = token(server, B)
    status, headers, body = get(server, "/latest/meta-data/hostname", B, headers={TOKEN: tok})
    assert (status, body) == (200, b"guest-1.novalocal")
    assert 0 < int(headers[TTL.lower()]) <= 60
    # tokens are bound to the instance: A's token is worthless for B, and vice versa
    assert get(server, "/latest/meta-data/hostname", B, headers={TOKEN: token(server, A)})[0] == 401
    assert get(server, "/latest/meta-data/hostname", A, headers={TOKEN: tok})[0] == 401
    assert get(server, "/latest/meta-data/hostname", B, headers={TOKEN: tok + "x"})[0] == 401
    # a token with X-Forwarded-For: an open proxy in the guest; refused like EC2 does
    xff = {TOKEN: tok, "X-Forwarded-For": "10.0.0.9"}
    assert get(server, "/latest/meta-data/hostname", B, headers=xff)[0] == 403


def _with_headers(path: str, *headers: tuple[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    return ("\r\n".join(lines + [f"{k}: {v}" for k, v in headers]) + "\r\n\r\n").encode()


def test_a_repeated_token_header_is_400(server: ServerThread) -> None:
    """Two X-aws-ec2-metadata-token headers: 400, whatever they hold and in whichever order or
    spelling. Taking one of them would let a proxy in front (which may keep the first or the
    last) and the server disagree on the token; nova rejects repeated identity headers, EC2
    calls such a request invalid."""
    path = "/latest/meta-data/hostname"
    good = token(server, B)
    response = _raw(server.port, _with_headers(path, (TOKEN, good)), B)
    assert _status(response) == 200 and response.endswith(b"guest-1.novalocal")
    other = token(server, B, "120")
    assert other != good
    pairs = [
        ((TOKEN, good), (TOKEN, good)),  # equal values
        ((TOKEN, good), (TOKEN, other)),  # two valid tokens
        ((TOKEN, good), (TOKEN, "forged")),  # valid first
        ((TOKEN, "forged"), (TOKEN, good)),  # valid last
        ((TOKEN.lower(), good), (TOKEN.upper(), good)),  # one name, two spellings
        ((TOKEN, good), (TOKEN, "")),  # an empty second value
    ]
    for first, second in pairs:
        response = _raw(server.port, _with_headers(path, first, second), B)
        assert _status(response) == 400, (first, second, response[:200])
        assert response.endswith(b"X-aws-ec2-metadata-token given more than once")
    # the same on an OpenStack path, for an imds-optional guest, and for an unknown peer
    twice = _with_headers("/openstack/latest/meta_data.json", (TOKEN, good), (TOKEN, good))
    assert _status(_raw(server.port, twice, A)) == 400
    assert _status(_raw(server.port, twice, "127.9.9.9")) == 400
    # one header holding two values is one (invalid) token: 401, not a repeat
    joined = _with_headers(path, (TOKEN, f"{good}, {good}"))
    assert _status(_raw(server.port, joined, B)) == 401


def test_token_expiry_and_binding() -> None:
    now = [1000.0]
    signer = TokenSigner(b"k" * 32, clock=lambda: now[0])
    tok = signer.mint("uuid-a", 10)
    assert signer.remaining(tok, "uuid-a") == 10
    assert signer.remaining(tok, "uuid-b") is None
    now[0] += 10
    assert signer.remaining(tok, "uuid-a") is None
    assert TokenSigner(b"j" * 32).remaining(tok, "uuid-a") is None
    assert signer.remaining("!!!", "uuid-a") is None and signer.remaining("", "uuid-a") is None


# ---------------------------------------------------------------------------------------------
# isolation


def test_identity_is_the_peer_address(server: ServerThread) -> None:
    assert get(server, "/latest/meta-data/local-ipv4", A)[2] == A.encode()
    assert get(server, "/latest/meta-data/local-ipv4", C)[2] == C.encode()
    assert get(server, "/latest/meta-data/instance-id", "127.9.9.9")[0] == 404
    # headers from a peer that is not a configured proxy are never believed
    uuid_c = guest_spec(2)["uuid"]
    forged = {
        "X-Instance-ID": uuid_c,
        "X-Tenant-ID": guest_spec(2)["project_id"],
        "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid_c),
        "X-Forwarded-For": C,
    }
    assert get(server, "/latest/meta-data/local-ipv4", A, headers=forged)[2] == A.encode()
    assert get(server, "/latest/meta-data/local-ipv4", "127.9.9.9", headers=forged)[0] == 404


def _proxy_headers(index: int, **override: str) -> dict[str, str]:
    uuid = guest_spec(index)["uuid"]
    headers = {
        "X-Instance-ID": uuid,
        "X-Tenant-ID": guest_spec(index)["project_id"],
        "X-Instance-ID-Signature": sign_instance_id(SECRET, uuid),
    }
    headers.update(override)
    return headers


def test_proxy_mode_answers_as_nova(server: ServerThread) -> None:
    proxy = "127.0.0.1"
    path = "/latest/meta-data/local-ipv4"
    assert get(server, path, proxy, headers=_proxy_headers(2))[2] == C.encode()
    assert get(server, path, proxy)[0] == 400
    headers = _proxy_headers(2)
    del headers["X-Tenant-ID"]
    assert get(server, path, proxy, headers=headers)[0] == 400
    bad = _proxy_headers(2, **{"X-Instance-ID-Signature": sign_instance_id("wrong", "x")})
    assert get(server, path, proxy, headers=bad)[0] == 403
    # signature for A, id of C
    stolen = _proxy_headers(
        2, **{"X-Instance-ID-Signature": _proxy_headers(0)["X-Instance-ID-Signature"]}
    )
    assert get(server, path, proxy, headers=stolen)[0] == 403
    assert get(server, path, proxy, headers=_proxy_headers(2, **{"X-Tenant-ID": "other"}))[0] == 404
    unknown = "00000000-0000-4000-8000-0000000fffff"
    headers = _proxy_headers(
        2,
        **{"X-Instance-ID": unknown, "X-Instance-ID-Signature": sign_instance_id(SECRET, unknown)},
    )
    assert get(server, path, proxy, headers=headers)[0] == 404


def _raw(port: int, data: bytes, source: str = A) -> bytes:
    with connect("127.0.0.1", port, timeout=5, source=source) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:") and len(rest) >= int(
                        line.split(b":")[1]
                    ):
                        return out
        return out


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


SMUGGLING = [
    # a bare CR or LF inside a value, trying to hide X-Forwarded-For from the check
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\rX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    # obsolete line folding and whitespace before the colon
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 1.2.3.4\r\n  , 5.6.7.8\r\n\r\n",
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For : 1.2.3.4\r\n\r\n",
    # a second request hidden in a body framed two ways
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    # duplicated TTL header, lower-cased XFF
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nx-forwarded-for: 1.2.3.4\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    # a GET with a body
    b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
]


@pytest.mark.parametrize("request_bytes", SMUGGLING, ids=range(len(SMUGGLING)))
def test_header_smuggling_does_not_get_a_token(server: ServerThread, request_bytes: bytes) -> None:
    response = _raw(server.port, request_bytes)
    statuses = [
        int(line.split(b" ", 2)[1])
        for line in response.split(b"\r\n")
        if line.startswith(b"HTTP/1.")
    ]
    assert statuses and all(400 <= s < 500 for s in statuses), response[:300]


# ---------------------------------------------------------------------------------------------
# admin API, rate limit, config


def test_admin_api(server: ServerThread) -> None:
    assert server.admin("GET", "/v1/instances", token="wrong")[0] == 401
    assert server.admin("GET", "/v1/instances", token="")[0] == 401
    status, body = server.admin(
        "POST", "/v1/instances", {"spec": {"name": "x", "launch_index": -1}}
    )
    assert status == 400 and body["error"].startswith("launch_index:")
    for spec in (
        {"name": "x", "user_data_file": "/etc/shadow"},
        {"name": "x", "keys": [{"name": "k", "public_key_file": "/root/.ssh/id_rsa.pub"}]},
        {"name": "x", "files": {"/etc/x": "/etc/shadow"}},
        {"name": "x", "files": {"/etc/x": {"source": "/etc/shadow"}}},
    ):
        status, body = server.admin("POST", "/v1/instances", {"spec": spec})
        assert status == 400 and "file references" in body["error"], body
    taken = guest_spec(7, uuid="00000000-0000-4000-8000-00000000aaaa")
    taken["networks"][0]["subnets"][0]["ips"] = [A]
    assert server.admin("POST", "/v1/instances", {"spec": taken})[0] == 409
    status, body = server.admin(
        "POST", "/v1/instances", {"spec": guest_spec(9), "imds": "sometimes"}
    )
    assert status == 400 and body["error"].startswith("imds:")
    # register, see, replace, remove
    ip = guest_ip(9)
    assert server.admin("POST", "/v1/instances", {"spec": guest_spec(9)})[0] == 201
    assert get(server, "/latest/meta-data/hostname", ip)[2] == b"guest-9.novalocal"
    uuid = guest_spec(9)["uuid"]
    renamed = guest_spec(9, hostname="renamed")
    assert server.admin("PUT", f"/v1/instances/{uuid}", {"spec": renamed})[0] == 200
    assert get(server, "/latest/meta-data/hostname", ip)[2] == b"renamed.novalocal"
    assert uuid in server.admin("GET", "/v1/instances")[1]["instances"]
    assert server.admin("DELETE", f"/v1/instances/{uuid}")[0] == 204
    assert server.admin("DELETE", f"/v1/instances/{uuid}")[0] == 404
    assert get(server, "/latest/meta-data/hostname", ip)[0] == 404


def test_head_answers_like_get_without_a_body(server: ServerThread) -> None:
    """One keep-alive connection: HEAD, GET, HEAD. HEAD has GET's status and headers (length
    included) and no body, and the connection stays usable after it."""
    conn = GuestConnection("127.0.0.1", server.port, source=A)
    try:
        seen = []
        for method in ("HEAD", "GET", "HEAD"):
            conn.request(method, "/latest/meta-data/instance-id")
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders() if k.lower() != "date"}
            seen.append((method, resp.status, headers, resp.read()))
    finally:
        conn.close()
    (_, s1, h1, b1), (_, s2, h2, b2), (_, s3, h3, b3) = seen
    assert s1 == s2 == s3 == 200
    assert b2.startswith(b"i-") and len(b2) > 2
    assert b1 == b3 == b""
    assert h1 == h2 == h3
    assert h1["content-length"] == str(len(b2))


def test_health(server: ServerThread) -> None:
    assert get(server, "/healthz", "127.9.9.9")[0] == 200
    status, _, body = http_request(server.admin_port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_rate_limit(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path, rate=0.001, burst=5))
    try:
        assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(0)})[0] == 201
        statuses = [get(srv, "/latest/meta-data/hostname")[0] for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        assert get(srv, "/latest/meta-data/hostname", B)[0] == 404  # others are not throttled
    finally:
        srv.stop()


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    now[0] += 10
    limiter.sweep()
    assert len(limiter) == 0


def test_config(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="shared_secret"):
        ServiceConfig(mode="proxy", proxy_addresses=("127.0.0.1",))
    with pytest.raises(SpecError, match="proxy_addresses"):
        ServiceConfig(mode="proxy", shared_secret="s")
    path = tmp_path / "serve.yaml"
    path.write_text("listen: 127.0.0.1:9999\nrate: 10\nmode: direct\n")
    config = load_config(path)
    assert config.listen == ("127.0.0.1:9999",) and config.rate == 10.0
    path.write_text("lisen: 1\n")
    with pytest.raises(SpecError, match="lisen"):
        load_config(path)
    # what a ready line prints, parse_listen reads back (IPv6 in brackets)
    for host, port in (("127.0.0.1", 8775), ("::1", 8775), ("fe80::1", 0), ("0.0.0.0", 1)):
        assert parse_listen(listen_text(host, port)) == (host, port)
    assert listen_text("::1", 80) == "[::1]:80"


def test_graceful_stop_closes_the_port(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path))
    port = srv.port
    keepalive = connect("127.0.0.1", port)
    srv.stop()
    keepalive.close()
    with pytest.raises(ConnectionRefusedError):
        connect("127.0.0.1", port, source="127.0.0.1", timeout=2).close()


# ---------------------------------------------------------------------------------------------
# fuzzing: no 500, no crash, isolation holds


METHODS = st.sampled_from(
    ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE", "G\x00T", "get"]
)
SEGMENTS = st.sampled_from(
    ["latest", "2009-04-04", "meta-data", "openstack", "api", "token", "password", "user-data",
     "public-keys", "0", "openssh-key", "..", ".", "", "%2e%2e", "nocloud", "content", "0000",
     "meta_data.json", "dynamic", "ec2", "\u00e9", "%00", "a" * 300]
)  # fmt: skip
HEADER_NAMES = st.sampled_from(
    [TTL, TOKEN, "X-Forwarded-For", "X-Instance-ID", "X-Tenant-ID", "X-Instance-ID-Signature",
     "Content-Length", "Transfer-Encoding", "Host", "Connection"]
)  # fmt: skip
HEADER_VALUES = st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=40
) | st.sampled_from(["60", "0", "-1", "chunked", "close", "99999999999999999999"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=METHODS,
    path=st.lists(SEGMENTS, max_size=6).map(lambda s: "/" + "/".join(s)),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    body=st.binary(max_size=64),
)
def test_fuzz_requests(
    server: ServerThread, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    response = _raw(server.port, data, B)
    status = _status(response)
    assert status == 0 or status < 500, response[:300]
    if status == 200:  # whatever got through, it is B's or public data, never A's or C's
        assert guest_spec(0)["uuid"].encode() not in response
        assert A.encode() not in response and C.encode() not in response
    assert get(server, "/healthz", B)[0] == 200  # still alive
