"""API keys: storage, verification and the authenticator, against a real SQLite file."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from llamactl.instance.store import InstanceStore
from llamactl.server import api_keys
from llamactl.server.api_keys import (
    LAST_USED_RESOLUTION,
    MAX_KEY_LENGTH,
    ApiKeyInfo,
    ApiKeyStore,
    Authenticator,
    AuthError,
    CreateKeyRequest,
    KeyNotFound,
    KeyRequestError,
    ManagementKeys,
    PermissionMode,
    Principal,
)

START = 1_700_000_000.0
INSTANCES = {"alpha", "beta", "gamma"}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[ApiKeyStore]:
    store = ApiKeyStore(tmp_path / "llamactl.db", clock)
    yield store
    store.close()


def per_instance(*names: str) -> CreateKeyRequest:
    return CreateKeyRequest(name="scoped", permission_mode=PermissionMode.PER_INSTANCE, instances=list(names))


def trace(store: ApiKeyStore) -> list[str]:
    """Every statement the store's connection runs from now on."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    return statements


# --- create, list, get, delete ---


def test_create_returns_the_key_once_and_never_shows_it_again(store: ApiKeyStore) -> None:
    info, key = store.create(CreateKeyRequest(name="ci"), INSTANCES)
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
    shown = [info, store.get(info.id), *store.list()]
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


def test_the_database_files_hold_no_plaintext_key(tmp_path: Path, store: ApiKeyStore) -> None:
    keys = [store.create(CreateKeyRequest(name=f"k{n}"), INSTANCES)[1] for n in range(3)]
    management = ManagementKeys([])
    generated = management.ensure_generated_key(store)
    assert generated is not None
    files = list(tmp_path.glob("llamactl.db*"))
    assert tmp_path / "llamactl.db" in files
    contents = b"".join(path.read_bytes() for path in files)
    for key in [*keys, generated]:
        secret = key.split("-", 2)[2]  # after "llamactl-<id>-" or "llamactl-mgmt-"; may hold "-"
        assert key.encode() not in contents
        assert secret.encode() not in contents
        assert hashlib.sha256(key.encode()).digest() in contents


def test_list_is_newest_first_and_get_finds_one(store: ApiKeyStore, clock: Clock) -> None:
    first, _ = store.create(CreateKeyRequest(name="first"), INSTANCES)
    clock.now += 10
    second, _ = store.create(per_instance("beta", "alpha"), INSTANCES)
    third, _ = store.create(CreateKeyRequest(name="same second"), INSTANCES)
    assert [key.id for key in store.list()] == [third.id, second.id, first.id]
    assert store.get(second.id) == second
    assert second.instances == ["alpha", "beta"]


def test_get_and_delete_of_an_unknown_key_raise_key_not_found(store: ApiKeyStore) -> None:
    with pytest.raises(KeyNotFound):
        store.get(42)
    with pytest.raises(KeyNotFound):
        store.delete(42)


def test_deleted_key_no_longer_verifies_even_when_cached(store: ApiKeyStore) -> None:
    info, key = store.create(per_instance("alpha"), INSTANCES)
    assert store.verify(key) is not None
    store.delete(info.id)
    assert store.verify(key) is None
    assert store.list() == []
    with pytest.raises(KeyNotFound):
        store.get(info.id)


def test_keys_survive_a_restart_and_ids_are_never_reused(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "llamactl.db"
    store = ApiKeyStore(path, clock)
    kept, kept_key = store.create(per_instance("alpha"), INSTANCES)
    dropped, _ = store.create(CreateKeyRequest(name="dropped"), INSTANCES)
    store.delete(dropped.id)
    store.close()
    reopened = ApiKeyStore(path, clock)
    assert reopened.verify(kept_key) == msgspec.structs.replace(kept, last_used_at=int(START))
    fresh, _ = reopened.create(CreateKeyRequest(name="fresh"), INSTANCES)
    assert fresh.id > dropped.id
    reopened.close()


def test_shares_the_database_with_the_instance_store(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "llamactl.db"
    InstanceStore(path).close()
    keys = ApiKeyStore(path, clock)
    keys.create(CreateKeyRequest(name="k"), INSTANCES)
    instances = InstanceStore(path)
    assert instances.load_instances() == []
    instances.close()
    keys.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


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
    ],
)
def test_bad_requests_name_the_field(store: ApiKeyStore, request_: CreateKeyRequest, field: str) -> None:
    with pytest.raises(KeyRequestError) as caught:
        store.create(request_, INSTANCES)
    assert caught.value.field == field
    assert store.list() == []


def test_good_edges_are_accepted(store: ApiKeyStore) -> None:
    info, _ = store.create(CreateKeyRequest(name="x" * 100, expires_at=int(START) + 1), INSTANCES)
    assert info.expires_at == int(START) + 1
    scoped, _ = store.create(per_instance("alpha", "alpha"), INSTANCES)
    assert scoped.instances == ["alpha"]


def test_the_body_decodes_with_defaults_and_refuses_unknown_fields() -> None:
    decoded = msgspec.json.decode(b'{"name": "ci"}', type=CreateKeyRequest)
    assert decoded == CreateKeyRequest(name="ci", permission_mode=PermissionMode.ALLOW_ALL)
    with pytest.raises(msgspec.ValidationError, match="instance_names"):
        msgspec.json.decode(b'{"name": "ci", "instance_names": ["a"]}', type=CreateKeyRequest)
    # the Go llamactl's instance_ids decode; the API turns them into names
    assert msgspec.json.decode(
        b'{"name": "ci", "instance_ids": [1]}', type=CreateKeyRequest
    ).instance_ids == [1]
    with pytest.raises(msgspec.ValidationError, match="permission_mode"):
        msgspec.json.decode(b'{"name": "ci", "permission_mode": "root"}', type=CreateKeyRequest)


# --- verify ---


def test_expired_key_is_rejected(store: ApiKeyStore, clock: Clock) -> None:
    _, key = store.create(CreateKeyRequest(name="ci", expires_at=int(START) + 100), INSTANCES)
    clock.now = START + 99
    assert store.verify(key) is not None
    clock.now = START + 100
    assert store.verify(key) is None


def test_forget_instance_drops_it_from_every_per_instance_key(store: ApiKeyStore) -> None:
    both, both_key = store.create(per_instance("alpha", "beta"), INSTANCES)
    only, only_key = store.create(per_instance("alpha"), INSTANCES)
    everything, _ = store.create(CreateKeyRequest(name="all"), INSTANCES)
    assert store.verify(both_key) is not None  # cached before the change
    store.forget_instance("alpha")
    assert store.get(both.id).instances == ["beta"]
    verified = store.verify(both_key)
    assert verified is not None and verified.instances == ["beta"]
    # left with nothing, a key may use nothing: it is never widened
    emptied = store.verify(only_key)
    assert emptied is not None
    assert (emptied.permission_mode, emptied.instances) == (PermissionMode.PER_INSTANCE, [])
    assert store.get(everything.id) == everything
    assert store.get(only.id).instances == []


def test_a_wrong_secret_or_another_id_is_rejected(store: ApiKeyStore) -> None:
    _, first_key = store.create(CreateKeyRequest(name="one"), INSTANCES)
    second, _ = store.create(CreateKeyRequest(name="two"), INSTANCES)
    secret = first_key.split("-", 2)[2]
    assert store.verify(f"llamactl-{second.id}-{secret}") is None
    assert store.verify(first_key[:-1] + ("A" if first_key[-1] != "A" else "B")) is None
    assert store.verify(first_key + "x") is None
    assert store.verify(first_key) is not None


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
def test_malformed_keys_return_none_without_raising(store: ApiKeyStore, presented: str) -> None:
    store.create(CreateKeyRequest(name="one"), INSTANCES)
    assert store.verify(presented) is None


def test_a_non_ascii_variant_of_a_real_key_is_rejected(store: ApiKeyStore) -> None:
    _, key = store.create(CreateKeyRequest(name="one"), INSTANCES)
    assert store.verify(key[:-1] + "é") is None


def test_last_used_at_is_written_at_most_once_a_minute(store: ApiKeyStore, clock: Clock) -> None:
    info, key = store.create(CreateKeyRequest(name="ci"), INSTANCES)
    statements = trace(store)
    clock.now = START + 1
    for _ in range(100):
        verified = store.verify(key)
        assert verified is not None and verified.last_used_at == int(START) + 1
    clock.now = START + LAST_USED_RESOLUTION
    assert store.verify(key).last_used_at == int(START) + 1  # type: ignore[union-attr]
    updates = [sql for sql in statements if sql.startswith("UPDATE")]
    assert len(updates) == 1
    assert store.get(info.id).last_used_at == int(START) + 1
    clock.now = START + 1 + LAST_USED_RESOLUTION
    assert store.verify(key).last_used_at == int(START) + 1 + LAST_USED_RESOLUTION  # type: ignore[union-attr]
    assert store.get(info.id).last_used_at == int(START) + 1 + LAST_USED_RESOLUTION
    assert len([sql for sql in statements if sql.startswith("UPDATE")]) == 2


def test_verify_reads_one_row_whatever_the_number_of_keys(store: ApiKeyStore) -> None:
    keys = [store.create(CreateKeyRequest(name=f"k{n}"), INSTANCES) for n in range(2000)]
    info, key = keys[1234]
    statements = trace(store)
    assert store.verify(key) == msgspec.structs.replace(info, last_used_at=int(START))
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    assert reads and all(f"id = {info.id}" in sql for sql in reads), reads
    assert len(statements) <= 3  # the key's row, its instances, last_used_at
    statements.clear()
    for _ in range(50):
        assert store.verify(key) is not None
    assert statements == []  # served from the cache
    assert store.verify(f"llamactl-{info.id}-wrong") is None
    assert statements == []


def test_an_unknown_id_costs_one_primary_key_lookup(store: ApiKeyStore) -> None:
    for n in range(20):
        store.create(CreateKeyRequest(name=f"k{n}"), INSTANCES)
    statements = trace(store)
    assert store.verify("llamactl-999999-secret") is None
    assert statements == [
        "SELECT id, name, key_sha256, permission_mode, expires_at, created_at, last_used_at"
        " FROM api_keys WHERE id = 999999"
    ]


# --- management keys ---


def test_configured_management_keys_match_and_nothing_is_generated(store: ApiKeyStore) -> None:
    management = ManagementKeys(["first-key", "second-key"])
    assert management.ensure_generated_key(store) is None
    assert store.generated_management_digest() is None
    assert management.matches("first-key")
    assert management.matches("second-key")
    assert not management.matches("first-key ")
    assert not management.matches("")
    assert not management.matches("ключ\udcff")
    assert not ManagementKeys([""]).matches("")


def test_a_management_key_is_generated_once_ever(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "llamactl.db"
    store = ApiKeyStore(path, clock)
    first_start = ManagementKeys([])
    generated = first_start.ensure_generated_key(store)
    assert generated is not None and generated.startswith("llamactl-mgmt-")
    assert len(generated) >= len("llamactl-mgmt-") + 43
    assert first_start.matches(generated)
    assert first_start.ensure_generated_key(store) is None
    store.close()

    store = ApiKeyStore(path, clock)
    second_start = ManagementKeys([])
    assert second_start.ensure_generated_key(store) is None
    assert second_start.matches(generated)
    assert not second_start.matches(generated + "x")
    # a generated management key is not an inference key of the store
    assert store.verify(generated) is None
    # once keys are configured, they are the only management keys
    configured = ManagementKeys(["chosen"])
    assert configured.ensure_generated_key(store) is None
    assert not configured.matches(generated)
    store.close()


# --- the authenticator ---


@pytest.fixture
def management() -> ManagementKeys:
    return ManagementKeys(["admin-secret"])


def authenticator(store: ApiKeyStore, management: ManagementKeys, required: bool = True) -> Authenticator:
    return Authenticator(management, store, require_management=required, require_inference=required)


def test_management_accepts_bearer_and_x_api_key(store: ApiKeyStore, management: ManagementKeys) -> None:
    auth = authenticator(store, management)
    auth.authenticate_management("Bearer admin-secret", None)
    auth.authenticate_management("bearer  admin-secret ", None)
    auth.authenticate_management(None, "admin-secret")
    # an Authorization of another scheme leaves X-API-Key to decide
    auth.authenticate_management("Basic YWRtaW4=", "admin-secret")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "message"),
    [
        (None, None, "missing API key"),
        ("", "", "missing API key"),
        ("Bearer ", None, "missing API key"),
        ("Basic admin-secret", None, "missing API key"),
        ("admin-secret", None, "missing API key"),
        ("Bearer wrong", None, "invalid API key"),
        (None, "wrong", "invalid API key"),
        ("Bearer ключ", None, "invalid API key"),
        (None, "\xff\xfe", "invalid API key"),
        ("Bearer " + "a" * (MAX_KEY_LENGTH + 1), None, "invalid API key"),
    ],
)
def test_management_refusals(
    store: ApiKeyStore,
    management: ManagementKeys,
    authorization: str | None,
    x_api_key: str | None,
    message: str,
) -> None:
    with pytest.raises(AuthError) as caught:
        authenticator(store, management).authenticate_management(authorization, x_api_key)
    assert (caught.value.status, caught.value.message) == (401, message)


def test_an_inference_key_is_not_a_management_key(store: ApiKeyStore, management: ManagementKeys) -> None:
    _, key = store.create(CreateKeyRequest(name="ci"), INSTANCES)
    with pytest.raises(AuthError, match="invalid API key"):
        authenticator(store, management).authenticate_management(f"Bearer {key}", None)


def test_huge_keys_are_refused_without_hashing(
    store: ApiKeyStore, management: ManagementKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(key: str) -> bytes:
        raise AssertionError("a huge key was hashed")

    monkeypatch.setattr(api_keys, "_digest", no_hashing)
    auth = authenticator(store, management)
    huge = "llamactl-1-" + "a" * MAX_KEY_LENGTH
    for call in (auth.authenticate_management, auth.authenticate_inference):
        with pytest.raises(AuthError, match="invalid API key"):
            call(f"Bearer {huge}", None)
        with pytest.raises(AuthError, match="invalid API key"):
            call(None, huge)
    assert store.verify(huge) is None
    assert not management.matches(huge)


def test_inference_accepts_api_keys_and_management_keys(
    store: ApiKeyStore, management: ManagementKeys
) -> None:
    info, key = store.create(per_instance("alpha"), INSTANCES)
    auth = authenticator(store, management)
    by_bearer = auth.authenticate_inference(f"Bearer {key}", None)
    assert by_bearer.api_key is not None and by_bearer.api_key.id == info.id
    assert not by_bearer.management
    assert auth.authenticate_inference(None, key) == by_bearer
    assert auth.authenticate_inference(None, "admin-secret") == Principal(management=True)
    with pytest.raises(AuthError, match="missing API key"):
        auth.authenticate_inference(None, None)
    with pytest.raises(AuthError, match="invalid API key"):
        auth.authenticate_inference("Bearer llamactl-1-ключ", None)


def test_permissions_per_instance(store: ApiKeyStore, management: ManagementKeys) -> None:
    auth = authenticator(store, management)
    _, scoped_key = store.create(per_instance("alpha", "beta"), INSTANCES)
    _, open_key = store.create(CreateKeyRequest(name="all"), INSTANCES)
    scoped = auth.authenticate_inference(f"Bearer {scoped_key}", None)
    unscoped = auth.authenticate_inference(f"Bearer {open_key}", None)
    admin = auth.authenticate_inference("Bearer admin-secret", None)
    assert [auth.can_use(scoped, name) for name in ("alpha", "beta", "gamma")] == [True, True, False]
    assert all(auth.can_use(unscoped, name) for name in ("alpha", "gamma", "created-later"))
    assert all(auth.can_use(admin, name) for name in ("alpha", "gamma", "created-later"))
    assert not auth.can_use(Principal(), "alpha")


def test_nothing_is_required_when_auth_is_off(store: ApiKeyStore, management: ManagementKeys) -> None:
    auth = authenticator(store, management, required=False)
    auth.authenticate_management(None, None)
    auth.authenticate_management("Bearer wrong", None)
    principal = auth.authenticate_inference(None, "wrong")
    assert principal == Principal()
    assert auth.can_use(principal, "alpha")


def test_each_requirement_is_independent(store: ApiKeyStore, management: ManagementKeys) -> None:
    open_management = Authenticator(management, store, require_management=False, require_inference=True)
    open_management.authenticate_management(None, None)
    with pytest.raises(AuthError, match="missing API key"):
        open_management.authenticate_inference(None, None)
    open_inference = Authenticator(management, store, require_management=True, require_inference=False)
    assert open_inference.can_use(open_inference.authenticate_inference(None, None), "alpha")
    with pytest.raises(AuthError, match="missing API key"):
        open_inference.authenticate_management(None, None)
