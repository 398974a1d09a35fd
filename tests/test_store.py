"""The llamactl database: its schema and migrations, ids, the writer thread, file modes."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import msgspec
import pytest

from llamactl import store as store_module
from llamactl.instance.options import instance_options_from_json
from llamactl.store import (
    HISTORY_PER_INSTANCE,
    SCHEMA_VERSION,
    InstanceRecord,
    KeyRecord,
    ProcessRecord,
    SmokeEntry,
    SmokeTimings,
    StartEntry,
    Store,
    StoreError,
)
from tests.activity_helpers import activity_record

OPTIONS = instance_options_from_json(
    {"backend_type": "llama_cpp", "backend_options": {"model": "/m.gguf"}, "environment": {"A": "1"}}
)

# What llamactl wrote before this store, verbatim: llamactl/instance/store.py (user_version 1) and
# the unversioned tables llamactl/server/api_keys.py added to the same file through a second connection.
OLD_INSTANCE_SCHEMA = """
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
OLD_KEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    key_sha256 BLOB NOT NULL,
    permission_mode TEXT NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS api_key_instances (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    instance_name TEXT NOT NULL,
    PRIMARY KEY (key_id, instance_name)
);
CREATE INDEX IF NOT EXISTS api_key_instances_by_name ON api_key_instances (instance_name);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


def old_database(path: Path, with_instances: bool = True) -> None:
    """A database as the old code left it: two instances (one deleted before), keys with grants by name.

    The grant of "removed" is the one a config reload left behind when it dropped that instance.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if with_instances:
        db.executescript(OLD_INSTANCE_SCHEMA)
        db.execute("PRAGMA user_version=1")
        for name in ("alpha", "deleted-since", "beta"):
            db.execute(
                "INSERT INTO instances (name, created, options, was_running, declared) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET options=excluded.options,"
                " was_running=excluded.was_running, declared=excluded.declared",
                (name, 100.0, msgspec.json.encode(OPTIONS).decode(), int(name == "beta"), 0),
            )
        db.execute("DELETE FROM instances WHERE name = ?", ("deleted-since",))
        db.execute(
            "INSERT OR REPLACE INTO processes (name, pgid, start_ticks) VALUES (?, ?, ?)", ("beta", 4242, 7)
        )
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(OLD_KEY_SCHEMA)
    for key_id, mode, names in ((1, "per_instance", ["alpha", "removed"]), (2, "allow_all", [])):
        db.execute(
            "INSERT INTO api_keys (name, key_sha256, permission_mode, expires_at, created_at)"
            " VALUES (?, x'', ?, ?, ?)",
            (f"k{key_id}", mode, None, 1000),
        )
        db.execute("UPDATE api_keys SET key_sha256 = ? WHERE id = ?", (hashlib.sha256(b"k").digest(), key_id))
        db.executemany(
            "INSERT INTO api_key_instances (key_id, instance_name) VALUES (?, ?)",
            [(key_id, name) for name in names],
        )
    db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (2000, 1))
    db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", ("generated", b"digest"))
    db.close()


def version_2_database(path: Path) -> None:
    """A database as llamactl left it at schema version 2: an instance and a key granted it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for step in store_module._MIGRATIONS[:2]:
        step(db)
    db.execute("PRAGMA user_version=2")
    db.execute(
        "INSERT INTO instances (name, created, options) VALUES (?, ?, ?)",
        ("alpha", 100.0, msgspec.json.encode(OPTIONS).decode()),
    )
    db.execute(
        "INSERT INTO api_keys (name, key_sha256, permission_mode, created_at) VALUES (?, ?, ?, ?)",
        ("k", b"digest", "per_instance", 1),
    )
    db.execute("INSERT INTO api_key_instances (key_id, instance_id) VALUES (1, 1)")
    db.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        return version


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the schema and its migrations ---


def test_a_database_of_the_old_code_opens_with_its_instances_processes_keys_and_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "llamactl.db"
    old_database(path)
    with caplog.at_level(logging.INFO, logger="llamactl.store"):
        store = Store(path)
    assert [(r.id, r.name, r.was_running, r.options) for r in store.load_instances()] == [
        (1, "alpha", False, OPTIONS),
        (3, "beta", True, OPTIONS),
    ]
    assert store.load_processes() == [ProcessRecord("beta", 4242, 7)]
    scoped, everything = sorted(store.load_keys(), key=lambda record: record.id)
    # the grant by name of an instance that is gone is dropped, not kept for a later namesake
    assert (scoped.permission_mode, scoped.last_used_at) == ("per_instance", 2000)
    assert scoped.instance_ids == frozenset({1})
    assert (everything.permission_mode, everything.instance_ids) == ("allow_all", frozenset())
    assert store.setting("generated") == b"digest"
    assert "dropped 1 API key grants" in caplog.text
    # ids go on from the highest ever given, the deleted instance's included
    assert store.save_instance(InstanceRecord("gamma", 200.0, OPTIONS)) == 4
    assert store.allocate_key_id() == 3
    store.close()
    assert user_version(path) == SCHEMA_VERSION
    reopened = Store(path)  # a migrated database opens as it is
    assert [record.name for record in reopened.load_instances()] == ["alpha", "beta", "gamma"]
    reopened.close()


def test_a_version_2_database_gets_the_activity_log_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    version_2_database(path)
    store = Store(path)
    assert [record.name for record in store.load_instances()] == ["alpha"]
    assert [record.instance_ids for record in store.load_keys()] == [frozenset({1})]
    assert store.activity(None, None, 10) == []
    record = activity_record(store)
    assert record.id == 1
    store.insert_activity([record], keep=10).result(timeout=10)
    assert store.activity(None, None, 10) == [record]
    store.close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_version_3_database_gets_the_history_and_keeps_its_activity(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    version_2_database(path)
    store = Store(path)
    record = activity_record(store)
    store.insert_activity([record], keep=10)
    store.close()
    with sqlite3.connect(path) as db:  # back to version 3: no history table yet
        db.execute("DROP TABLE history")
        db.execute("PRAGMA user_version=3")
    store = Store(path)
    assert store.activity(None, None, 10) == [record]
    assert store.history(1) == []
    entry = store.add_history(1, start_entry(5.0))
    assert store.history(1) == [entry]
    store.close()
    assert user_version(path) == SCHEMA_VERSION == 4


def test_a_database_with_only_the_unversioned_key_tables_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    old_database(path, with_instances=False)
    store = Store(path)
    assert store.load_instances() == []
    assert sorted(record.instance_ids for record in store.load_keys()) == [frozenset(), frozenset()]
    store.close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llamactl.db"
    old_database(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE api_key_instances")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "_MIGRATIONS", (store_module._to_version_1, broken))
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM api_key_instances").fetchone() == (2,)


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this llamactl knows"):
        Store(path)
    assert user_version(path) == SCHEMA_VERSION + 1


def test_a_new_database_is_wal_with_synchronous_normal_and_foreign_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "llamactl.db")
    pragmas = store._read(
        "read the pragmas",
        lambda db: [
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys")
        ],
    )
    assert pragmas == ["wal", 1, 1]  # synchronous 1 is NORMAL: no fsync per commit under WAL
    store.close()
    assert user_version(tmp_path / "llamactl.db") == SCHEMA_VERSION


# --- instances and ids ---


def test_ids_are_given_at_once_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    first = store.save_instance(InstanceRecord("a", 1.0, OPTIONS))
    second = store.save_instance(InstanceRecord("b", 2.0, OPTIONS))
    assert (first, second) == (1, 2)
    assert store.save_instance(InstanceRecord("a", 1.0, OPTIONS, was_running=True)) == first  # an update
    store.delete_instance("b")
    assert store.instance_id("b") is None and store.instance_name(second) is None
    store.close()
    store = Store(path)
    assert store.save_instance(InstanceRecord("b", 3.0, OPTIONS)) == 3
    assert [(r.id, r.name, r.was_running) for r in store.load_instances()] == [
        (1, "a", True),
        (3, "b", False),
    ]
    store.close()


def test_writes_land_in_the_order_they_were_made_and_close_waits_for_them(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    for round_ in range(300):
        store.save_instance(InstanceRecord("flip", 1.0, OPTIONS, was_running=round_ % 2 == 0))
        store.record_process(ProcessRecord("flip", round_, round_))
        if round_ % 3 == 0:
            store.forget_process("flip")
        store.delete_instance("gone")
        store.save_instance(InstanceRecord("gone", 1.0, OPTIONS))
    store.delete_instance("gone")
    store.close()
    store = Store(path)
    assert [(r.name, r.was_running) for r in store.load_instances()] == [("flip", False)]
    assert store.load_processes() == [ProcessRecord("flip", 299, 299)]
    store.close()


def test_deleting_an_instance_deletes_its_grants_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    alpha = store.save_instance(InstanceRecord("alpha", 1.0, OPTIONS))
    beta = store.save_instance(InstanceRecord("beta", 1.0, OPTIONS))
    key = KeyRecord(
        id=store.allocate_key_id(),
        name="k",
        digest=b"d",
        permission_mode="per_instance",
        expires_at=None,
        created_at=1,
        last_used_at=None,
        instance_ids=frozenset({alpha, beta}),
    )
    store.insert_key(key).result(timeout=10)
    store.delete_instance("alpha")
    store.close()
    store = Store(path)
    assert [record.instance_ids for record in store.load_keys()] == [frozenset({beta})]
    store.close()


# --- the instances' history ---


def start_entry(when: float) -> StartEntry:
    return StartEntry(time=when, reason="by API", executable="/bin/server", version="server 1.0")


def smoke_entry(when: float, ok: bool = True) -> SmokeEntry:
    return SmokeEntry(
        time=when,
        ok=ok,
        model="tiny",
        first_line="hello" if ok else None,
        timings=SmokeTimings(ready_seconds=0.5, listed_seconds=0.6, chat_seconds=0.1, total_seconds=1.0),
        reason=None if ok else "exited with code 3 while starting",
        log_tail=[] if ok else ["standin: exiting"],
    )


def test_history_is_read_oldest_first_per_instance_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    alpha = store.save_instance(InstanceRecord("alpha", 1.0, OPTIONS))
    beta = store.save_instance(InstanceRecord("beta", 1.0, OPTIONS))
    first = store.add_history(alpha, start_entry(10.0))
    other = store.add_history(beta, start_entry(11.0))
    second = store.add_history(alpha, smoke_entry(12.0, ok=False))
    assert 0 < first.id < other.id < second.id  # given at once, before the row is written
    assert store.history(alpha) == [first, second]
    store.close()
    store = Store(path)
    assert store.history(alpha) == [first, second]
    assert store.history(beta) == [other]
    assert store.add_history(alpha, smoke_entry(13.0)).id == second.id + 1
    store.close()


def test_history_keeps_the_last_entries_of_each_instance(tmp_path: Path) -> None:
    store = Store(tmp_path / "llamactl.db")
    busy = store.save_instance(InstanceRecord("busy", 1.0, OPTIONS))
    quiet = store.save_instance(InstanceRecord("quiet", 1.0, OPTIONS))
    kept = store.add_history(quiet, start_entry(1.0))
    written = [store.add_history(busy, smoke_entry(float(n))) for n in range(HISTORY_PER_INSTANCE + 5)]
    assert store.history(busy) == written[-HISTORY_PER_INSTANCE:]
    assert store.history(quiet) == [kept]  # another instance's entries do not push its own out
    store.close()


def test_history_goes_with_its_instance_and_a_late_entry_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    gone = store.save_instance(InstanceRecord("gone", 1.0, OPTIONS))
    store.add_history(gone, start_entry(1.0))
    store.delete_instance("gone")
    store.add_history(gone, smoke_entry(2.0))  # a smoke run that ended after the delete
    namesake = store.save_instance(InstanceRecord("gone", 3.0, OPTIONS))
    assert store.history(namesake) == []
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM history").fetchone() == (0,)
    assert "cannot" not in caplog.text


# --- the activity log ---


def test_activity_is_read_oldest_first_by_instance_and_since_an_id(tmp_path: Path) -> None:
    store = Store(tmp_path / "llamactl.db")
    records = [
        activity_record(store, "alpha" if number % 3 else "beta", status=200 + number) for number in range(10)
    ]
    store.insert_activity(records[:4], keep=100)
    store.insert_activity(records[4:], keep=100)
    assert store.activity(None, None, 100) == records  # every field as it was recorded
    assert store.activity(None, None, 3) == records[-3:]  # the last three, still oldest first
    betas = [record for record in records if record.instance == "beta"]
    assert store.activity("beta", None, 100) == betas
    assert store.activity("beta", None, 2) == betas[-2:]
    assert store.activity(None, records[4].id, 3) == records[5:8]  # the first three after the id
    assert store.activity("alpha", records[4].id, 100) == [r for r in records[5:] if r.instance == "alpha"]
    assert store.activity(None, records[-1].id, 100) == []
    assert store.activity("gamma", None, 100) == []
    assert store.activity(None, None, 0) == []
    store.close()


def test_activity_keeps_the_last_rows_and_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    written = []
    for _ in range(5):
        batch = [activity_record(store, model=None, key_name=None, ttft_seconds=None) for _ in range(7)]
        store.insert_activity(batch, keep=10)
        written += batch
    assert store.activity(None, None, 100) == written[-10:]
    store.close()
    store = Store(path)
    assert store.allocate_activity_id() == written[-1].id + 1
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM activity").fetchone() == (10,)


# --- the writer: off the caller's thread, failures reported ---


def test_a_locked_database_does_not_hold_up_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, locker.execute, ("COMMIT",))
    release.start()
    began = time.monotonic()
    store.save_instance(InstanceRecord("alpha", 1.0, OPTIONS))
    store.record_process(ProcessRecord("alpha", 1, 1))
    store.touch_key(1, 5)
    returned = time.monotonic() - began
    store.close()  # waits for the lock, then writes
    release.join()
    locker.close()
    assert returned < 0.05, f"the writes took {returned:.3f} s to return"
    store = Store(path)
    assert [record.name for record in store.load_instances()] == ["alpha"]
    store.close()


def test_a_write_that_fails_is_logged_with_what_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "llamactl.db"
    store = Store(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # held past the busy timeout
    with caplog.at_level(logging.ERROR, logger="llamactl.store"):
        store.save_instance(InstanceRecord("alpha", 1.0, OPTIONS))
        store.close()
    locker.execute("COMMIT")
    locker.close()
    assert "cannot save instance 'alpha', the change is lost: database is locked" in caplog.text
    assert "/m.gguf" not in caplog.text  # what it was, never the values (options may hold secrets)


def test_a_write_after_close_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path / "llamactl.db")
    store.close()
    store.close()  # a second close does nothing
    with caplog.at_level(logging.ERROR, logger="llamactl.store"):
        store.forget_process("alpha")
    assert "cannot forget the process group of 'alpha'" in caplog.text


# --- files only their owner reads ---


def test_the_database_is_0600_in_a_0700_data_dir_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        store = Store(tmp_path / "data" / "nested" / "llamactl.db")
        store.save_instance(InstanceRecord("alpha", 1.0, OPTIONS))
        store.close()
    finally:
        os.umask(previous)
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "nested") == 0o700
    for path in (tmp_path / "data" / "nested").iterdir():
        assert mode(path) == 0o600, path


def test_an_old_world_readable_database_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    old_database(path)
    wal = path.with_name("llamactl.db-wal")
    wal.write_bytes(b"")
    for file in (path, wal):
        file.chmod(0o644)
    tmp_path.chmod(0o750)
    Store(path).close()
    assert mode(tmp_path) == 0o750  # an existing directory keeps the mode its owner gave it
    for file in tmp_path.glob("llamactl.db*"):
        assert mode(file) == 0o600, file
