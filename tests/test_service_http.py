"""The guest-facing HTTP/1.1 layer (configdrive.service.http): parser rules and connection
behaviour (pipelining, HEAD, HTTP/1.0 keep-alive, 100-continue, a peer that does not read)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configdrive.service.config import ServiceConfig
from configdrive.service.http import BadRequest, parse_head
from configdrive.service.testing import ServerThread, connect, guest_ip, guest_spec

A = guest_ip(0)


def _config(tmp: Path, **changes: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "listen": ("127.0.0.1:0",),
        "admin_listen": "127.0.0.1:0",
        "admin_token": "t",
        "store": str(tmp / "md.db"),
        "access_log": "off",
    }
    return ServiceConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(_config(tmp_path_factory.mktemp("http"), rate=0))
    assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(0)})[0] == 201
    yield srv
    srv.stop()


def read_response(sock_file: Any, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One response off a socket's file (http.client's parser, the client side's judge)."""
    response = http.client.HTTPResponse(_Wrap(sock_file), method=method)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


class _Wrap:
    """What http.client.HTTPResponse wants (a socket with makefile), over a file that
    outlives one response: its close() is left to the test."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return _Unclosed(self._f)


class _Unclosed:
    def __init__(self, f: Any) -> None:
        self._f = f

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# the parser


def test_parse_head_reads_a_request() -> None:
    request = parse_head(
        b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"X-aws-ec2-metadata-token:  tok \r\nAccept: */*"
    )
    assert (request.method, request.path, request.query, request.version) == (
        "GET",
        "/latest/meta-data/",
        "x=1",
        (1, 1),
    )
    assert request.getall("x-aws-ec2-metadata-token") == ["tok"]
    assert request.get("host") == "169.254.169.254"
    absolute = parse_head(b"GET http://169.254.169.254:80/openstack?y HTTP/1.0")
    assert (absolute.path, absolute.query, absolute.version) == ("/openstack", "y", (1, 0))


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /", 400),
        (b"GET / HTTP/1.1\nHost: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\rY: z", 400),
        (b"GET / HTTP/3.0\r\nHost: x", 505),
        (b"GET / HTTP/1.1x\r\nHost: x", 400),
        (b"GET / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded", 400),
        (b"GET / HTTP/1.1\r\nHo st: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nNoColon", 400),
        (b"GET / HTTP/1.1\r\nHost: x\x01", 400),
        (b"GET ftp://x/ HTTP/1.1\r\nHost: x", 400),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x", 400),
        (b"G\xc3T / HTTP/1.1\r\nHost: x", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 64 + b"Host: x", 431),
    ],
)
def test_parse_head_refuses(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_head(head)
    assert caught.value.status == status


# ---------------------------------------------------------------------------------------------
# connections


def test_pipelined_requests_are_answered_in_order(server: ServerThread) -> None:
    paths = ["/latest/meta-data/hostname", "/openstack/latest/user_data", "/nope", "/healthz"]
    sock = connect("127.0.0.1", server.port, source=A)
    with sock, sock.makefile("rb") as f:
        sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
        answers = [read_response(f) for _ in paths]
    assert [a[0] for a in answers] == [200, 200, 404, 200]
    assert answers[0][2] == b"guest-0.novalocal"
    assert answers[1][2] == guest_spec(0)["user_data"].encode()
    assert answers[3][2] == b"ok"


def test_head_has_the_length_but_no_body(server: ServerThread) -> None:
    sock = connect("127.0.0.1", server.port, source=A)
    with sock, sock.makefile("rb") as f:
        sock.sendall(b"HEAD /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(f, "HEAD")
        assert (status, headers["content-length"], body) == (200, "17", b"")
        assert read_response(f)[2] == b"ok"  # nothing stray between the two answers


def test_http10_keeps_the_connection_only_when_asked(server: ServerThread) -> None:
    sock = connect("127.0.0.1", server.port, source=A)
    with sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(f)
        assert (status, headers["connection"]) == (200, "keep-alive")
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(f)
        assert (status, headers["connection"]) == (200, "close")
        assert f.read() == b""  # closed


def test_a_password_post_with_expect_100_continue(tmp_path: Path) -> None:
    srv = ServerThread(_config(tmp_path))
    try:
        assert srv.admin("POST", "/v1/instances", {"spec": guest_spec(0)})[0] == 201
        sock = connect("127.0.0.1", srv.port, source=A)
        with sock, sock.makefile("rb") as f:
            sock.sendall(
                b"POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
            sock.sendall(b"s3cret")
            assert read_response(f)[0] == 200
            sock.sendall(b"GET /openstack/latest/password HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f)[2] == b"s3cret"
    finally:
        srv.stop()


def test_a_peer_that_does_not_read_is_paused_and_others_are_served(server: ServerThread) -> None:
    """20,000 pipelined requests (16 MB of answers) from a peer that reads nothing until it
    has sent them all: the server holds back (its unsent answers stay near the transport's
    high-water mark instead of growing with the queue), serves another peer meanwhile, and
    answers all 20,000 in order once the peer reads."""
    count = 20_000
    request = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.bind((A, 0))
    sock.connect(("127.0.0.1", server.port))
    sender = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
    sender.start()
    time.sleep(2)
    held = [c._transport.get_write_buffer_size() for c in server.running.server.connections]
    assert held and max(held) < 1 << 20, held  # 16 MB without backpressure
    other = connect("127.0.0.1", server.port, source=guest_ip(1))
    with other, other.makefile("rb") as f:
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"ok"
    with sock, sock.makefile("rb") as f:
        sock.settimeout(60)
        seeds = set()
        for _ in range(count):
            status, _, body = read_response(f)
            assert status == 200
            seeds.add(json.loads(body)["random_seed"])
        sender.join(30)
        assert not sender.is_alive()
    assert len(seeds) == count  # each a fresh random_seed
