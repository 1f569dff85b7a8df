"""What every verb shares: exit codes, the usage error, KEY=VALUE parsing."""

from __future__ import annotations

from configdrive.errors import ConfigDriveError, SpecError

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "UsageError", "pair"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(ConfigDriveError):
    """Bad command-line input (exit 2)."""


def pair(text: str, flag: str) -> tuple[str, str]:
    """Split ``KEY=VALUE``; anything else is a SpecError on ``flag``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(flag, f"{text!r} is not of the form KEY=VALUE")
    return key, value
