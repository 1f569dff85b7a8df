"""`configdrive proxy-chain` in front of `configdrive serve --mode proxy`, both real processes.

A client bound to a loopback address is the guest with that fixed IP (see
configdrive.service.testing): the chain must hand it its own instance's metadata, and only
after the hops' latencies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from configdrive.cli._common import UsageError
from configdrive.cli.service import check_hops, parse_hop
from configdrive.service.proxychain import HopSpec
from configdrive.service.testing import guest_ip, guest_spec, http_request

SECRET = "chain-cli-secret"
TOKEN = "chain-cli-admin"
HOPS = ("haproxy:5ms", "forward:10ms", "agent:15ms")
CHAIN_LATENCY = 0.030
HANG_GUARD = 60.0  # seconds a wait may take before the test fails as hung (no speed bound)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "CONFIGDRIVE_SHARED_SECRET": SECRET,
        "CONFIGDRIVE_ADMIN_TOKEN": TOKEN,
    }


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configdrive", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env if env is not None else _env(),
    )


@dataclass
class Proc:
    """A long-running `configdrive VERB` whose first stdout line is its JSON ready state."""

    popen: subprocess.Popen[str]
    state: dict[str, Any]

    @classmethod
    def start(cls, *args: str) -> Proc:
        popen = subprocess.Popen(
            [sys.executable, "-m", "configdrive", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if not line:
            assert popen.stderr is not None
            error = popen.stderr.read()
            popen.wait(10)
            cls._close(popen)
            pytest.fail(f"configdrive {' '.join(args)} did not start: {error}", pytrace=False)
        return cls(popen, json.loads(line))

    @staticmethod
    def _close(popen: subprocess.Popen[str]) -> None:
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal, wait (20 s at most) and return the exit code."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(sig)
            return self.popen.wait(20)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            self._close(self.popen)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc, Path]]:
    """serve (proxy mode) + proxy-chain, sharing one SQLite store. Every listener binds port 0
    and the ready lines report the ports the kernel gave: no port is picked before its server
    binds it (two picks can be the same port, and a picked port can be taken meanwhile)."""
    tmp = tmp_path_factory.mktemp("chain-cli")
    store = f"sqlite:///{tmp / 'metadata.db'}"
    server = Proc.start(
        "serve", "--mode", "proxy", "--proxy-address", "127.0.0.1/32",
        "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--store", store, "--access-log", "off", "--poll-interval", "0.2",
    )  # fmt: skip
    chain: Proc | None = None
    try:
        chain = Proc.start(
            "proxy-chain", "--upstream", server.state["listen"][0],
            *(a for hop in HOPS for a in ("--hop", hop)),
            "--listen", "127.0.0.1:0", "--store", store, "--poll-interval", "0.2",
            "--front", guest_ip(5), "--front", f"{guest_ip(6)}=0",
        )  # fmt: skip
        yield server, chain, tmp
    finally:
        if chain is not None:
            chain.stop()
        server.stop()


def _register(server: Proc, tmp: Path, index: int) -> None:
    spec = tmp / f"guest-{index}.json"
    spec.write_text(json.dumps(guest_spec(index)))
    proc = _cli("register", "--spec", str(spec), "--url", f"http://{server.state['admin']}")
    assert proc.returncode == 0, proc.stderr


def test_ready_line_names_the_bound_listeners_and_the_hops(stack: tuple[Proc, Proc, Path]) -> None:
    _, chain, _ = stack
    state = chain.state
    assert state["ready"] is True
    assert state["listen"].startswith("127.0.0.1:") and _port(state["listen"]) > 0
    assert [(h["kind"], h["latency_ms"]) for h in state["hops"]] == [
        ("haproxy", 5.0),
        ("forward", 10.0),
        ("agent", 15.0),
    ]
    assert state["hops"][0]["listen"] == state["listen"]
    assert state["latency_ms"] == 30.0
    assert [f["guest"] for f in state["fronts"]] == [guest_ip(5), guest_ip(6)]
    ports = {_port(state["listen"]), *(_port(f["listen"]) for f in state["fronts"])}
    assert len(ports) == 3 and 0 not in ports


def test_a_front_stands_for_one_guest(stack: tuple[Proc, Proc, Path]) -> None:
    """What QEMU's guestfwd does: every guest connects from 127.0.0.1, each to its own front."""
    server, chain, tmp = stack
    for index in (5, 6):
        _register(server, tmp, index)
    path = "/latest/meta-data/local-ipv4"
    fronts = {f["guest"]: _port(f["listen"]) for f in chain.state["fronts"]}
    _wait(lambda: http_request(fronts[guest_ip(6)], path)[0] == 200, HANG_GUARD)
    for index in (5, 6):
        claim = {"X-Forwarded-For": guest_ip(0)}  # a guest cannot claim another's address
        status, _, body = http_request(fronts[guest_ip(index)], path, headers=claim)
        assert (status, body) == (200, guest_ip(index).encode())
    # on the shared listener, 127.0.0.1 is no instance's address
    assert http_request(_port(chain.state["listen"]), path)[0] == 404


def test_a_guest_gets_its_own_metadata_through_the_chain(stack: tuple[Proc, Proc, Path]) -> None:
    server, chain, tmp = stack
    entry = _port(chain.state["listen"])
    # registered after the chain started: the agent must see it through the shared store
    for index in (0, 1):
        _register(server, tmp, index)
    path = "/openstack/latest/meta_data.json"
    _wait(lambda: http_request(entry, path, source=guest_ip(1))[0] == 200, HANG_GUARD)
    for index in (0, 1):
        status, headers, body = http_request(entry, path, source=guest_ip(index))
        assert status == 200, body
        meta = json.loads(body)
        assert (meta["uuid"], meta["name"]) == (guest_spec(index)["uuid"], f"guest-{index}")
        assert headers["content-type"].startswith("application/json")
    status, _, body = http_request(entry, "/latest/meta-data/local-ipv4", source=guest_ip(1))
    assert (status, body) == (200, guest_ip(1).encode())
    # a guest the store does not know gets nova's 404, whatever it claims
    assert http_request(entry, path, source="127.9.9.9")[0] == 404
    forged = {"X-Instance-ID": guest_spec(0)["uuid"], "X-Tenant-ID": guest_spec(0)["project_id"],
              "X-Forwarded-For": guest_ip(0)}  # fmt: skip
    assert http_request(entry, path, source="127.9.9.9", headers=forged)[0] == 404
    status, _, body = http_request(entry, path, source=guest_ip(1), headers=forged)
    assert status == 200 and json.loads(body)["uuid"] == guest_spec(1)["uuid"]
    # the server trusts identity headers only from the chain's address (127.0.0.1)
    direct = _port(server.state["listen"][0])
    status, _, body = http_request(direct, path, source=guest_ip(1), headers=forged)
    assert status == 200 and json.loads(body)["uuid"] == guest_spec(1)["uuid"]


def test_every_request_pays_the_hops_latency(stack: tuple[Proc, Proc, Path]) -> None:
    server, chain, tmp = stack
    entry = _port(chain.state["listen"])
    _register(server, tmp, 2)
    path = "/latest/meta-data/hostname"
    _wait(lambda: http_request(entry, path, source=guest_ip(2))[0] == 200, HANG_GUARD)
    took = []
    for _ in range(10):
        began = time.perf_counter()
        status, _, body = http_request(entry, path, source=guest_ip(2))
        took.append(time.perf_counter() - began)
        assert (status, body) == (200, b"guest-2.novalocal")
    # a lower bound only (each hop sleeps its latency before it forwards): how close to it the
    # chain stays is speed (the first-boot benchmark, configdrive/benchmark.py), not checked here
    assert min(took) >= CHAIN_LATENCY, took


def test_shuts_down_cleanly_on_sigint(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'md.db'}"
    chain = Proc.start("proxy-chain", "--upstream", "127.0.0.1:9", "--hop", "haproxy",
                       "--hop", "agent", "--store", store)  # fmt: skip
    entry = _port(chain.state["listen"])
    # an empty store: the agent answers 404 for any guest before it forwards anything
    assert http_request(entry, "/openstack", source=guest_ip(0))[0] == 404
    assert chain.stop(signal.SIGINT) == 0
    # the listener is gone: refused (http_request never mistakes a self-connection, which a
    # just-freed port invites, for an answer)
    with pytest.raises(ConnectionRefusedError):
        http_request(entry, "/openstack", timeout=2)


@pytest.mark.parametrize(
    ("args", "env_secret", "message"),
    [
        (["--hop", "agent:1ms"], True, "error: hop: the first hop, and only the first, must be"),
        (["--hop", "haproxy", "--hop", "haproxy", "--hop", "agent"], True, "error: hop: the first"),
        (["--hop", "haproxy:1ms"], True, "error: hop: the chain needs exactly one agent hop"),
        (["--hop", "haproxy:3", "--hop", "agent"], True, "error: hop: 'haproxy:3': latency must"),
        (["--hop", "squid:1ms", "--hop", "agent"], True, "error: hop: 'squid:1ms' names no hop"),
        (["--hop", "haproxy", "--hop", "agent:11s"], True, "error: hop: 'agent:11s': latency is"),
        ([], True, "error: proxy-chain needs hops"),
        (["--hop", "haproxy", "--hop", "agent"], False, "error: the agent hop needs the shared"),
        (["--hop", "haproxy", "--hop", "agent", "--listen", "nowhere"], True, "error: listen: "),
        (["--hop", "haproxy", "--hop", "agent", "--front", "vm1"], True, "error: front: 'vm1': "),
        (["--hop", "haproxy", "--hop", "agent", "--front", "127.0.0.5=x"], True, "error: front:"),
        (["--hop", "haproxy", "--hop", "agent", "--poll-interval", "0"], True, "error: poll_int"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], env_secret: bool, message: str, tmp_path: Path
) -> None:
    env = _env()
    if not env_secret:
        del env["CONFIGDRIVE_SHARED_SECRET"]
    proc = _cli("proxy-chain", "--upstream", "127.0.0.1:9", "--store",
                f"sqlite:///{tmp_path / 'md.db'}", *args, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_parse_hop() -> None:
    assert parse_hop("haproxy") == HopSpec("haproxy", 0.0)
    assert parse_hop("agent:20ms") == HopSpec("agent", 0.02)
    assert parse_hop("forward:0.03s") == HopSpec("forward", 0.03)
    assert parse_hop("forward:250us") == HopSpec("forward", 0.00025)
    check_hops([HopSpec("haproxy"), HopSpec("forward"), HopSpec("agent"), HopSpec("forward")])
    with pytest.raises(UsageError, match="exactly one agent"):
        check_hops([HopSpec("haproxy"), HopSpec("agent"), HopSpec("agent")])


def test_a_taken_port_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _cli("proxy-chain", "--upstream", "127.0.0.1:9", "--hop", "haproxy", "--hop",
                    "agent", "--listen", f"127.0.0.1:{port}",
                    "--store", f"sqlite:///{tmp_path / 'md.db'}")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: proxy-chain cannot listen: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
