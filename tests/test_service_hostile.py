"""Hostile input against the metadata service (the ``hostile`` tier; loopback only, bounded).

Each test stands for one rule an attacker or a careless client would otherwise break:
deeply nested or oversized admin bodies, a store holding a row this code cannot load, idle
and slow connections past the open-file limit, user data without a token on a
non-EC2 tree, lax HTTP, an identity document's region, and POST over an existing instance.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configdrive.service.config import ServiceConfig
from configdrive.service.store import SQLiteStore
from configdrive.service.testing import (
    ServerThread,
    connect,
    guest_ip,
    guest_spec,
    http_request,
    serve_process,
)

pytestmark = pytest.mark.hostile

TOKEN = "X-aws-ec2-metadata-token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
ADMIN = "admin-token"
A, B = guest_ip(0), guest_ip(1)  # A: imds optional, B: imds required
STRANGER = "127.3.0.1"  # no instance owns it


def _config(tmp: Path, **changes: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "listen": ("127.0.0.1:0",),
        "admin_listen": "127.0.0.1:0",
        "admin_token": ADMIN,
        "store": str(tmp / "md.db"),
        "access_log": "off",
    }
    base.update(changes)
    return ServiceConfig(**base)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(_config(tmp_path))
    assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(0)})[0] == 201
    assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(1), "imds": "required"})[0] == 201
    yield srv
    srv.stop()


def post_raw(srv: ServerThread, body: bytes, path: str = "/v1/instances") -> tuple[int, Any]:
    status, _, raw = http_request(
        srv.admin_port,
        path,
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def nested(depth: int, leaf: Any = 1) -> str:
    """JSON text: ``leaf`` inside ``depth`` alternating lists and objects (built as text:
    json.dumps itself gives up near 1,000 levels)."""
    opens = "".join('{"k": ' if i % 2 else "[" for i in reversed(range(depth)))
    closes = "".join("}" if i % 2 else "]" for i in range(depth))
    return opens + json.dumps(leaf) + closes


def spec_body(spec: dict[str, Any], **raw: str) -> bytes:
    """``{"spec": spec}`` with the fields in ``raw`` given as JSON text."""
    text = json.dumps({"spec": spec})
    extra = "".join(f", {json.dumps(k)}: {v}" for k, v in raw.items())
    return (text[:-2] + extra + "}}").encode()


def generation(srv: ServerThread) -> int:
    return srv.running.service.registry.store.generation()


def served(srv: ServerThread, source: str = A) -> bool:
    status, _, body = http_request(srv.port, "/openstack/latest/meta_data.json", source=source)
    return status == 200 and json.loads(body)["uuid"] == guest_spec(0)["uuid"]


# ---------------------------------------------------------------------------------------------
# 1. nesting and size: a 400 before anything is stored, and a store that always loads


def test_a_deeply_nested_body_is_a_400_and_stores_nothing(server: ServerThread) -> None:
    before = generation(server)
    status, answer = post_raw(server, b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 400 and "nested" in answer["error"]
    status, answer = post_raw(server, spec_body(guest_spec(5), vendor_data=nested(1000)))
    assert status == 400 and "nested more than 64 levels" in answer["error"], answer
    assert generation(server) == before
    # the server is whole: a valid registration is a 201, served at once
    assert server.admin("POST", "/v1/instances", {"spec": guest_spec(6)})[0] == 201
    assert (
        http_request(server.port, "/openstack/latest/meta_data.json", source=guest_ip(6))[0] == 200
    )
    # within the limit is fine
    assert post_raw(server, spec_body(guest_spec(7), vendor_data=nested(60)))[0] == 201


def test_an_oversized_body_is_refused_before_parsing(server: ServerThread) -> None:
    before = generation(server)
    status, _ = post_raw(server, b'{"spec": {"name": "' + b"x" * (2 << 20) + b'"}}')
    assert status == 413
    assert generation(server) == before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    depth=st.integers(0, 3000),
    field=st.sampled_from(["vendor_data", "meta", "networks", "keys", "files", "spec", "body"]),
    leaf=_JSON,
    pad=st.integers(0, 300_000),
)
def test_fuzz_admin_bodies_never_500_never_half_written(
    server: ServerThread, depth: int, field: str, leaf: Any, pad: int
) -> None:
    """Whatever the depth and size: 201, 400, 409 or 413; a refusal stores nothing; the
    store keeps loading in a fresh server; registered guests keep being served."""
    value = nested(depth, leaf)
    if field == "body":
        body = value.encode()
    elif field == "spec":
        body = f'{{"spec": {value}}}'.encode()
    else:
        spec = guest_spec(9, user_data="#cloud-config\n#" + "x" * pad)
        spec.pop(field, None)
        body = spec_body(spec, **{field: value})
    before = generation(server)
    status, answer = post_raw(server, body)
    assert status in (201, 400, 409, 413), (status, answer)
    if status != 201:
        assert generation(server) == before
    assert served(server)
    # every row in the store loads in a server started now
    registry_copy = type(server.running.service.registry)(server.running.service.registry.store)
    registry_copy.refresh()
    assert len(registry_copy) == len(server.running.service.registry)


def _bad_rows(db: Path) -> None:
    """Rows an older or newer version could have written: too deep, not JSON, unknown imds,
    a spec field this version does not know."""
    store = SQLiteStore(db)
    store.put(
        "00000000-0000-4000-8000-0000000000a1",
        json.dumps(guest_spec(11, vendor_data=nested(500))),
        "optional",
    )
    store.put("00000000-0000-4000-8000-0000000000a2", "{not json", "optional")
    store.put("00000000-0000-4000-8000-0000000000a3", json.dumps(guest_spec(13)), "sometimes")
    store.put(
        "00000000-0000-4000-8000-0000000000a4", json.dumps(guest_spec(14, future=1)), "optional"
    )
    store.close()


def test_a_store_with_rows_this_code_cannot_load_is_still_served(tmp_path: Path) -> None:
    db = tmp_path / "md.db"
    store = SQLiteStore(db)
    store.put(guest_spec(0)["uuid"], json.dumps(guest_spec(0)), "optional")
    store.close()
    _bad_rows(db)
    settings_ = {
        "listen": ["127.0.0.1:0"],
        "admin_listen": None,
        "store": str(db),
        "access_log": "off",
        "poll_interval": 0.2,
    }
    log = tmp_path / "serve.log"
    with serve_process(tmp_path / "serve.json", settings_, log=log) as proc:
        status, _, body = http_request(proc.port, "/openstack/latest/meta_data.json", source=A)
        assert status == 200 and json.loads(body)["uuid"] == guest_spec(0)["uuid"]
        # a bad row written while it runs is skipped too, and later good rows still arrive
        store = SQLiteStore(db)
        store.put("00000000-0000-4000-8000-0000000000b1", "[]", "optional")
        store.put(guest_spec(15)["uuid"], json.dumps(guest_spec(15)), "optional")
        store.close()
        deadline = time.monotonic() + 10
        while (
            http_request(proc.port, "/openstack/latest/meta_data.json", source=guest_ip(15))[0]
            != 200
        ):
            assert time.monotonic() < deadline, "a good row behind a bad one never arrived"
            time.sleep(0.1)
    text = log.read_text()
    for suffix in ("a1", "a2", "a3", "a4", "b1"):
        assert f"instance 00000000-0000-4000-8000-0000000000{suffix}" in text, text
    assert "cannot be served, skipped" in text


# ---------------------------------------------------------------------------------------------
# 2. connections: timeouts, caps, the open-file limit


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reading and discarding what it sends);
    ``sock`` is closed here either way."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s")
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.monotonic() - start


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path, idle_timeout=1.0, head_timeout=60.0))
    try:
        idle = connect("127.0.0.1", srv.port, source=STRANGER)  # never sends a byte
        assert _closed_within(idle, 10) < 5
        kept = connect("127.0.0.1", srv.port, source=STRANGER)  # quiet after one request
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_within(kept, 10) < 5
    finally:
        srv.stop()


def test_a_slow_request_head_is_closed_though_bytes_keep_coming(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path, idle_timeout=60.0, head_timeout=1.0))
    try:
        slow = connect("127.0.0.1", srv.port, source=STRANGER)
        done = threading.Event()

        def drip() -> None:
            for byte in b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
                if done.is_set():
                    return
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            assert _closed_within(slow, 10) < 5
        finally:
            done.set()
            dripper.join()
        # a second head on a kept-alive connection has the same clock
        kept = connect("127.0.0.1", srv.port, source=STRANGER)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(5)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        kept.sendall(b"GET /heal")
        assert _closed_within(kept, 10) < 5
    finally:
        srv.stop()


def test_the_per_peer_cap(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path, max_connections_per_peer=4))
    try:
        assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(0)})[0] == 201
        held = [connect("127.0.0.1", srv.port, source=STRANGER) for _ in range(4)]
        extra = connect("127.0.0.1", srv.port, source=STRANGER)
        extra.settimeout(5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert served(srv)  # another address is not affected
        assert srv.running.guard.refused["per_peer"] >= 1
        for sock in [*held, extra]:
            sock.close()
    finally:
        srv.stop()


def test_more_idle_connections_than_the_fd_limit_do_not_starve_guests(tmp_path: Path) -> None:
    """The issue's attack: with a 256-descriptor limit, 320 idle connections from addresses
    no instance owns. Registered guests are still served, and the refusals are logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    db = tmp_path / "md.db"
    store = SQLiteStore(db)
    store.put(guest_spec(0)["uuid"], json.dumps(guest_spec(0)), "optional")
    store.close()
    settings_ = {
        "listen": ["127.0.0.1:0"],
        "admin_listen": None,
        "store": str(db),
        "access_log": "off",
        "idle_timeout": 120,
        "head_timeout": 120,
        "max_connections_per_peer": 64,
        "shutdown_timeout": 2,
    }
    log = tmp_path / "serve.log"
    held: list[socket.socket] = []
    with serve_process(tmp_path / "serve.json", settings_, log=log, nofile=256) as proc:
        try:
            for i in range(320):
                held.append(connect("127.0.0.1", proc.port, source=f"127.3.0.{1 + i % 10}"))
            time.sleep(0.5)
            for _ in range(5):
                status, _, body = http_request(
                    proc.port, "/openstack/latest/meta_data.json", source=A, timeout=5
                )
                assert status == 200 and json.loads(body)["uuid"] == guest_spec(0)["uuid"]
            assert len(_refused(held, want=320 - 192, within=20)) >= 320 - 256
        finally:
            for sock in held:
                sock.close()
    text = log.read_text()
    assert "refused a connection: at max_connections (192)" in text, text[-2000:]
    assert "closed a stranger's connection to make room for one" in text


def _refused(socks: list[socket.socket], *, want: int, within: float) -> list[socket.socket]:
    """The sockets the server answered with 503 (waiting up to ``within`` seconds for
    ``want`` of them: under load the server may still be accepting)."""
    refused: list[socket.socket] = []
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while len(refused) < want and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                sock.settimeout(1)
                try:
                    if sock.recv(64).startswith(b"HTTP/1.1 503"):
                        refused.append(sock)
                except (TimeoutError, ConnectionResetError):
                    pass
    return refused


# ---------------------------------------------------------------------------------------------
# 3. the token rule on every tree


DATA_PATHS = [
    "/latest/user-data",
    "/ec2/latest/meta-data/hostname",
    "/openstack/latest/user_data",
    "/openstack/latest/meta_data.json",
    "/openstack/2013-04-04/password",
    "/openstack/content/0000",
    "/nocloud/user-data",
    "/nocloud/meta-data",
    f"/nocloud/{guest_spec(1)['uuid']}/user-data",
]


def _token(port: int, source: str) -> str:
    status, _, body = http_request(
        port, "/latest/api/token", method="PUT", source=source, headers={TTL: "60"}
    )
    assert status == 200
    return body.decode()


def test_a_required_token_guards_every_tree(server: ServerThread) -> None:
    tok = _token(server.port, B)
    for path in DATA_PATHS:
        status, _, body = http_request(server.port, path, source=B)
        assert (status, body) == (401, b""), path
        status, _, _ = http_request(server.port, path, source=B, headers={TOKEN: tok})
        assert status in (200, 404), (path, status)  # 404: content/0000 (B injects no file)
    assert (
        http_request(server.port, "/openstack/latest/user_data", source=B, headers={TOKEN: tok})[0]
        == 200
    )
    assert http_request(server.port, "/nocloud/user-data", source=B, headers={TOKEN: tok})[0] == 200
    # an imds-optional guest is served without one
    assert http_request(server.port, "/openstack/latest/user_data", source=A)[0] == 200


def test_token_trees_is_a_per_tree_opt_out(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path, token_trees=("ec2", "nocloud")))
    try:
        assert (
            srv.admin("POST", "/v1/instances", {"spec": guest_spec(1), "imds": "required"})[0]
            == 201
        )
        assert http_request(srv.port, "/openstack/latest/user_data", source=B)[0] == 200
        assert http_request(srv.port, "/nocloud/user-data", source=B)[0] == 401
        assert http_request(srv.port, "/latest/user-data", source=B)[0] == 401
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------
# 4. strict HTTP


def _raw(port: int, data: bytes, source: str = A) -> bytes:
    sock = connect("127.0.0.1", port, source=source)
    try:
        sock.sendall(data)
        sock.settimeout(5)
        out = b""
        while chunk := sock.recv(65536):  # every one of these closes the connection
            out += chunk
        return out
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET /openstack\r\n\r\n", b"HTTP/1.1 400 "),  # HTTP/0.9
        (b"GET /openstack HTTP/2.0\r\nHost: x\r\n\r\n", b"HTTP/1.1 505 "),
        (b"GET /openstack HTTP/1.1\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),  # bare LF, request line
        (b"GET /openstack HTTP/1.1\r\nHost: x\n\r\n", b"HTTP/1.1 400 "),  # bare LF, header
        (b"GET /openstack HTTP/1.1\r\nHost: x\r\n\n", b"HTTP/1.1 400 "),  # bare LF, end of head
        (b"GET /openstack HTTP/1.2\r\nHost: x\r\n\r\n", b"HTTP/1.1 505 "),
        (b"GET /openstack HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),  # HTTP/1.1 without Host
        (b"GET /openstack HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /openstack HTTP/1.1\r\nHost : x\r\n\r\n", b"HTTP/1.1 400 "),  # space before :
        (b"GET /openstack HTTP/1.1\r\nHost: x\x00y\r\n\r\n", b"HTTP/1.1 400 "),  # NUL
        (b"GET  /openstack HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),  # two spaces
        (b"get /openstack HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),  # method case
        (b"GET /open\x7fstack HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
        (
            b"POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            b"HTTP/1.1 411 ",
        ),
        (
            b"POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            b"HTTP/1.1 400 ",
        ),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 5000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
        (b"GET https://169.254.169.254/openstack HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 "),
    ],
)
def test_lax_http_is_refused(
    server: ServerThread, request_bytes: bytes, status_line: bytes
) -> None:
    response = _raw(server.port, request_bytes)
    assert response.startswith(status_line), response[:200]
    assert b"meta_data.json" not in response and b"latest" not in response.partition(b"\r\n\r\n")[2]


def test_absolute_form_is_served_as_its_origin_form(server: ServerThread) -> None:
    for path in ("/openstack/latest/user_data", "/latest/meta-data/hostname", "/openstack"):
        origin = _raw(
            server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        for authority in ("169.254.169.254", "evil.example", "127.0.0.1:8775"):
            absolute = _raw(
                server.port,
                f"GET http://{authority}{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            )
            assert absolute.partition(b"\r\n")[0] == b"HTTP/1.1 200 OK"
            assert absolute.partition(b"\r\n\r\n")[2] == origin.partition(b"\r\n\r\n")[2]
    # no path at all is "/", the EC2 version list
    listing = _raw(
        server.port, b"GET http://169.254.169.254 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert listing.startswith(b"HTTP/1.1 200 ") and listing.endswith(b"\nlatest")


# ---------------------------------------------------------------------------------------------
# 5. small correctness gaps


@pytest.mark.parametrize(
    ("zone", "region"), [("us-east-1a", "us-east-1"), ("eu-west-3c", "eu-west-3"), ("nova", "nova")]
)
def test_identity_document_region(tmp_path: Path, zone: str, region: str) -> None:
    """botocore judges AWS-shaped zones: its region provider drops the zone's last letter."""
    srv = ServerThread(_config(tmp_path))
    try:
        spec = guest_spec(0, availability_zone=zone)
        spec["networks"][0]["subnets"][0]["ips"] = ["127.0.0.1"]  # botocore cannot pick a source
        assert srv.admin("POST", "/v1/instances", {"spec": spec})[0] == 201
        status, _, body = http_request(srv.port, "/latest/dynamic/instance-identity/document")
        assert status == 200
        document = json.loads(body)
        assert document["availabilityZone"] == zone and document["region"] == region
        if zone != "nova":
            fetcher = botocore.utils.InstanceMetadataRegionFetcher(
                timeout=5, num_attempts=1, base_url=f"http://127.0.0.1:{srv.port}"
            )
            assert fetcher.retrieve_region() == document["region"]
    finally:
        srv.stop()


def test_posting_an_existing_uuid_is_a_409_and_put_replaces(
    tmp_path: Path, server: ServerThread
) -> None:
    before = generation(server)
    changed = guest_spec(0, name="renamed")
    status, answer = post_raw(server, json.dumps({"spec": changed}).encode())
    assert status == 409 and "already registered" in answer["error"] and "PUT" in answer["hint"]
    assert generation(server) == before
    status, _, body = http_request(server.port, "/openstack/latest/meta_data.json", source=A)
    assert json.loads(body)["name"] == "guest-0"
    status, answer = server.admin("PUT", f"/v1/instances/{changed['uuid']}", {"spec": changed})
    assert status == 200
    status, _, body = http_request(server.port, "/openstack/latest/meta_data.json", source=A)
    assert json.loads(body)["name"] == "renamed"
    # the rule holds across servers sharing a store, before the other one has polled
    other = ServerThread(_config(tmp_path, poll_interval=3600))
    try:
        fresh = guest_spec(20)
        assert server.admin("POST", "/v1/instances", {"spec": fresh})[0] == 201
        assert other.admin("POST", "/v1/instances", {"spec": fresh})[0] == 409
    finally:
        other.stop()
    # a deleted instance may be created again
    assert server.admin("DELETE", f"/v1/instances/{fresh['uuid']}")[0] == 204
    assert server.admin("POST", "/v1/instances", {"spec": fresh})[0] == 201


def test_a_refused_post_leaves_no_trace_in_the_file(tmp_path: Path, server: ServerThread) -> None:
    """The 409 left no trace: no row, no generation, in the file itself."""
    db = Path(server.running.service.config.store)
    post_raw(server, json.dumps({"spec": guest_spec(0, name="again")}).encode())
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT spec FROM instances WHERE uuid = ?", (guest_spec(0)["uuid"],)
        ).fetchall()
    assert len(rows) == 1 and json.loads(rows[0][0])["name"] == "guest-0"
