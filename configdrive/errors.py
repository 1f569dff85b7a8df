"""Exceptions raised by configdrive.

Every message states the rule that was broken; only the CLI turns them into
``error: … (hint: …)`` lines and exit codes::

    ConfigDriveError
    ├── SpecError          the instance spec breaks a rule (bad field value, limit exceeded);
    │                      carries ``field`` and ``rule``           → exit 2
    ├── DriveError         a drive cannot be laid out (does not fit, name not representable,
    │   │                  target exists without --force)            → exit 1
    │   └── InvalidDrive   an existing image is not a drive a guest would accept → exit 1
    └── ToolError          an external command failed; carries argv, returncode, stderr tail
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigDriveError", "DriveError", "InvalidDrive", "SpecError", "ToolError"]


class ConfigDriveError(Exception):
    """Base class of every error configdrive raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class SpecError(ConfigDriveError):
    """An instance spec (file or flags) breaks a rule: ``<field>: <rule broken>``."""

    def __init__(self, field: str, rule: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {rule}", hint=hint)
        self.field = field
        self.rule = rule


class DriveError(ConfigDriveError):
    """A drive image cannot be written (content does not fit, bad name, target exists)."""


class InvalidDrive(DriveError):
    """An image is not a config drive a guest would accept; the message says why."""


class ToolError(ConfigDriveError):
    """An external command failed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        import shlex

        tail = stderr.strip().splitlines()[-3:]
        detail = f": {' / '.join(tail)}" if tail else ""
        super().__init__(f"command failed with exit code {returncode}: {shlex.join(argv)}{detail}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
