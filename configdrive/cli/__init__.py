"""Command line: ``configdrive VERB …``.

Only this package turns exceptions into ``error: … (hint: …)`` lines and exit codes:
0 success, 1 failure (a drive a guest would reject, a guest that failed), 2 usage or bad input.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from configdrive import __version__
from configdrive.cli import drives, guests, lifecycle, service
from configdrive.cli._common import (
    EXIT_FAIL,
    EXIT_USAGE,
    UsageError,
    missing_extra,
)
from configdrive.errors import ConfigDriveError, SpecError

__all__ = ["main", "make_parser"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="configdrive",
        description="Give a new VM its metadata on a local drive: build and inspect config "
        "drives and NoCloud seeds in-process, boot guests with them, tune guest images.",
    )
    parser.add_argument("--version", action="version", version=f"configdrive {__version__}")
    parser.add_argument("--debug", action="store_true", help="log every step; tracebacks on error")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    drives.register(sub)
    lifecycle.register(sub)
    guests.register(sub)
    service.register(sub)
    return parser


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    suffix = f" (hint: {hint})" if hint else ""
    print(f"error: {message}{suffix}", file=sys.stderr)
    raise SystemExit(code)


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that every ``finally`` (guests stopped, work
    directories removed) runs as it does for Ctrl-C. ``serve`` and ``proxy-chain`` install
    their own handlers for a graceful stop."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    what = " ".join(v for v in (args.verb, getattr(args, "bench_verb", None)) if v)
    try:
        code: int = args.handler(args)
        return code
    except ModuleNotFoundError as exc:  # an extra's module, imported by the verb that needs it
        missing = missing_extra(exc, what)
        if missing is None or args.debug:
            raise
        _fail(str(missing), missing.hint, EXIT_FAIL)
    except (SpecError, UsageError) as exc:
        if args.debug:
            raise
        _fail(str(exc), exc.hint, EXIT_USAGE)
    except ConfigDriveError as exc:
        if args.debug:
            raise
        _fail(str(exc), exc.hint, EXIT_FAIL)
    except KeyboardInterrupt:
        _fail("interrupted", None, 130)
    except Terminated:
        _fail("terminated", None, 143)


if __name__ == "__main__":
    sys.exit(main())
