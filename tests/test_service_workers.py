"""`configdrive serve --workers N`: several processes on one port (SO_REUSEPORT), supervised.

Each test runs the real CLI as its own process tree and talks to it over loopback as guests
would (each guest its own 127.x source address). Which worker answered is read from the
access log's ``pid`` field, written by the workers themselves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from configdrive.service.testing import connect, guest_ip, guest_spec, http_request, serve_process

TOKEN = "admin-token"
HANG_GUARD = 60.0  # seconds a wait may take before the test fails as hung (no speed bound)


def _settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "listen": ["127.0.0.1:0"],
        "admin_listen": "127.0.0.1:0",
        "store": str(tmp_path / "md.db"),
        "access_log": str(tmp_path / "access.log"),
        "poll_interval": 0.2,
        "workers": 2,
        **extra,
    }


def _admin(address: str, method: str, path: str, body: Any = None) -> int:
    host, port = address.rsplit(":", 1)
    status, _, _ = http_request(
        int(port),
        path,
        method=method,
        host=host,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        body=None if body is None else json.dumps(body).encode(),
    )
    return status


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _pids_in_log(log: Path, path: str) -> set[int]:
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {e["pid"] for e in entries if e["path"] == path and e["status"] == 200}


def test_workers_share_the_port_and_serve_what_worker_0_registered(tmp_path: Path) -> None:
    with serve_process(tmp_path / "serve.json", _settings(tmp_path), admin_token=TOKEN) as served:
        workers = served.state["workers"]
        assert len(workers) == 2 and len(set(workers)) == 2
        assert served.proc.pid not in workers
        ip = guest_ip(3)
        assert (
            _admin(served.state["admin"], "POST", "/v1/instances", {"spec": guest_spec(3)}) == 201
        )

        # every worker loads the change from the store at its next poll (that one poll is
        # enough is counted in test_service_store.py): after that, each new connection
        # (whichever worker the kernel hands it to) sees the instance. The wait is a hang
        # guard, not a speed bound.
        def everyone_knows() -> bool:
            return all(
                http_request(served.port, "/latest/meta-data/local-ipv4", source=ip)[0] == 200
                for _ in range(20)
            )

        _wait(everyone_knows, HANG_GUARD)
        answers = [
            http_request(served.port, "/latest/meta-data/local-ipv4", source=ip) for _ in range(60)
        ]
        assert {(status, body) for status, _, body in answers} == {(200, ip.encode())}
        # the kernel spread those connections over both workers
        assert _pids_in_log(tmp_path / "access.log", "/latest/meta-data/local-ipv4") == set(workers)

        # an IMDSv2 token minted by one worker is accepted by the other
        status, _, token = http_request(
            served.port, "/latest/api/token", method="PUT", source=ip,
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )  # fmt: skip
        assert status == 200
        for _ in range(30):
            status, _, body = http_request(
                served.port, "/latest/meta-data/instance-id", source=ip,
                headers={"X-aws-ec2-metadata-token": token.decode()},
            )  # fmt: skip
            assert status == 200
        assert _pids_in_log(tmp_path / "access.log", "/latest/meta-data/instance-id") == set(
            workers
        )

        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        _wait(lambda: not any(_alive(pid) for pid in workers), HANG_GUARD)


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(tmp_path: Path) -> None:
    with serve_process(tmp_path / "serve.json", _settings(tmp_path, admin_listen=None)) as served:
        victim = served.state["workers"][1]
        os.kill(victim, signal.SIGKILL)
        # reaped by the supervisor, so every thread is gone and the listener closed (a killed
        # process shows as a zombie while its other threads still hold its files)
        _wait(lambda: not Path(f"/proc/{victim}").exists(), HANG_GUARD)
        # once its listener has left the port's group (connections already queued on it are
        # reset, see docs/service.md on tcp_migrate_req), no request fails
        # while the replacement starts: the survivor takes every connection
        began = time.monotonic()
        statuses = []
        while time.monotonic() - began < 3:
            statuses.append(http_request(served.port, "/healthz")[0])
        assert set(statuses) == {200}

        def replaced() -> bool:
            for _ in range(20):
                http_request(served.port, "/healthz")
            pids = _pids_in_log(tmp_path / "access.log", "/healthz")
            return len(pids - {victim, served.state["workers"][0]}) == 1

        _wait(replaced, HANG_GUARD)
        assert served.proc.poll() is None


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with serve_process(tmp_path / "serve.json", _settings(tmp_path, admin_listen=None)) as served:
        workers = served.state["workers"]
        served.proc.kill()
        served.proc.wait(10)
        _wait(lambda: not any(_alive(pid) for pid in workers), HANG_GUARD)
        # nothing listens on the port any more (connect() raises, never self-connects)
        with pytest.raises(ConnectionRefusedError):
            connect("127.0.0.1", served.port, source="127.0.0.1").close()


def _serve(tmp_path: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(settings))
    return subprocess.run(
        [sys.executable, "-m", "configdrive", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_taken_port_fails_the_start_with_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:  # a plain listener, no SO_REUSEPORT: the port is not shared
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, _settings(tmp_path, listen=[f"127.0.0.1:{port}"]))
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"error: cannot bind 127.0.0.1:{port}" in done.stderr


def test_worker_count_is_checked(tmp_path: Path) -> None:
    for bad in (0, 65):
        done = _serve(tmp_path, _settings(tmp_path, workers=bad))
        assert done.returncode == 2
        assert "error: workers: must be between 1 and 64" in done.stderr
    done = _serve(tmp_path, _settings(tmp_path, workers="two"))
    assert done.returncode == 2
    assert "error: workers: must be an integer or auto" in done.stderr
    flag = subprocess.run(
        [sys.executable, "-m", "configdrive", "serve", "--workers", "two", "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert flag.returncode == 2 and "'two' is not a number or auto" in flag.stderr


def test_auto_is_one_worker_per_usable_core(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    for argv in (["--workers", "auto"], ["--config", str(tmp_path / "auto.json")]):
        (tmp_path / "auto.json").write_text(json.dumps({"workers": "auto"}))
        done = subprocess.run(
            [sys.executable, "-m", "configdrive", "serve", *argv, "--check"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["workers"] == min(cores, 64)
    # and the CLI flag wins over the file
    done = subprocess.run(
        [sys.executable, "-m", "configdrive", "serve", "--config", str(tmp_path / "auto.json"),
         "--workers", "3", "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert json.loads(done.stdout)["workers"] == 3


def test_sigterm_while_the_workers_start_stops_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps(_settings(tmp_path, admin_listen=None)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "configdrive", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    started: list[int] = []

    def spawned() -> bool:
        started[:] = [int(p) for p in children.read_text().split()]
        return len(started) == 2

    _wait(spawned, HANG_GUARD)
    proc.send_signal(signal.SIGTERM)  # workers are importing, not yet listening
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "error" not in err
    print(f"ready line before SIGTERM: {out.strip() or 'none'}")
    assert not any(Path(f"/proc/{pid}").exists() for pid in started)


def test_workers_on_an_ipv6_and_an_ipv4_listener(tmp_path: Path) -> None:
    settings = _settings(tmp_path, admin_listen=None, listen=["[::1]:0", "127.0.0.1:0"])
    with serve_process(tmp_path / "serve.json", settings) as served:
        v6, v4 = served.state["listen"]
        assert v6.startswith("[::1]:") and v4.startswith("127.0.0.1:")
        for _ in range(10):
            assert (
                http_request(int(v6.rsplit(":", 1)[1]), "/healthz", host="::1", source="::1")[0]
                == 200
            )
            assert http_request(int(v4.rsplit(":", 1)[1]), "/healthz")[0] == 200
        assert _pids_in_log(tmp_path / "access.log", "/healthz") == set(served.state["workers"])


def test_a_worker_that_cannot_come_back_stops_the_service_after_the_restart_budget(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, admin_listen=None, access_log="off")
    with serve_process(tmp_path / "serve.json", settings) as served:
        store = Path(settings["store"])
        store.rename(tmp_path / "moved.db")
        store.mkdir()  # a directory where the store was: a new worker cannot open it
        victim = served.state["workers"][1]
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not Path(f"/proc/{victim}").exists(), HANG_GUARD)
        answered = 0
        while served.proc.poll() is None:  # the survivor serves while replacements fail
            try:
                answered += http_request(served.port, "/healthz", timeout=2)[0] == 200
            except ConnectionError:  # the service is stopping: refused, or reset in the queue
                pass
            time.sleep(0.05)
        assert answered > 0
        assert served.proc.wait(120) == 1
        err = served.proc.stderr.read() if served.proc.stderr else ""
    assert "cannot open SQLite store" in err
    assert "error: workers died 6 times within 60 s" in err
