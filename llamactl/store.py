"""The llamactl database: one SQLite file, one connection, one writer thread.

``<data_dir>/llamactl.db`` holds the instances with their options, the ledger
of process groups llamactl has running (so that a llamactl that died without
stopping them can clean up at its next start), the API keys with the
instances they may use, settings, the activity log of the last proxied
requests, and each instance's history (its starts with what ran, its smoke
checks). Its schema is versioned with ``PRAGMA user_version`` and migrated
forward at open; a database that cannot be read, or that a newer llamactl
wrote, is reported, never replaced.

Reads happen at boot, synchronously: after that, the callers hold what they
need in memory. Every write goes to one thread that then owns the connection,
so no lock wait, fsync or slow disk ever holds up the event loop. The caller
goes on at once (ids are allocated here, not by SQLite), writes are applied in
the order they were made, ``close()`` waits for all of them, and a write that
fails is logged with what it was. WAL with ``synchronous=NORMAL``: a commit
survives a crash of llamactl; a power cut may lose the last few.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from llamactl.errors import LlamactlError
from llamactl.instance.options import InstanceOptions
from llamactl.private_files import make_private_dirs, open_private

logger = logging.getLogger("llamactl.store")

T = TypeVar("T")

SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another program's lock: off the event loop, so waiting costs no request."""

_VERSION_1 = (
    """CREATE TABLE IF NOT EXISTS instances (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        options TEXT NOT NULL,
        was_running INTEGER NOT NULL DEFAULT 0,
        declared INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS processes (
        name TEXT PRIMARY KEY,
        pgid INTEGER NOT NULL,
        start_ticks INTEGER NOT NULL
    )""",
)
# Version 1 left the key tables unversioned (they were created, with grants by instance
# name, by a second connection); version 2 takes them in and grants by instance id.
_KEY_TABLES = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        key_sha256 BLOB NOT NULL,
        permission_mode TEXT NOT NULL,
        expires_at INTEGER,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS settings (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    )""",
)
_GRANTS = """CREATE TABLE {table} (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, instance_id)
)"""
_ACTIVITY = (
    """CREATE TABLE activity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        instance TEXT NOT NULL,
        model TEXT,
        key_name TEXT,
        endpoint TEXT NOT NULL,
        method TEXT NOT NULL,
        status INTEGER NOT NULL,
        queue_wait_seconds REAL NOT NULL,
        ttft_seconds REAL,
        duration_seconds REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER
    )""",
    "CREATE INDEX activity_by_instance ON activity (instance, id)",
)
_HISTORY = (
    # The entry is the JSON the API shows; kind and time are columns for whoever reads the file.
    """CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        entry TEXT NOT NULL
    )""",
    "CREATE INDEX history_by_instance ON history (instance_id, id)",
)


class StoreError(LlamactlError):
    """The database is unreadable, of an unknown schema, or refuses a write."""

    code = "store_error"


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


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``api_keys`` with the ids of the instances it may use."""

    id: int
    name: str
    digest: bytes
    """SHA-256 of the whole key; the key itself is never stored."""
    permission_mode: str
    expires_at: int | None
    created_at: int
    last_used_at: int | None
    instance_ids: frozenset[int] = frozenset()


class ActivityRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One proxied request, as the activity log keeps it: what it was and how long it took, never
    its prompt or its answer."""

    id: int = 0
    """Given by ``Store.allocate_activity_id`` when the request is recorded; 0 until then."""
    time: float
    """When the request arrived, in Unix seconds."""
    instance: str
    model: str | None
    """The model the request named, cut to ``MAX_ACTIVITY_TEXT`` characters; None when it named none."""
    key_name: str | None
    """The API key's name, ``"management"`` for a management key, None when inference auth is off."""
    endpoint: str
    """The path without the query, cut to ``MAX_ACTIVITY_TEXT`` characters."""
    method: str
    status: int
    queue_wait_seconds: float
    ttft_seconds: float | None
    """Until the first byte of the answer's body; None when it had no body."""
    duration_seconds: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


MAX_ACTIVITY_TEXT = 200
"""Characters of a request's model and endpoint the activity log keeps: a client chooses both."""
_ACTIVITY_COLUMNS = ", ".join(ActivityRecord.__struct_fields__)
"""The table's columns are the record's fields, in their order."""
_INSERT_ACTIVITY = (
    f"INSERT INTO activity ({_ACTIVITY_COLUMNS})"
    f" VALUES ({', '.join('?' for _ in ActivityRecord.__struct_fields__)})"
)


HISTORY_PER_INSTANCE = 200
"""Entries of an instance's history kept: the oldest go past it."""


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """One entry of an instance's history; ``kind`` says which of the entries below it is."""

    id: int = 0
    """Given by ``Store.add_history``; 0 until then."""
    time: float
    """When it began, in Unix seconds."""


class StartEntry(HistoryEntry, frozen=True, kw_only=True, tag="start"):
    """A start of the instance's backend, and what ran: its provenance."""

    reason: str
    """Why it started, as the events say it: ``by API``, ``on demand``, ``restart``, …"""
    executable: str | None
    """The program's resolved path; None when it is not found (the start then fails)."""
    image: str | None = None
    """In Docker mode, the image run (``executable`` is then docker's)."""
    version: str | None = None
    """The first lines of the program's ``--version``."""
    version_error: str | None = None
    """Why there is no version: it is not run in Docker mode, failed or took too long."""


class SmokeTimings(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds from the spawn of the smoke run's process; None for a step it did not reach."""

    ready_seconds: float | None = None
    """Until the backend's readiness probe passed."""
    listed_seconds: float | None = None
    """Until ``/v1/models`` listed the served model."""
    chat_seconds: float | None = None
    """The chat alone: from its request to its answer."""
    total_seconds: float
    """The whole run, the stop of its process included."""


class SmokeEntry(HistoryEntry, frozen=True, kw_only=True, tag="smoke"):
    """A smoke check: the instance's command started on another port, asked one chat, stopped."""

    ok: bool
    model: str | None
    """The ``model`` the chat named: the instance's served model name (None: the backend takes any)."""
    first_line: str | None = None
    """The first non-empty line of the answer."""
    timings: SmokeTimings
    reason: str | None = None
    """Why it failed."""
    log_tail: list[str] = []
    """On failure, the last lines the smoke run's backend printed."""


InstanceHistoryEntry = StartEntry | SmokeEntry
EntryT = TypeVar("EntryT", bound=HistoryEntry)


class _Job(msgspec.Struct):
    what: str
    """What the job does, for the log when it fails: never a value that may be a secret."""
    work: Callable[[sqlite3.Connection], Any]
    future: Future[Any]
    write: bool


class Store:
    """The database: called from one thread (the event loop's), while the connection lives in another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            make_private_dirs(path.parent)
            os.close(open_private(path, os.O_RDWR))
            for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if companion.exists():  # left by an older llamactl, with the umask's mode
                    os.close(open_private(companion, os.O_RDWR))
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise StoreError(f"{path} is damaged ({result}); move it away to start afresh")
            _migrate(db, path)
            db.execute("PRAGMA foreign_keys=ON")
            self._instance_ids: dict[str, int] = dict(db.execute("SELECT name, id FROM instances"))
            self._instance_names = {instance_id: name for name, instance_id in self._instance_ids.items()}
            self._next_instance_id = _next_id(db, "instances")
            self._next_key_id = _next_id(db, "api_keys")
            self._next_activity_id = _next_id(db, "activity")
            self._next_history_id = _next_id(db, "history")
        except (sqlite3.DatabaseError, OSError) as error:
            raise StoreError(f"cannot use the database {path}: {error}") from None
        self._db = db
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="llamactl-store", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ instances

    def load_instances(self) -> list[InstanceRecord]:
        rows = self._read(
            "read the instances",
            lambda db: db.execute(
                "SELECT id, name, created, options, was_running, declared FROM instances ORDER BY created"
            ).fetchall(),
        )
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
        """Insert or update; returns the instance's id at once, before the row is written."""
        instance_id = record.id or self._instance_ids.get(record.name)
        if not instance_id:
            instance_id = self._next_instance_id
            self._next_instance_id += 1
        self._instance_ids[record.name] = instance_id
        self._instance_names[instance_id] = record.name
        row = (
            instance_id,
            record.name,
            record.created,
            msgspec.json.encode(record.options).decode(),
            int(record.was_running),
            int(record.declared),
        )
        self._execute(
            f"save instance {record.name!r}",
            "INSERT INTO instances (id, name, created, options, was_running, declared)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET options=excluded.options,"
            " was_running=excluded.was_running, declared=excluded.declared",
            row,
        )
        return instance_id

    def delete_instance(self, name: str) -> None:
        """Delete the instance and, in the same statement, every API key's grant of it."""
        instance_id = self._instance_ids.pop(name, None)
        if instance_id is not None:
            del self._instance_names[instance_id]
        self._execute(f"delete instance {name!r}", "DELETE FROM instances WHERE name = ?", (name,))

    def instance_id(self, name: str) -> int | None:
        """The id of the instance of that name, while it exists."""
        return self._instance_ids.get(name)

    def instance_name(self, instance_id: int) -> str | None:
        """The name of the instance with that id, while it exists; ids are never reused."""
        return self._instance_names.get(instance_id)

    def record_process(self, record: ProcessRecord) -> None:
        self._execute(
            f"record the process group {record.pgid} of {record.name!r}",
            "INSERT OR REPLACE INTO processes (name, pgid, start_ticks) VALUES (?, ?, ?)",
            (record.name, record.pgid, record.start_ticks),
        )

    def forget_process(self, name: str) -> None:
        self._execute(
            f"forget the process group of {name!r}", "DELETE FROM processes WHERE name = ?", (name,)
        )

    def load_processes(self) -> list[ProcessRecord]:
        rows = self._read(
            "read the process ledger",
            lambda db: db.execute("SELECT name, pgid, start_ticks FROM processes").fetchall(),
        )
        return [ProcessRecord(name, pgid, ticks) for name, pgid, ticks in rows]

    # ------------------------------------------------------------------ API keys and settings

    def load_keys(self) -> list[KeyRecord]:
        def read(db: sqlite3.Connection) -> list[KeyRecord]:
            grants: dict[int, set[int]] = {}
            for key_id, instance_id in db.execute("SELECT key_id, instance_id FROM api_key_instances"):
                grants.setdefault(key_id, set()).add(instance_id)
            rows = db.execute(
                "SELECT id, name, key_sha256, permission_mode, expires_at, created_at, last_used_at"
                " FROM api_keys"
            )
            return [
                KeyRecord(
                    id=key_id,
                    name=name,
                    digest=bytes(digest),
                    permission_mode=mode,
                    expires_at=expires_at,
                    created_at=created_at,
                    last_used_at=last_used_at,
                    instance_ids=frozenset(grants.get(key_id, ())),
                )
                for key_id, name, digest, mode, expires_at, created_at, last_used_at in rows
            ]

        return self._read("read the API keys", read)

    def allocate_key_id(self) -> int:
        """An id no key had before: a key embeds its id, so it is chosen before the row is written."""
        key_id = self._next_key_id
        self._next_key_id += 1
        return key_id

    def insert_key(self, record: KeyRecord) -> Future[None]:
        """Write a new key with its grants; the future says whether it is stored."""

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO api_keys"
                " (id, name, key_sha256, permission_mode, expires_at, created_at, last_used_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.digest,
                    record.permission_mode,
                    record.expires_at,
                    record.created_at,
                    record.last_used_at,
                ),
            )
            db.executemany(
                "INSERT INTO api_key_instances (key_id, instance_id) VALUES (?, ?)",
                [(record.id, instance_id) for instance_id in sorted(record.instance_ids)],
            )

        return self._write(f"store API key {record.id}", insert)

    def delete_key(self, key_id: int) -> Future[None]:
        return self._execute(f"delete API key {key_id}", "DELETE FROM api_keys WHERE id = ?", (key_id,))

    def touch_key(self, key_id: int, when: int) -> None:
        self._execute(
            f"note the use of API key {key_id}",
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
            (when, key_id),
        )

    def setting(self, name: str) -> bytes | None:
        row = self._read(
            f"read the setting {name}",
            lambda db: db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone(),
        )
        return None if row is None else bytes(row[0])

    def add_setting(self, name: str, value: bytes) -> bool:
        """Store a setting unless it is set already (True when stored); waits for the write."""

        def insert(db: sqlite3.Connection) -> bool:
            sql = "INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)"
            return db.execute(sql, (name, value)).rowcount == 1

        return self._write(f"store the setting {name}", insert).result()

    # ------------------------------------------------------------------ the activity log

    def allocate_activity_id(self) -> int:
        """An id no activity record had before, given when the request is recorded, before its row is
        written: ids rise in the order requests are recorded, so ``since`` pages through them."""
        activity_id = self._next_activity_id
        self._next_activity_id += 1
        return activity_id

    def insert_activity(self, records: list[ActivityRecord], keep: int) -> Future[None]:
        """Write records in one transaction, and in it delete the oldest rows past the last ``keep``."""
        rows = [msgspec.structs.astuple(record) for record in records]

        def insert(db: sqlite3.Connection) -> None:
            db.executemany(_INSERT_ACTIVITY, rows)
            newest_dropped = "SELECT id FROM activity ORDER BY id DESC LIMIT 1 OFFSET ?"
            db.execute(f"DELETE FROM activity WHERE id <= ({newest_dropped})", (keep,))

        return self._write(f"store {len(records)} activity records", insert)

    def activity(self, instance: str | None, since_id: int | None, limit: int) -> list[ActivityRecord]:
        """At most ``limit`` records, oldest first, of one instance or of all.

        Without ``since_id``, the last ``limit`` records (as ``tail -n``); with it,
        the first ``limit`` records after that id, so that a reader pages forward
        from the last id it saw and misses none.
        """
        conditions: list[str] = []
        parameters: list[str | int] = []
        if instance is not None:
            conditions.append("instance = ?")
            parameters.append(instance)
        if since_id is not None:
            conditions.append("id > ?")
            parameters.append(since_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "DESC" if since_id is None else "ASC"  # the last `limit`: taken newest first, then turned
        sql = f"SELECT {_ACTIVITY_COLUMNS} FROM activity {where} ORDER BY id {order} LIMIT ?"
        rows = self._read(
            "read the activity log", lambda db: db.execute(sql, (*parameters, limit)).fetchall()
        )
        if since_id is None:
            rows.reverse()
        return [
            ActivityRecord(**dict(zip(ActivityRecord.__struct_fields__, row, strict=True))) for row in rows
        ]

    # ------------------------------------------------------------------ instance history

    def add_history(self, instance_id: int, entry: EntryT) -> EntryT:
        """Add an entry, keeping the instance's last ``HISTORY_PER_INSTANCE``; returns it with its id.

        An entry for an instance deleted meanwhile is dropped: the history went with it.
        """
        entry = msgspec.structs.replace(entry, id=self._next_history_id)
        self._next_history_id += 1
        kind = type(entry).__struct_config__.tag
        row = (entry.id, instance_id, entry.time, kind, msgspec.json.encode(entry).decode())

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO history (id, instance_id, time, kind, entry) SELECT ?, ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM instances WHERE id = ?)",
                (*row, instance_id),
            )
            newest_dropped = "SELECT id FROM history WHERE instance_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?"
            db.execute(
                f"DELETE FROM history WHERE instance_id = ? AND id <= ({newest_dropped})",
                (instance_id, instance_id, HISTORY_PER_INSTANCE),
            )

        self._write(f"add a {kind} entry to the history of instance {instance_id}", insert)
        return entry

    def history(self, instance_id: int) -> list[InstanceHistoryEntry]:
        """The instance's history, oldest first."""
        rows = self._read(
            f"read the history of instance {instance_id}",
            lambda db: db.execute(
                "SELECT entry FROM history WHERE instance_id = ? ORDER BY id", (instance_id,)
            ).fetchall(),
        )
        return [_HISTORY_DECODER.decode(entry) for (entry,) in rows]

    # ------------------------------------------------------------------ the writer

    def close(self) -> None:
        """Apply every write made so far, then close; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._writer.join()
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:  # the WAL is kept, and applied at the next open
            logger.warning("cannot checkpoint %s: %s", self.path, error)
        self._db.close()

    def _write(self, what: str, work: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a write, applied in its own transaction after every write queued before it."""
        return self._submit(_Job(what, work, Future(), write=True))

    def _execute(self, what: str, sql: str, parameters: tuple[Any, ...]) -> Future[None]:
        """Queue a write of one statement."""

        def execute(db: sqlite3.Connection) -> None:
            db.execute(sql, parameters)

        return self._write(what, execute)

    def _read(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the writer thread, after the writes queued before it, and wait for it."""
        result: T = self._submit(_Job(what, work, Future(), write=False)).result()
        return result

    def _submit(self, job: _Job) -> Future[Any]:
        if self._closed:
            logger.error("cannot %s: the database %s is closed", job.what, self.path)
            job.future.set_exception(StoreError(f"cannot {job.what}: the database is closed"))
        else:
            self._jobs.put(job)
        return job.future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                result = _transaction(self._db, job.work) if job.write else job.work(self._db)
            except sqlite3.Error as error:
                if job.write:
                    logger.error("cannot %s, the change is lost: %s", job.what, error)
                job.future.set_exception(StoreError(f"cannot {job.what} in {self.path}: {error}"))
            except Exception as error:
                logger.exception("cannot %s", job.what)
                job.future.set_exception(error)
            else:
                job.future.set_result(result)


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


_HISTORY_DECODER = msgspec.json.Decoder(InstanceHistoryEntry)


def _next_id(db: sqlite3.Connection, table: str) -> int:
    """One past the highest id the table ever held, deleted rows included (AUTOINCREMENT's record)."""
    sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    highest = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
    return max(sequence[0] if sequence else 0, highest or 0) + 1


# ---------------------------------------------------------------------- migrations


def _to_version_1(db: sqlite3.Connection) -> None:
    for statement in _VERSION_1:
        db.execute(statement)


def _to_version_2(db: sqlite3.Connection) -> None:
    """Take in the key tables and grant by instance id, so that a grant goes with its instance.

    A grant by name outlived its instance when a reload removed it, and passed to
    the next instance of that name; grants of instances that are gone are dropped.
    """
    for statement in _KEY_TABLES:
        db.execute(statement)
    columns = {row[1] for row in db.execute("PRAGMA table_info(api_key_instances)")}
    if "instance_name" in columns:
        db.execute(_GRANTS.format(table="api_key_instances_by_id"))
        db.execute(
            "INSERT INTO api_key_instances_by_id (key_id, instance_id)"
            " SELECT grants.key_id, instances.id FROM api_key_instances AS grants"
            " JOIN instances ON instances.name = grants.instance_name"
            " JOIN api_keys ON api_keys.id = grants.key_id"
        )
        dropped = db.execute(
            "SELECT count(*) FROM api_key_instances WHERE instance_name NOT IN (SELECT name FROM instances)"
        ).fetchone()[0]
        if dropped:
            logger.info("dropped %d API key grants of instances that no longer exist", dropped)
        db.execute("DROP TABLE api_key_instances")
        db.execute("ALTER TABLE api_key_instances_by_id RENAME TO api_key_instances")
    elif not columns:
        db.execute(_GRANTS.format(table="api_key_instances"))
    db.execute("CREATE INDEX IF NOT EXISTS api_key_instances_by_instance ON api_key_instances (instance_id)")


def _to_version_3(db: sqlite3.Connection) -> None:
    """The activity log: one row per proxied request, the last ``activity.retention`` kept."""
    for statement in _ACTIVITY:
        db.execute(statement)


def _to_version_4(db: sqlite3.Connection) -> None:
    """Each instance's history: its starts (what ran) and its smoke checks, deleted with it."""
    for statement in _HISTORY:
        db.execute(statement)


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_version_1,
    _to_version_2,
    _to_version_3,
    _to_version_4,
)
"""``_MIGRATIONS[n]`` takes a database from version n to n + 1; a new file runs them all."""
assert len(_MIGRATIONS) == SCHEMA_VERSION


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: database schema version {version} is newer than this llamactl knows")
    if version == SCHEMA_VERSION:
        return

    def steps(db: sqlite3.Connection) -> None:
        for step in _MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # All steps or none; foreign keys are off (a new connection's default) while tables are rebuilt.
    _transaction(db, steps)
    if version:
        logger.info("%s: schema migrated from version %d to %d", path, version, SCHEMA_VERSION)
