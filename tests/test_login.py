"""Waiting for an SSH login (configdrive.login): the pacing that keeps OpenSSH's per-source
penalties from locking the host out of a guest.

sshd 9.8+ (Debian 13's 10.0: ``sshd -T`` in its cloud image prints ``persourcepenalties
crash:90 authfail:5 noauth:1 grace-exceeded:10 refuseconnection:10 max:600 min:15 …``) adds a
violation's duration to its source's penalty, which then runs down in real time, and drops
the source's connections while what is left is at least ``min``. Tried against that image
through QEMU's user network: five failed logins a second apart, and the sixth connection was
dropped (``kex_exchange_identification: Connection closed by remote host``; the guest's
journal: ``drop connection … penalty: failed authentication``).
"""

from __future__ import annotations

import pytest

from configdrive.login import AUTHFAIL_PAUSE, pause_after

AUTHFAIL, MIN, MAX = 5.0, 15.0, 600.0  # sshd's defaults (sshd_config(5), PerSourcePenalties)
DENIED = "debian@127.0.0.1: Permission denied (publickey)."
ATTEMPT = 0.3  # one failed ssh attempt, start to exit, on a fast host


def most_penalty_accrued(pause: float, failures: int) -> float:
    """The largest penalty sshd holds against the host over ``failures`` failed logins made
    ``pause`` seconds after each other's end (sshd's accrual: each failure adds AUTHFAIL to
    what is left, capped at MAX; what is left runs down with time)."""
    left = most = 0.0
    for _ in range(failures):
        left = min(MAX, left + AUTHFAIL)
        most = max(most, left)
        left = max(0.0, left - (ATTEMPT + pause))
    return most


def test_a_refused_login_waits_out_its_own_penalty() -> None:
    pause = pause_after(DENIED, 1.0)
    assert pause == AUTHFAIL_PAUSE
    # paced, a guest whose authorized_keys comes late never blocks the host, however long
    assert most_penalty_accrued(pause, 1000) < MIN
    # polled every second, as before, the host was locked out within a few attempts
    assert most_penalty_accrued(1.0, 5) >= MIN


@pytest.mark.parametrize(
    "error",
    [
        "kex_exchange_identification: read: Connection reset by peer",  # nothing listens yet
        "kex_exchange_identification: Connection closed by remote host",
        "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
        "ssh did not finish within 30 s",
    ],
)
def test_anything_else_is_retried_at_the_poll_interval(error: str) -> None:
    assert pause_after(error, 1.0) == 1.0
    assert pause_after(error, 0.5) == 0.5
