"""The store: same tests on SQLite (default) and a real PostgreSQL (Debian's ``postgresql``).

PostgreSQL runs from a temporary cluster this module creates with ``initdb`` and ``pg_ctl``
(as the ``postgres`` user when the tests run as root), and removes afterwards. It listens on a
Unix socket in its own directory only: no TCP port to pick, so none that another process can
take between the pick and the start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from configdrive.service.config import ServiceConfig
from configdrive.service.registry import Registry
from configdrive.service.store import Store, open_store
from configdrive.service.testing import (
    ServerThread,
    guest_ip,
    guest_spec,
    http_request,
    serve_process,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HANG_GUARD = 60.0  # seconds a wait may take before the test fails as hung (no speed bound)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a libpq URI for its admin database (the socket
    directory percent-encoded as the host, the database name last)."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        found = shutil.which("initdb")
        if found is None:
            pytest.fail(
                "PostgreSQL is missing: apt-get install postgresql (scripts/setup --system)",
                pytrace=False,
            )
        initdb = Path(found)
    bindir = initdb.parent
    root = Path(tempfile.mkdtemp(prefix="configdrive-pg-"))
    root.chmod(0o755)
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses='' -c unix_socket_directories={root}"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@{quote(str(root), safe='')}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.tools)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'md.db'}"
    admin_dsn: str = request.getfixturevalue("postgres")
    import psycopg

    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def test_put_changes_delete(store: Store) -> None:
    assert store.generation() == 0
    g1 = store.put("a", '{"name": "a"}', "optional")
    g2 = store.put("b", '{"name": "b"}', "required")
    assert (g1, g2) == (1, 2)
    assert [c.uuid for c in store.changes(0)] == ["a", "b"]
    assert [c.uuid for c in store.changes(1)] == ["b"]
    g3 = store.put("a", '{"name": "a2"}', "optional")
    assert [(c.uuid, c.spec) for c in store.changes(2)] == [("a", '{"name": "a2"}')]
    g4 = store.delete("a")
    assert g4 == g3 + 1 and store.delete("a") is None and store.delete("zzz") is None
    (change,) = store.changes(g3)
    assert change.deleted and change.uuid == "a"
    assert store.generation() == g4


def test_password_once_and_settings(store: Store) -> None:
    assert store.get_password("a") is None
    assert store.set_password("a", "x" * 1020)
    assert not store.set_password("a", "other")
    assert store.get_password("a") == "x" * 1020
    first = store.setting("k", lambda: "one")
    assert first == "one" and store.setting("k", lambda: "two") == "one"


def test_concurrent_registration_and_reads(store_url: str) -> None:
    writer_store, reader_store = open_store(store_url), open_store(store_url)
    writers = [Registry(writer_store), Registry(open_store(store_url))]
    reader = Registry(reader_store)
    errors: list[BaseException] = []
    done = threading.Event()

    def write(registry: Registry, start: int) -> None:
        try:
            for i in range(start, start + 40):
                registry.register(guest_spec(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                reader.refresh()
                for uuid in reader.uuids():
                    view = reader.by_uuid(uuid)
                    assert view is not None and view.section("openstack/latest") is not None
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, n * 40)) for n, w in enumerate(writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    for t in readers:
        t.join(30)
    assert not errors, errors
    reader.refresh()
    assert len(reader) == 80
    assert reader.by_ip(guest_ip(79)) is not None
    assert reader.generation == writer_store.generation() == 80
    for r in (writer_store, reader_store, writers[1].store):
        r.close()


WRITER = """
import sys
from configdrive.service.store import open_store
store = open_store(sys.argv[1])
i = 0
while True:
    uuid = f"kill-{i}"
    store.put(uuid, '{"name": "%s"}' % uuid, "optional")
    print(uuid, flush=True)   # printed only after the commit returned
    i += 1
"""


def test_kill_9_loses_nothing_committed(store_url: str) -> None:
    open_store(store_url).close()  # schema first, so the writer starts writing at once
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_url], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed: list[str] = []
    deadline = time.monotonic() + 10 * HANG_GUARD  # 150 commits, however slow the disk
    while len(committed) < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    committed += [line.strip() for line in proc.stdout.read().splitlines()]
    proc.stdout.close()
    assert len(committed) >= 150
    store = open_store(store_url)
    present = {c.uuid for c in store.changes(0)}
    store.close()
    missing = [u for u in committed if u not in present]
    assert not missing, missing[:5]


def _config(store_url: str, poll: float) -> ServiceConfig:
    return ServiceConfig(
        listen=("127.0.0.1:0",),
        admin_listen="127.0.0.1:0",
        admin_token="admin",
        store=store_url,
        poll_interval=poll,
        access_log="off",
    )


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def test_change_reaches_every_server_at_its_next_poll(store_url: str) -> None:
    """A change committed through one server is served by another once that one has polled
    the store after the commit: counted in polls (``Registry.refreshes``), not in seconds."""
    poll = 0.3
    one, two = ServerThread(_config(store_url, poll)), ServerThread(_config(store_url, poll))
    try:
        ip = guest_ip(5)
        path = "/latest/meta-data/hostname"
        polled = two.running.service.registry
        assert http_request(two.port, path, source=ip)[0] == 404
        assert one.admin("POST", "/v1/instances", {"spec": guest_spec(5)})[0] == 201  # committed
        # the poll under way may have read the store before the commit; the one after it cannot
        seen = polled.refreshes
        _wait(lambda: polled.refreshes >= seen + 2, HANG_GUARD)
        assert http_request(two.port, path, source=ip)[0] == 200
        # both servers mint and accept the same tokens (the key is shared through the store)
        status, _, tok = http_request(
            one.port, "/latest/api/token", method="PUT", source=ip,
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )  # fmt: skip
        assert status == 200
        status, _, _ = http_request(
            two.port, "/latest/meta-data/hostname", source=ip,
            headers={"X-aws-ec2-metadata-token": tok.decode()},
        )  # fmt: skip
        assert status == 200
        assert one.admin("DELETE", f"/v1/instances/{guest_spec(5)['uuid']}")[0] == 204
        seen = polled.refreshes
        _wait(lambda: polled.refreshes >= seen + 2, HANG_GUARD)
        assert http_request(two.port, path, source=ip)[0] == 404
    finally:
        one.stop()
        two.stop()


def test_serve_cli_starts_and_stops_gracefully(tmp_path: Path) -> None:
    settings = {"listen": ["127.0.0.1:0"], "admin_listen": "127.0.0.1:0",
                "store": str(tmp_path / "md.db"), "access_log": str(tmp_path / "access.log")}  # fmt: skip
    env = {**os.environ, "CONFIGDRIVE_ADMIN_TOKEN": "tok"}
    with serve_process(tmp_path / "serve.json", settings, admin_token="tok") as served:
        assert http_request(served.port, "/healthz")[0] == 200
        spec = tmp_path / "guest.json"
        spec.write_text(json.dumps(guest_spec(0)))
        registered = subprocess.run(
            [sys.executable, "-m", "configdrive.cli.service", "register", "--spec", str(spec),
             "--url", f"http://{served.state['admin']}"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert registered.returncode == 0, registered.stderr
        assert (
            http_request(served.port, "/latest/meta-data/local-ipv4", source=guest_ip(0))[2]
            == guest_ip(0).encode()
        )
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0
    lines = (tmp_path / "access.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert any(e["path"] == "/latest/meta-data/local-ipv4" and e["status"] == 200 for e in entries)
    assert all({"ts", "peer", "instance", "method", "status", "ms"} <= set(e) for e in entries)
