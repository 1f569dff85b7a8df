"""Where registered instances live: a :class:`Store` protocol, SQLite (default) and PostgreSQL.

Both backends share one schema and one set of SQL statements (``?`` placeholders, rewritten to
``%s`` for psycopg)::

    instances (uuid PK, spec TEXT, imds TEXT, generation BIGINT, deleted INTEGER)
    passwords (uuid PK, password TEXT)          -- nova's write-once password, set by the guest
    settings  (name PK, value TEXT)             -- shared secrets (the IMDSv2 token key)
    counter   (id PK = 1, value BIGINT)         -- the version counter servers poll

Every write bumps ``counter`` inside its transaction and stamps the row with the new value.
The ``UPDATE counter`` row lock serialises writers, so generations commit in order and a poller
that has seen generation *g* has seen every change up to *g* (``changes(since=g)`` gives the
rest, deletions as tombstones).

SQLite durability: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives the
process being killed (``kill -9``: committed frames are in the WAL file, in the OS page cache);
it can lose the last commits on power loss or an OS crash, because it fsyncs only at
checkpoints. Registrations and password posts are rare, so we pay one fsync per commit and lose
nothing committed even then.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from configdrive.errors import ConfigDriveError

__all__ = [
    "SCHEMA",
    "Change",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "open_store",
]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS instances (uuid TEXT PRIMARY KEY, spec TEXT NOT NULL, "
    "imds TEXT NOT NULL, generation BIGINT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS instances_generation ON instances (generation)",
    "CREATE TABLE IF NOT EXISTS passwords (uuid TEXT PRIMARY KEY, password TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)

_BUMP = "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"
_UPSERT = (
    "INSERT INTO instances (uuid, spec, imds, generation, deleted) VALUES (?, ?, ?, ?, 0) "
    "ON CONFLICT (uuid) DO UPDATE SET spec = excluded.spec, imds = excluded.imds, "
    "generation = excluded.generation, deleted = 0"
)
# create-only: a live row with that uuid wins (rowcount 0); a tombstone may be re-created
_CREATE = _UPSERT + " WHERE instances.deleted = 1"
_DELETE = "UPDATE instances SET deleted = 1, generation = ? WHERE uuid = ? AND deleted = 0"
_CHANGES = (
    "SELECT uuid, spec, imds, generation, deleted FROM instances WHERE generation > ? "
    "ORDER BY generation"
)


class StoreError(ConfigDriveError):
    """The store cannot be opened or a statement failed."""


class _Exists(Exception):
    """Inside a transaction: a create found a live row (rolls the transaction back)."""


@dataclass(frozen=True)
class Change:
    """One instance row as of ``generation``: its spec (JSON text), or a deletion."""

    uuid: str
    spec: str
    imds: str
    generation: int
    deleted: bool = False


class Store(Protocol):
    """What the service needs from persistent storage. All methods are blocking."""

    def put(self, uuid: str, spec: str, imds: str, *, create: bool = False) -> int | None:
        """Insert or replace an instance; return the new generation. With ``create``, an
        instance already there is left alone and None is returned (nothing is written)."""
        ...

    def delete(self, uuid: str) -> int | None:
        """Tombstone an instance; return the new generation, None when it was not there."""
        ...

    def generation(self) -> int: ...

    def changes(self, since: int = 0) -> list[Change]:
        """Rows written after generation ``since``, oldest first (tombstones included)."""
        ...

    def set_password(self, uuid: str, password: str) -> bool:
        """Store the password once; False when one is already set."""
        ...

    def get_password(self, uuid: str) -> str | None: ...

    def setting(self, name: str, create: Callable[[], str]) -> str:
        """Get a shared setting, creating it with ``create()`` on first use (race-free)."""
        ...

    def close(self) -> None: ...


class _SQLStore:
    """The statements both backends share; subclasses supply a DB-API transaction."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _tx(self) -> contextlib.AbstractContextManager[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(sql), tuple(params))
        return cur

    def _init_schema(self) -> None:
        with self._tx() as cur:
            for statement in SCHEMA:
                self._exec(cur, statement)

    def _bump(self, cur: Any) -> int:
        return int(self._exec(cur, _BUMP).fetchone()[0])

    def put(self, uuid: str, spec: str, imds: str, *, create: bool = False) -> int | None:
        try:
            with self._tx() as cur:
                generation = self._bump(cur)
                sql = _CREATE if create else _UPSERT
                cur = self._exec(cur, sql, (uuid, spec, imds, generation))
                if cur.rowcount != 1:
                    raise _Exists  # roll the counter back too
        except _Exists:
            return None
        return generation

    def delete(self, uuid: str) -> int | None:
        with self._tx() as cur:
            found = self._exec(
                cur, "SELECT 1 FROM instances WHERE uuid = ? AND deleted = 0", (uuid,)
            ).fetchone()
            if found is None:
                return None
            generation = self._bump(cur)
            self._exec(cur, _DELETE, (generation, uuid))
            self._exec(cur, "DELETE FROM passwords WHERE uuid = ?", (uuid,))
        return generation

    def generation(self) -> int:
        with self._tx() as cur:
            return int(self._exec(cur, "SELECT value FROM counter WHERE id = 1").fetchone()[0])

    def changes(self, since: int = 0) -> list[Change]:
        with self._tx() as cur:
            rows = self._exec(cur, _CHANGES, (since,)).fetchall()
        return [Change(r[0], r[1], r[2], int(r[3]), bool(r[4])) for r in rows]

    def set_password(self, uuid: str, password: str) -> bool:
        with self._tx() as cur:
            cur = self._exec(
                cur,
                "INSERT INTO passwords (uuid, password) VALUES (?, ?) "
                "ON CONFLICT (uuid) DO NOTHING",
                (uuid, password),
            )
            return bool(cur.rowcount == 1)

    def get_password(self, uuid: str) -> str | None:
        with self._tx() as cur:
            row = self._exec(cur, "SELECT password FROM passwords WHERE uuid = ?", (uuid,))
            found = row.fetchone()
        return None if found is None else str(found[0])

    def setting(self, name: str, create: Callable[[], str]) -> str:
        with self._tx() as cur:
            self._exec(
                cur,
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, create()),
            )
            row = self._exec(cur, "SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return str(row[0])


class SQLiteStore(_SQLStore):
    """The embedded default: one SQLite file in WAL mode, ``synchronous=FULL``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        self._init_schema()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            else:
                self._conn.commit()
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresStore(_SQLStore):
    """PostgreSQL through psycopg 3, for several servers sharing one database."""

    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self._conn: Any = None
        self._connect()
        self._init_schema()

    def _connect(self) -> None:
        import psycopg

        try:
            self._conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                self._connect()
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                self._conn.close()  # reconnect on next use
                raise StoreError(f"PostgreSQL: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def open_store(url: str) -> Store:
    """``sqlite:///path/to.db`` (or a plain path) or ``postgresql://…`` (libpq URI)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteStore(path)
