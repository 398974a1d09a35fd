"""Persistence: SQLite at ``<data_dir>/llamactl.db`` (stdlib sqlite3, WAL).

Two tables: the instances with their options, and a ledger of the process
groups llamactl has running, so that a llamactl that died without stopping
them can clean up at its next start. A database that cannot be read is
reported, never replaced.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from llamactl.instance.options import InstanceOptions

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    options TEXT NOT NULL,
    was_running INTEGER NOT NULL DEFAULT 0,
    declared INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS processes (
    name TEXT PRIMARY KEY,
    pgid INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL
);
"""


class StoreError(Exception):
    """The database is unreadable or of an unknown schema: llamactl must not start on it."""


class InstanceRecord(msgspec.Struct, frozen=True):
    name: str
    created: float
    options: InstanceOptions
    was_running: bool = False
    """Running when last seen: started again at boot when auto_restart is set."""
    declared: bool = False
    """Declared in the config file's ``models:`` rather than created through the API."""
    id: int = 0
    """The Go llamactl's numeric instance ID (API keys' ``instance_ids``); 0 until stored."""


class ProcessRecord(msgspec.Struct, frozen=True):
    name: str
    pgid: int
    start_ticks: int
    """The group leader's start time (/proc/PID/stat field 22), so a recycled PID is never hit."""


class InstanceStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"{path}: database schema version {version} is newer than this llamactl knows"
                )
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._check_readable()
        except (sqlite3.DatabaseError, OSError) as error:
            raise StoreError(f"cannot use the database {path}: {error}") from None

    def _check_readable(self) -> None:
        result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise StoreError(f"{self.path} is damaged ({result}); move it away to start afresh")

    def load_instances(self) -> list[InstanceRecord]:
        rows = self._db.execute(
            "SELECT id, name, created, options, was_running, declared FROM instances ORDER BY created"
        ).fetchall()
        records = []
        for instance_id, name, created, options, was_running, declared in rows:
            try:
                decoded = msgspec.json.decode(options, type=InstanceOptions)
            except msgspec.DecodeError as error:
                raise StoreError(
                    f"{self.path}: options of instance {name!r} are unreadable: {error}"
                ) from None
            records.append(
                InstanceRecord(name, created, decoded, bool(was_running), bool(declared), instance_id)
            )
        return records

    def save_instance(self, record: InstanceRecord) -> int:
        """Insert or update; returns the instance's ID."""
        self._db.execute(
            "INSERT INTO instances (name, created, options, was_running, declared) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET options=excluded.options,"
            " was_running=excluded.was_running, declared=excluded.declared",
            (
                record.name,
                record.created,
                msgspec.json.encode(record.options).decode(),
                int(record.was_running),
                int(record.declared),
            ),
        )
        row = self._db.execute("SELECT id FROM instances WHERE name = ?", (record.name,)).fetchone()
        instance_id: int = row[0]
        return instance_id

    def delete_instance(self, name: str) -> None:
        self._db.execute("DELETE FROM instances WHERE name = ?", (name,))

    def record_process(self, record: ProcessRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO processes (name, pgid, start_ticks) VALUES (?, ?, ?)",
            (record.name, record.pgid, record.start_ticks),
        )

    def forget_process(self, name: str) -> None:
        self._db.execute("DELETE FROM processes WHERE name = ?", (name,))

    def load_processes(self) -> list[ProcessRecord]:
        rows = self._db.execute("SELECT name, pgid, start_ticks FROM processes").fetchall()
        return [ProcessRecord(name, pgid, ticks) for name, pgid, ticks in rows]

    def close(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
