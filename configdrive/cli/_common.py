"""What every verb shares: exit codes, the usage error, KEY=VALUE parsing, optional extras."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable

from configdrive.errors import ConfigDriveError, SpecError

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTRA_MODULES",
    "REQUIRED",
    "UsageError",
    "missing_extra",
    "pair",
    "progress",
    "require_extra",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(ConfigDriveError):
    """Bad command-line input (exit 2)."""


def pair(text: str, flag: str) -> tuple[str, str]:
    """Split ``KEY=VALUE``; anything else is a SpecError on ``flag``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(flag, f"{text!r} is not of the form KEY=VALUE")
    return key, value


# The optional dependencies (pyproject.toml [project.optional-dependencies]) by the top-level
# module a verb imports: a plain `pip install configdrive` has none of them, and `build`,
# `inspect`, `register`, `image`, `tune-image` and the guest verbs on the qemu backend need none.
EXTRA_MODULES = {
    "aiohttp": "service",
    "psycopg": "service",
    "uvloop": "service",
    "matplotlib": "bench",
    "libvirt": "virt",
}


class MissingExtra(ConfigDriveError):
    """A verb needs an optional dependency this installation lacks (exit 1: the input is fine,
    the installation is not)."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        super().__init__(
            f"{what} needs {module}, from the '{extra}' extra, which is not installed",
            hint=f"pip install 'configdrive[{extra}]'",
        )
        self.module = module
        self.extra = extra


# What each extra's verbs cannot start without (uvloop is used when present; psycopg only for a
# PostgreSQL store, reported by :func:`missing_extra` when it is first imported).
REQUIRED = {"service": "aiohttp", "bench": "matplotlib", "virt": "libvirt"}


def progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Where a long command reports its steps: stderr as ``-- step``, or nowhere under --json."""
    if getattr(args, "json", False):
        return None
    return lambda message: print(f"-- {message}", file=sys.stderr, flush=True)


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra``'s required module can be imported."""
    module = REQUIRED[extra]
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(what, module, extra)


def missing_extra(exc: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """The :class:`MissingExtra` an import error stands for, if it names an optional module."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_MODULES.get(top)
    return None if extra is None else MissingExtra(what, top, extra)
