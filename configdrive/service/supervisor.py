"""Several server processes on the same ports: ``configdrive serve`` with ``workers: N``.

One Python process serves about 30k requests/s here; under a boot storm its queue, not its
handlers, makes the tail latency (256 requests in flight at 30k/s wait ~8.5 ms each). N worker
processes share each metadata listener through SO_REUSEPORT, so the kernel spreads incoming
connections over them and no worker accepts for another.

How it runs:

- the supervisor opens the store once (schema, the shared IMDSv2 key) so workers never race
  to create them, and *reserves* every metadata port: a socket bound with SO_REUSEPORT but
  never listening holds the port (port 0 becomes a fixed one every worker then binds) without
  receiving connections;
- it starts N workers (fresh interpreters; their settings, secrets included, on stdin, never
  in argv); each runs :func:`configdrive.service.server.run` on the reserved ports, loads every
  instance from the store and polls it, as separate servers on one store always do. Only
  worker 0 runs the admin API; its writes reach the other workers within ``poll_interval``;
- it reports ready once every worker is listening; a worker that fails to start stops them
  all with that worker's error;
- a worker that dies later is started again (the listeners' other workers keep serving
  meanwhile); more than ``MAX_RESTARTS`` restarts within ``RESTART_WINDOW`` seconds stop the
  service with an error instead of looping;
- SIGTERM/SIGINT go to every worker, which finish their in-flight requests
  (``shutdown_timeout``); workers get SIGTERM from the kernel if the supervisor itself dies.

Per-worker state: the per-instance rate limit is counted in each worker, so a guest whose
connections land on several workers may get up to N times ``rate``/``burst``. IMDSv2 tokens
are HMAC-signed with the key in the store, so a token minted by one worker is valid at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from configdrive.errors import ConfigDriveError
from configdrive.service.config import (
    ServiceConfig,
    config_from_mapping,
    listen_text,
    parse_listen,
)

__all__ = ["Supervisor", "WorkerError", "reserve_ports", "worker_main"]

log = logging.getLogger("configdrive.service")

START_TIMEOUT = 120.0  # seconds for a worker to load the store and listen
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
PR_SET_PDEATHSIG = 1
WORKER_ENTRY = "from configdrive.service.supervisor import worker_main; worker_main()"


class WorkerError(ConfigDriveError):
    """A worker process could not start, or kept dying."""


@contextlib.contextmanager
def reserve_ports(listen: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Bind (never listen) an SO_REUSEPORT socket on each ``HOST:PORT`` and yield the same
    list with every port 0 replaced by the port the kernel chose; release them at the end."""
    held: list[socket.socket] = []
    resolved = []
    try:
        for text in listen:
            host, port = parse_listen(text)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise WorkerError(f"cannot bind {text}: {exc.strerror}") from None
            resolved.append(listen_text(host, int(sock.getsockname()[1])))
        yield tuple(resolved)
    finally:
        for sock in held:
            sock.close()


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux); exit if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def worker_main() -> None:
    """A worker's entry point: settings on stdin (JSON), one JSON line on stdout once
    listening (or ``{"error": …}``), then :func:`server.run` until SIGTERM."""
    order = json.loads(sys.stdin.readline())
    index = int(order["index"])
    _die_with_parent(int(order["parent"]))
    logging.basicConfig(
        level=int(order["log_level"]),
        format=f"%(levelname)s %(name)s[worker {index}]: %(message)s",
    )
    out = sys.stdout

    def report(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            out.write(json.dumps(message) + "\n")
            out.flush()

    from configdrive.service.server import Running, run

    def ready(running: Running) -> None:
        report(running.describe())

    try:
        run(config_from_mapping(order["config"]), ready=ready, reuse_port=True)
    except KeyboardInterrupt:  # SIGINT to the whole process group before the handlers
        pass
    except Exception as exc:
        report({"error": str(exc) or type(exc).__name__})
        raise SystemExit(1) from None


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[str]
    state: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Run ``config.workers`` server processes on shared listeners until SIGTERM/SIGINT."""

    def __init__(self, config: ServiceConfig) -> None:
        if config.workers < 2:
            raise WorkerError("the supervisor is for 2 or more workers")
        self.config = config
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._restarts: list[float] = []

    # -- workers ------------------------------------------------------------------------------

    def _worker_config(self, index: int, listen: tuple[str, ...]) -> ServiceConfig:
        return self.config.with_(
            listen=listen,
            admin_listen=self.config.admin_listen if index == 0 else None,
            workers=1,
        )

    def _spawn(self, index: int, listen: tuple[str, ...]) -> _Worker:
        order = {
            "index": index,
            "parent": os.getpid(),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "config": self._worker_config(index, listen).to_mapping(),
        }
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_ENTRY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(order) + "\n")
        process.stdin.close()
        worker = _Worker(index, process)
        self._workers[index] = worker
        return worker

    def _await_ready(self, pending: list[_Worker]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting: dict[int, _Worker] = {}
        for w in pending:
            assert w.process.stdout is not None
            waiting[w.process.stdout.fileno()] = w
        while waiting:
            if self._stopping:  # a signal while starting: the caller stops everything
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(
                    f"{len(waiting)} worker(s) not listening after {START_TIMEOUT:g} s"
                )
            readable, _, _ = select.select(list(waiting), [], [], min(left, 0.5))
            for fd in readable:
                worker = waiting.pop(fd)
                assert worker.process.stdout is not None
                line = worker.process.stdout.readline()
                if not line:
                    raise WorkerError(
                        f"worker {worker.index} exited with code {worker.process.wait()} "
                        "before listening (its log is above)"
                    )
                message = json.loads(line)
                if "error" in message:
                    raise WorkerError(f"worker {worker.index}: {message['error']}")
                worker.state = message

    def _stop_all(self) -> None:
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + self.config.shutdown_timeout + 5
        for worker in self._workers.values():
            try:
                worker.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time: killing it", worker.index)
                worker.process.kill()
                worker.process.wait(5)
            if worker.process.stdout is not None:
                worker.process.stdout.close()

    def _restart(self, worker: _Worker, listen: tuple[str, ...]) -> None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            raise WorkerError(
                f"workers died {len(self._restarts)} times within {RESTART_WINDOW:g} s",
                hint="see the workers' log lines above",
            )
        log.error(
            "worker %d (pid %s) exited with code %s: starting it again",
            worker.index,
            worker.process.pid,
            worker.process.returncode,
        )
        if worker.process.stdout is not None:
            worker.process.stdout.close()
        replacement = self._spawn(worker.index, listen)
        try:
            self._await_ready([replacement])
        except WorkerError as exc:  # the others keep serving; the next tick tries again
            log.error("%s", exc)
            if replacement.process.poll() is None:
                replacement.process.kill()
                replacement.process.wait(5)

    # -- the whole run ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def state(self) -> dict[str, Any]:
        """What the ready line reports: listeners, admin address, worker pids."""
        first = self._workers[0].state
        return {
            "listen": first.get("listen", []),
            "admin": first.get("admin"),
            "workers": [self._workers[i].state.get("pid") for i in sorted(self._workers)],
        }

    def run(self, ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Start the workers, call ``ready`` once all listen, supervise until a signal."""
        from configdrive.service.server import prepare_store

        prepare_store(self.config)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            with reserve_ports(self.config.listen) as listen:
                try:
                    self._await_ready([self._spawn(i, listen) for i in range(self.config.workers)])
                    if self._stopping:
                        return
                    log.warning(
                        "serving on %s with %d workers (pids %s)",
                        ", ".join(listen),
                        self.config.workers,
                        ", ".join(str(w.process.pid) for w in self._workers.values()),
                    )
                    if ready is not None:
                        ready(self.state())
                    self._supervise(listen)
                finally:
                    log.warning("shutting down %d workers", len(self._workers))
                    self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self, listen: tuple[str, ...]) -> None:
        while not self._stopping:
            time.sleep(0.5)
            for worker in list(self._workers.values()):
                if worker.process.poll() is not None and not self._stopping:
                    self._restart(worker, listen)
