"""Who sent a request: management keys (configured or generated once) and the authenticator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl.server import api_keys
from llamactl.server import auth as auth_module
from llamactl.server.api_keys import MAX_KEY_LENGTH, ApiKeyStore, CreateKeyRequest
from llamactl.server.auth import Authenticator, AuthError, ManagementKeys, Principal
from llamactl.store import Store
from tests.server.keys_helpers import Clock, create, open_store, per_instance


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[ApiKeyStore]:
    database = open_store(tmp_path / "llamactl.db")
    yield ApiKeyStore(database, clock)
    database.close()


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
    database = open_store(path)
    store = ApiKeyStore(database, clock)
    first_start = ManagementKeys([])
    generated = first_start.ensure_generated_key(store)
    assert generated is not None and generated.startswith("llamactl-mgmt-")
    assert len(generated) >= len("llamactl-mgmt-") + 43
    assert first_start.matches(generated)
    assert first_start.ensure_generated_key(store) is None
    database.close()

    database = Store(path)
    store = ApiKeyStore(database, clock)
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
    database.close()


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
    _, key = create(store, CreateKeyRequest(name="ci"))
    with pytest.raises(AuthError, match="invalid API key"):
        authenticator(store, management).authenticate_management(f"Bearer {key}", None)


def test_huge_keys_are_refused_without_hashing(
    store: ApiKeyStore, management: ManagementKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(key: str) -> bytes:
        raise AssertionError("a huge key was hashed")

    monkeypatch.setattr(api_keys, "key_digest", no_hashing)
    monkeypatch.setattr(auth_module, "key_digest", no_hashing)
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
    info, key = create(store, per_instance("alpha"))
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
    _, scoped_key = create(store, per_instance("alpha", "beta"))
    _, open_key = create(store, CreateKeyRequest(name="all"))
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
