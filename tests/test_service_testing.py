"""The test client itself (configdrive.service.testing): a port nothing listens on is refused,
never answered by the client's own request.

A client that binds its guest's address, ``(source, 0)``, and dials ``source:PORT`` right after
the listener on PORT closed can be handed PORT as its own source port; TCP's simultaneous open
then connects the socket to itself and ``http.client`` reads its own request back as a bad
status line. That made the tests that expect a refusal flaky.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from configdrive.service.testing import (
    SelfConnectError,
    connect,
    guest_ip,
    http_request,
    refusing_port,
)


def _just_closed() -> int:
    """A port that was listening on 127.0.0.1 a moment ago (what a stopped server leaves)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        return int(listener.getsockname()[1])


def test_a_socket_connected_to_itself_is_a_refusal() -> None:
    # the premise, with the kernel's choice made deterministic: source port = dialled port
    port = _just_closed()
    with socket.socket() as raw:
        raw.bind(("127.0.0.1", port))
        raw.connect(("127.0.0.1", port))  # no error: connected to itself
        assert raw.getsockname() == raw.getpeername()
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert raw.recv(100).startswith(b"GET / ")  # the "response" is the request
    # the same through connect(): a refusal, saying what happened
    port = _just_closed()
    with pytest.raises(SelfConnectError, match="connected to itself") as err:
        connect("127.0.0.1", port, source="127.0.0.1", source_port=port)
    assert isinstance(err.value, ConnectionRefusedError)


def test_a_just_closed_port_is_refused_every_time() -> None:
    for _ in range(300):
        with pytest.raises(ConnectionRefusedError):
            http_request(_just_closed(), "/", source="127.0.0.1", timeout=2)


def test_the_source_address_is_the_guest() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with connect("127.0.0.1", port, source=guest_ip(7)) as client:
            accepted, peer = listener.accept()
            accepted.close()
            assert peer == client.getsockname() and peer[0] == guest_ip(7)
            assert client.getsockname()[1] != port


def test_refusing_port_refuses_and_is_never_reused() -> None:
    with refusing_port() as port:
        for _ in range(50):
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port, source="127.0.0.1", timeout=2)
        with socket.socket() as other:  # held: no one else can bind it meanwhile
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        with pytest.raises(ConnectionRefusedError):
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
