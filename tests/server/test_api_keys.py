"""API keys: create, list, delete and verify, over a real database."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from llamactl.server.api_keys import (
    LAST_USED_RESOLUTION,
    ApiKeyInfo,
    ApiKeyStore,
    CreateKeyRequest,
    KeyNotFound,
    KeyRequestError,
    PermissionMode,
)
from llamactl.server.auth import ManagementKeys
from llamactl.store import InstanceRecord, Store, StoreError
from tests.server.keys_helpers import OPTIONS, START, Clock, create, open_store, per_instance


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Store]:
    store = open_store(tmp_path / "llamactl.db")
    yield store
    store.close()


@pytest.fixture
def keys(database: Store, clock: Clock) -> ApiKeyStore:
    return ApiKeyStore(database, clock)


def trace(database: Store) -> list[str]:
    """Every statement the database's connection runs from now on (on its writer thread)."""
    statements: list[str] = []
    database._db.set_trace_callback(statements.append)
    return statements


def reopened(path: Path, clock: Clock) -> tuple[Store, ApiKeyStore]:
    store = Store(path)
    return store, ApiKeyStore(store, clock)


# --- create, list, get, delete ---


def test_create_returns_the_key_once_and_never_shows_it_again(keys: ApiKeyStore) -> None:
    info, key = create(keys, CreateKeyRequest(name="ci"))
    prefix, key_id, secret = key.split("-", 2)
    assert (prefix, int(key_id)) == ("llamactl", info.id)
    assert len(secret) >= 43
    assert info == ApiKeyInfo(
        id=info.id,
        name="ci",
        permission_mode=PermissionMode.ALLOW_ALL,
        instances=[],
        expires_at=None,
        created_at=int(START),
        last_used_at=None,
    )
    digest = hashlib.sha256(key.encode()).digest()
    shown = [info, keys.get(info.id), *keys.list()]
    for document in map(msgspec.json.encode, shown):
        assert key.encode() not in document
        assert secret.encode() not in document
        assert digest.hex().encode() not in document
    assert set(msgspec.structs.asdict(info)) == {
        "id",
        "name",
        "permission_mode",
        "instances",
        "expires_at",
        "created_at",
        "last_used_at",
    }


def test_the_database_files_hold_no_plaintext_key(tmp_path: Path, keys: ApiKeyStore) -> None:
    created = [create(keys, CreateKeyRequest(name=f"k{n}"))[1] for n in range(3)]
    generated = ManagementKeys([]).ensure_generated_key(keys)
    assert generated is not None
    files = list(tmp_path.glob("llamactl.db*"))
    assert tmp_path / "llamactl.db" in files
    contents = b"".join(path.read_bytes() for path in files)
    for key in [*created, generated]:
        secret = key.split("-", 2)[2]  # after "llamactl-<id>-" or "llamactl-mgmt-"; may hold "-"
        assert key.encode() not in contents
        assert secret.encode() not in contents
        assert hashlib.sha256(key.encode()).digest() in contents


def test_list_is_newest_first_and_get_finds_one(keys: ApiKeyStore, clock: Clock) -> None:
    first, _ = create(keys, CreateKeyRequest(name="first"))
    clock.now += 10
    second, _ = create(keys, per_instance("beta", "alpha"))
    third, _ = create(keys, CreateKeyRequest(name="same second"))
    assert [key.id for key in keys.list()] == [third.id, second.id, first.id]
    assert keys.get(second.id) == second
    assert second.instances == ["alpha", "beta"]


def test_get_and_delete_of_an_unknown_key_raise_key_not_found(keys: ApiKeyStore) -> None:
    with pytest.raises(KeyNotFound):
        keys.get(42)
    with pytest.raises(KeyNotFound):
        asyncio.run(keys.delete(42))


def test_deleted_key_no_longer_verifies(keys: ApiKeyStore) -> None:
    info, key = create(keys, per_instance("alpha"))
    assert keys.verify(key) is not None
    asyncio.run(keys.delete(info.id))
    assert keys.verify(key) is None
    assert keys.list() == []
    with pytest.raises(KeyNotFound):
        keys.get(info.id)


def test_keys_survive_a_restart_and_ids_are_never_reused(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "llamactl.db"
    store = open_store(path)
    keys = ApiKeyStore(store, clock)
    kept, kept_key = create(keys, per_instance("alpha"))
    dropped, _ = create(keys, CreateKeyRequest(name="dropped"))
    asyncio.run(keys.delete(dropped.id))
    store.close()
    store, keys = reopened(path, clock)
    assert keys.verify(kept_key) == msgspec.structs.replace(kept, last_used_at=int(START))
    fresh, _ = create(keys, CreateKeyRequest(name="fresh"))
    assert fresh.id > dropped.id
    store.close()


def test_a_key_that_could_not_be_stored_is_not_handed_out(database: Store, keys: ApiKeyStore) -> None:
    database.close()  # every write fails from here on, as on a full disk
    with pytest.raises(StoreError, match="store API key"):
        create(keys, CreateKeyRequest(name="ci"))
    assert keys.list() == []


# --- the rules of a create request ---


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CreateKeyRequest(name=""), "name"),
        (CreateKeyRequest(name="   "), "name"),
        (CreateKeyRequest(name="x" * 101), "name"),
        (CreateKeyRequest(name="ci", expires_at=int(START)), "expires_at"),
        (CreateKeyRequest(name="ci", expires_at=int(START) - 1), "expires_at"),
        (CreateKeyRequest(name="ci", permission_mode=PermissionMode.PER_INSTANCE), "instances"),
        (per_instance("alpha", "nope"), "instances[1]"),
        (CreateKeyRequest(name="ci", instances=["alpha"]), "instances"),
        (CreateKeyRequest(name="ci", instance_ids=[1]), "instance_ids"),
        (
            CreateKeyRequest(name="ci", permission_mode=PermissionMode.PER_INSTANCE, instance_ids=[1, 999]),
            "instance_ids[1]",
        ),
    ],
)
def test_bad_requests_name_the_field(keys: ApiKeyStore, request_: CreateKeyRequest, field: str) -> None:
    with pytest.raises(KeyRequestError) as caught:
        create(keys, request_)
    assert caught.value.field == field
    assert keys.list() == []


def test_good_edges_are_accepted(keys: ApiKeyStore, database: Store) -> None:
    info, _ = create(keys, CreateKeyRequest(name="x" * 100, expires_at=int(START) + 1))
    assert info.expires_at == int(START) + 1
    scoped, _ = create(keys, per_instance("alpha", "alpha"))
    assert scoped.instances == ["alpha"]
    # the Go llamactl's instance_ids, alone or with names
    beta = database.instance_id("beta")
    assert beta is not None
    both = CreateKeyRequest(
        name="go", permission_mode=PermissionMode.PER_INSTANCE, instances=["alpha"], instance_ids=[beta]
    )
    assert create(keys, both)[0].instances == ["alpha", "beta"]


def test_the_body_decodes_with_defaults_and_refuses_unknown_fields() -> None:
    decoded = msgspec.json.decode(b'{"name": "ci"}', type=CreateKeyRequest)
    assert decoded == CreateKeyRequest(name="ci", permission_mode=PermissionMode.ALLOW_ALL)
    with pytest.raises(msgspec.ValidationError, match="instance_names"):
        msgspec.json.decode(b'{"name": "ci", "instance_names": ["a"]}', type=CreateKeyRequest)
    assert msgspec.json.decode(
        b'{"name": "ci", "instance_ids": [1]}', type=CreateKeyRequest
    ).instance_ids == [1]
    with pytest.raises(msgspec.ValidationError, match="permission_mode"):
        msgspec.json.decode(b'{"name": "ci", "permission_mode": "root"}', type=CreateKeyRequest)


# --- grants follow their instance ---


def test_a_deleted_instance_leaves_every_key_and_its_name_grants_nothing_later(
    tmp_path: Path, database: Store, keys: ApiKeyStore, clock: Clock
) -> None:
    both, both_key = create(keys, per_instance("alpha", "beta"))
    only, only_key = create(keys, per_instance("alpha"))
    everything, _ = create(keys, CreateKeyRequest(name="all"))
    assert keys.verify(both_key) is not None
    database.delete_instance("alpha")
    assert keys.get(both.id).instances == ["beta"]
    verified = keys.verify(both_key)
    assert verified is not None and verified.instances == ["beta"]
    # left with nothing, a key may use nothing: it is never widened
    emptied = keys.verify(only_key)
    assert emptied is not None
    assert (emptied.permission_mode, emptied.instances) == (PermissionMode.PER_INSTANCE, [])
    assert keys.get(everything.id) == everything
    # a new instance of the same name is another instance: no key was granted it
    database.save_instance(InstanceRecord("alpha", START, OPTIONS))
    assert keys.get(both.id).instances == ["beta"]
    assert keys.get(only.id).instances == []
    # and the database agrees, after a restart
    database.close()
    database, keys = reopened(tmp_path / "llamactl.db", clock)
    assert keys.get(both.id).instances == ["beta"]
    assert keys.get(only.id).instances == []
    with sqlite3.connect(tmp_path / "llamactl.db") as db:
        assert db.execute("SELECT count(*) FROM api_key_instances").fetchone() == (1,)
    database.close()


# --- verify ---


def test_expired_key_is_rejected(keys: ApiKeyStore, clock: Clock) -> None:
    _, key = create(keys, CreateKeyRequest(name="ci", expires_at=int(START) + 100))
    clock.now = START + 99
    assert keys.verify(key) is not None
    clock.now = START + 100
    assert keys.verify(key) is None


def test_a_wrong_secret_or_another_id_is_rejected(keys: ApiKeyStore) -> None:
    _, first_key = create(keys, CreateKeyRequest(name="one"))
    second, _ = create(keys, CreateKeyRequest(name="two"))
    secret = first_key.split("-", 2)[2]
    assert keys.verify(f"llamactl-{second.id}-{secret}") is None
    assert keys.verify(first_key[:-1] + ("A" if first_key[-1] != "A" else "B")) is None
    assert keys.verify(first_key + "x") is None
    assert keys.verify(first_key) is not None


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "llamactl",
        "llamactl-",
        "llamactl-1",
        "llamactl-1-",
        "llamactl--1-secret",
        "llamactl-x-secret",
        "llamactl-mgmt-secret",
        "sk-1-secret",
        "LLAMACTL-1-secret",
        "llamactl-1-ключ",
        "llamactl-1-secret\udcff",
        "llamactl-\u0661-secret",  # ARABIC-INDIC DIGIT ONE: isdigit() is true, int() accepts it
        "llamactl-" + "9" * 30 + "-secret",
        "llamactl-" + "9" * 4000 + "-secret",
        "llamactl-1-" + "a" * 1_000_000,
        "llamactl-1-secret\x00",
    ],
)
def test_malformed_keys_return_none_without_raising(keys: ApiKeyStore, presented: str) -> None:
    create(keys, CreateKeyRequest(name="one"))
    assert keys.verify(presented) is None


def test_a_non_ascii_variant_of_a_real_key_is_rejected(keys: ApiKeyStore) -> None:
    _, key = create(keys, CreateKeyRequest(name="one"))
    assert keys.verify(key[:-1] + "é") is None


def test_last_used_at_is_written_at_most_once_a_minute(
    tmp_path: Path, database: Store, keys: ApiKeyStore, clock: Clock
) -> None:
    info, key = create(keys, CreateKeyRequest(name="ci"))
    statements = trace(database)
    clock.now = START + 1
    for _ in range(100):
        verified = keys.verify(key)
        assert verified is not None and verified.last_used_at == int(START) + 1
    clock.now = START + LAST_USED_RESOLUTION
    assert keys.verify(key).last_used_at == int(START) + 1  # type: ignore[union-attr]
    assert keys.get(info.id).last_used_at == int(START) + 1
    clock.now = START + 1 + LAST_USED_RESOLUTION
    assert keys.verify(key).last_used_at == int(START) + 1 + LAST_USED_RESOLUTION  # type: ignore[union-attr]
    database.close()
    assert len([sql for sql in statements if sql.startswith("UPDATE")]) == 2
    database, keys = reopened(tmp_path / "llamactl.db", clock)
    assert keys.get(info.id).last_used_at == int(START) + 1 + LAST_USED_RESOLUTION
    database.close()


def test_verify_reads_nothing_from_sqlite_whatever_the_number_of_keys(
    database: Store, keys: ApiKeyStore
) -> None:
    async def many() -> list[tuple[ApiKeyInfo, str]]:
        return [await keys.create(CreateKeyRequest(name=f"k{n}")) for n in range(2000)]

    created = asyncio.run(many())
    info, key = created[1234]
    statements = trace(database)
    assert keys.verify(key) == msgspec.structs.replace(info, last_used_at=int(START))
    for _ in range(50):
        assert keys.verify(key) is not None
    # unknown ids, bogus secrets and malformed keys: not one statement each
    for presented in ("llamactl-999999-secret", f"llamactl-{info.id}-wrong", "llamactl-1-x", "sk-nope"):
        assert keys.verify(presented) is None
    database.close()  # waits for the writer
    assert [sql for sql in statements if sql.split()[0] in ("SELECT", "INSERT", "UPDATE", "DELETE")] == [
        f"UPDATE api_keys SET last_used_at = {int(START)} WHERE id = {info.id}"
    ], statements


def test_verify_does_not_wait_for_a_locked_database(tmp_path: Path, keys: ApiKeyStore) -> None:
    _, key = create(keys, CreateKeyRequest(name="ci"))
    locker = sqlite3.connect(tmp_path / "llamactl.db", isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    released = threading.Timer(1.0, locker.execute, ("COMMIT",))
    released.start()
    began = time.monotonic()
    assert keys.verify(key) is not None  # its first use: last_used_at is written
    waited = time.monotonic() - began
    released.join()
    locker.close()
    assert waited < 0.1, f"verify waited {waited:.3f} s for the database"
