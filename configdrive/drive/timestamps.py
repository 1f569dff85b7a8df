"""The one timestamp a drive carries, and how each filesystem records it.

A build takes a single instant, :func:`build_time`: ``SOURCE_DATE_EPOCH`` when it is set
(the reproducible-builds convention: whole seconds since 1970-01-01 UTC), else the clock,
truncated to whole seconds. Every date on the drive comes from it: the ISO9660 volume
descriptors, every directory record and Rock Ridge TF entry (``_isofmt``), the VFAT entries'
creation, write and access dates (:class:`DosStamp`) and the VFAT volume serial. With a spec
that names its ``uuid`` and a fixed ``SOURCE_DATE_EPOCH``, two builds differ only in the
``random_seed`` values (docs/formats.md, "Reproducible drives").

FAT keeps wall-clock time without a zone; configdrive writes UTC, as a guest's kernel reads it
when its clock is in UTC (the vfat ``tz=UTC`` view; mtools with ``TZ=UTC``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from configdrive.errors import SpecError

__all__ = [
    "DOS_EPOCH",
    "DOS_LAST",
    "SOURCE_DATE_EPOCH",
    "DosStamp",
    "build_time",
    "naive_utc",
    "volume_serial",
]

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
DOS_EPOCH = datetime(1980, 1, 1)  # fatgen103 "Date and Time Formats": the first FAT date
DOS_LAST = datetime(2107, 12, 31, 23, 59, 59)  # ... and the last (7-bit year from 1980)


def build_time(environ: Mapping[str, str] | None = None) -> datetime:
    """The build's instant (aware, UTC, whole seconds): ``SOURCE_DATE_EPOCH`` if set and not
    empty, else now. A value that is not a whole, non-negative number of seconds is an error,
    as the convention asks, rather than a silent fall back to the clock."""
    env = os.environ if environ is None else environ
    text = env.get(SOURCE_DATE_EPOCH, "")
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    if not (text.isascii() and text.isdigit()):
        raise SpecError(
            SOURCE_DATE_EPOCH,
            f"{text!r} is not a whole number of seconds since 1970-01-01 00:00:00 UTC",
            hint="e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)",
        )
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (OverflowError, OSError, ValueError):
        raise SpecError(SOURCE_DATE_EPOCH, f"{text} seconds is beyond the year 9999") from None


def naive_utc(ts: datetime) -> datetime:
    """Aware timestamps in UTC without their zone; naive ones are taken as UTC already."""
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class DosStamp:
    """fatgen103 "Date and Time Formats": DIR_CrtTimeTenth / DIR_*Time / DIR_*Date.

    The time field counts 2-second units (bits 0-4, 0-29), so an odd second is kept only in
    the creation time's tenth field, 100-199 hundredths (as Linux's vfat and mkfs.fat write
    it); write and access times round down to the even second. Instants outside 1980-2107
    are clamped to the first or last representable one.
    """

    date: int
    time: int
    tenth: int

    @classmethod
    def of(cls, ts: datetime) -> DosStamp:
        ts = min(max(naive_utc(ts), DOS_EPOCH), DOS_LAST)
        date = (ts.year - 1980) << 9 | ts.month << 5 | ts.day
        time = ts.hour << 11 | ts.minute << 5 | ts.second // 2
        return cls(date, time, (ts.second % 2) * 100 + ts.microsecond // 10000)


def volume_serial(label: bytes, ts: datetime) -> int:
    """BS_VolID: mkfs.fat derives it from the clock; here from the build's timestamp and the
    label (so a config-2 drive and a cidata seed of one build differ), never from the content,
    which holds the fresh random_seed values."""
    h = hashlib.sha256(label + b"\0" + naive_utc(ts).isoformat().encode())
    return int.from_bytes(h.digest()[:4], "little")
