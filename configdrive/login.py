"""Logging in to a guest over SSH: the port forward it is reached by, and waiting for a login.

A guest started with an SSH forward (``configdrive boot --wait ssh``, or ``--ssh``) has QEMU's
user network listen on a loopback port of this machine and forward it to the guest's port 22
(``hostfwd=tcp:127.0.0.1:PORT-:22``); nothing else reaches the guest. The port is chosen by
binding port 0 on 127.0.0.1 and releasing it just before QEMU binds it; if another process
takes it in between, QEMU fails to start and ``boot`` says so (and cleans up).

``wait_for_login`` runs the host's OpenSSH client until one login succeeds: the time users and
every published comparison quote as "create to SSH". A login is a real one, with the key the
instance was given, never a TCP connect: sshd listens well before cloud-init has written the
user's ``authorized_keys``.

The attempts are paced for OpenSSH 9.8 and later (Debian 13 ships 10.0), whose sshd penalises
a client address for what its connections did (``PerSourcePenalties``, on by default:
``authfail:5s``, ``noauth:1s``, enforcement once ``min:15s`` has accrued, up to ``max:10m``).
Every connection through QEMU's user network comes from the same address (its gateway), so a
poll that fails authentication once a second (sshd up, ``authorized_keys`` not yet written)
locks the host out after four attempts, for as long as the failures went on: on a slow guest,
longer than any timeout, long after the key is in place. A refused login therefore waits out
its own penalty (``AUTHFAIL_PAUSE``) before the next attempt, so the accrued penalty stays
under enforcement; connections refused before sshd listens cost nothing and are retried every
``poll`` seconds.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from configdrive.errors import ConfigDriveError
from configdrive.run import find_tool

__all__ = ["AUTHFAIL_PAUSE", "Login", "free_loopback_port", "pause_after", "wait_for_login"]

Progress = Callable[[str], None]

# sshd's default penalty for a failed authentication (5 s), plus a margin: one such failure per
# pause never accrues the 15 s that enforcement needs
AUTHFAIL_PAUSE = 6.0


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Login:
    """How to log in: ``user@127.0.0.1 -p port`` with the private key ``identity``."""

    port: int
    identity: Path
    user: str = "debian"

    def argv(self, command: Sequence[str], *, connect_timeout: int = 5) -> list[str]:
        """The ``ssh`` command line that runs ``command`` in the guest. The guest's host keys
        are new on every first boot, so they are neither checked nor remembered."""
        return [
            find_tool("ssh"),
            "-i", str(self.identity),
            "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={connect_timeout}",
            f"{self.user}@127.0.0.1",
            "--", *command,
        ]  # fmt: skip

    def run(
        self, command: Sequence[str], *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the guest (no shell on this side); never raises on its exit."""
        return subprocess.run(
            self.argv(command), capture_output=True, text=True, timeout=timeout, check=False
        )


def pause_after(error: str, poll: float) -> float:
    """Seconds to wait after a failed attempt that printed ``error`` (ssh's last line)."""
    if "Permission denied" in error:  # sshd counted an authentication failure against us
        return max(poll, AUTHFAIL_PAUSE)
    return poll


def wait_for_login(
    login: Login,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    poll: float = 1.0,
    progress: Progress | None = None,
) -> float:
    """Wait until ``ssh … true`` succeeds; return the seconds waited.

    Raises ConfigDriveError when ``timeout`` passes, or at once when ``alive()`` says the guest
    has stopped, with the last error ssh printed."""
    say = progress or (lambda _msg: None)
    if not login.identity.is_file():
        raise ConfigDriveError(f"identity {login.identity} is not a file")
    start = time.monotonic()
    deadline = start + timeout
    last = ""
    attempts = 0
    while True:
        attempts += 1
        try:
            proc = login.run(["true"], timeout=30)
            if proc.returncode == 0:
                waited = time.monotonic() - start
                say(f"ssh: {login.user}@127.0.0.1:{login.port} logged in after {waited:.1f} s")
                return waited
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            last = "ssh did not finish within 30 s"
        if alive is not None and not alive():
            raise ConfigDriveError(f"the guest stopped before an SSH login succeeded ({last})")
        if time.monotonic() >= deadline:
            raise ConfigDriveError(
                f"no SSH login as {login.user} on 127.0.0.1:{login.port} within {timeout:.0f} s "
                f"({attempts} attempts; last: {last})",
                hint="check the instance's key (--key-file) and `configdrive console NAME`",
            )
        if attempts == 1 or attempts % 30 == 0:
            say(f"ssh: waiting for a login ({last})")
        time.sleep(min(pause_after(last, poll), max(0.0, deadline - time.monotonic())))
