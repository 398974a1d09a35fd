"""Inference API keys: created through the API, kept in the llamactl database as digests.

A key reads ``llamactl-<id>-<secret>``. Only the SHA-256 of the whole key is
stored, and every key is held in memory from the start on, so checking one is
a dict look-up whatever the number of keys (the Go llamactl ran Argon2id
against every key, per request), and an unknown id costs no more. Digests are
compared as bytes with ``hmac.compare_digest``: constant time, and no
``TypeError`` on a non-ASCII header. A key may be limited to a list of
instances, kept by instance id: a grant goes when its instance goes, and a
later instance of the same name has a new id, so it inherits nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from enum import StrEnum

import msgspec

from llamactl.errors import FieldError, LlamactlError, echo
from llamactl.store import KeyRecord, Store

KEY_PREFIX = "llamactl-"
MAX_KEY_LENGTH = 4096
"""Longer header values are refused before any hashing: no key of ours is near that long."""
MAX_NAME_LENGTH = 100
LAST_USED_RESOLUTION = 60
"""Seconds: ``last_used_at`` is written at most this often per key, not on every request."""
_MAX_ID_DIGITS = 18
"""Keeps a parsed id inside SQLite's 64-bit INTEGER."""
_GENERATED_MANAGEMENT_DIGEST = "generated_management_key_sha256"


class PermissionMode(StrEnum):
    ALLOW_ALL = "allow_all"
    PER_INSTANCE = "per_instance"


class CreateKeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/auth/keys``; the rules are checked by ``ApiKeyStore.create``."""

    name: str
    permission_mode: PermissionMode = PermissionMode.ALLOW_ALL
    expires_at: int | None = None
    """Unix seconds; must be in the future."""
    instances: list[str] = []
    """Instance names a ``per_instance`` key may use."""
    instance_ids: list[int] = []
    """The Go llamactl's way to name them; both lists may be given."""


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A key as the API shows it: never the key itself nor its digest."""

    id: int
    name: str
    permission_mode: PermissionMode
    instances: list[str]
    expires_at: int | None
    created_at: int
    last_used_at: int | None


class KeyRequestError(FieldError):
    """A create request breaks a rule; ``field`` names the offending field."""


class KeyNotFound(LlamactlError):
    status = 404
    code = "not_found"

    def __init__(self, key_id: int) -> None:
        super().__init__(f"no API key with id {key_id}", "id")
        self.key_id = key_id


def key_digest(key: str) -> bytes:
    # surrogatepass: a header value decoded with surrogates must hash, not raise
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _parse_key_id(presented: str) -> int | None:
    """The id in ``llamactl-<id>-<secret>``, or None when the text cannot be one of our keys."""
    if len(presented) > MAX_KEY_LENGTH or not presented.isascii() or not presented.startswith(KEY_PREFIX):
        return None
    id_text, separator, secret = presented[len(KEY_PREFIX) :].partition("-")
    if not separator or not secret or not id_text.isdigit() or len(id_text) > _MAX_ID_DIGITS:
        return None
    return int(id_text)


class ApiKeyStore:
    """Every API key, in memory, written through to the store.

    ``verify`` reads nothing from SQLite, and the one write it makes
    (``last_used_at``, at most once a minute per key) is queued to the
    store's writer: the inference path never waits for the disk.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._keys = {record.id: record for record in store.load_keys()}

    async def create(self, request: CreateKeyRequest) -> tuple[ApiKeyInfo, str]:
        """Store a new key; the plaintext is returned here and never again."""
        now = int(self._clock())
        instance_ids = self._validated_grants(request, now)
        key_id = self._store.allocate_key_id()
        key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        record = KeyRecord(
            id=key_id,
            name=request.name,
            digest=key_digest(key),
            permission_mode=request.permission_mode.value,
            expires_at=request.expires_at,
            created_at=now,
            last_used_at=None,
            instance_ids=instance_ids,
        )
        # Awaited: a key handed out must still work after a restart, or the caller hears why not.
        await asyncio.wrap_future(self._store.insert_key(record))
        self._keys[key_id] = record
        return self._info(record), key

    def get(self, key_id: int) -> ApiKeyInfo:
        record = self._keys.get(key_id)
        if record is None:
            raise KeyNotFound(key_id)
        return self._info(record)

    async def delete(self, key_id: int) -> None:
        """Revoke at once; returns once the row is gone, so the key cannot come back with a restart."""
        if self._keys.pop(key_id, None) is None:
            raise KeyNotFound(key_id)
        await asyncio.wrap_future(self._store.delete_key(key_id))

    def list(self) -> list[ApiKeyInfo]:
        """Every key, newest first."""
        records = sorted(self._keys.values(), key=lambda record: (record.created_at, record.id), reverse=True)
        return [self._info(record) for record in records]

    def verify(self, presented: str) -> ApiKeyInfo | None:
        """The key's info when ``presented`` is a live key, else None; malformed input never raises."""
        key_id = _parse_key_id(presented)
        if key_id is None:
            return None
        digest = key_digest(presented)
        record = self._keys.get(key_id)
        if record is None or not hmac.compare_digest(record.digest, digest):
            return None
        now = int(self._clock())
        if record.expires_at is not None and now >= record.expires_at:
            return None
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
            record = msgspec.structs.replace(record, last_used_at=now)
            self._keys[key_id] = record
            self._store.touch_key(key_id, now)
        return self._info(record)

    def generated_management_digest(self) -> bytes | None:
        return self._store.setting(_GENERATED_MANAGEMENT_DIGEST)

    def save_generated_management_digest(self, digest: bytes) -> bool:
        """Record the generated management key's digest; False when one was recorded before."""
        return self._store.add_setting(_GENERATED_MANAGEMENT_DIGEST, digest)

    def _info(self, record: KeyRecord) -> ApiKeyInfo:
        # Names are looked up now: a grant of a deleted instance names nothing, whatever came after it.
        names = (self._store.instance_name(instance_id) for instance_id in record.instance_ids)
        return ApiKeyInfo(
            id=record.id,
            name=record.name,
            permission_mode=PermissionMode(record.permission_mode),
            instances=sorted(name for name in names if name is not None),
            expires_at=record.expires_at,
            created_at=record.created_at,
            last_used_at=record.last_used_at,
        )

    def _validated_grants(self, request: CreateKeyRequest, now: int) -> frozenset[int]:
        """Check a create request; the ids of the instances the key may use."""
        if not request.name.strip():
            raise KeyRequestError("must not be empty", "name")
        if len(request.name) > MAX_NAME_LENGTH:
            raise KeyRequestError(f"must be at most {MAX_NAME_LENGTH} characters", "name")
        if request.expires_at is not None and request.expires_at <= now:
            raise KeyRequestError("must be in the future (unix seconds)", "expires_at")
        if request.permission_mode is PermissionMode.ALLOW_ALL:
            for field, listed in (("instances", request.instances), ("instance_ids", request.instance_ids)):
                if listed:
                    raise KeyRequestError("only a per_instance key lists instances", field)
            return frozenset()
        if not request.instances and not request.instance_ids:
            raise KeyRequestError("a per_instance key needs at least one instance", "instances")
        granted: set[int] = set()
        for index, name in enumerate(request.instances):
            instance_id = self._store.instance_id(name)
            if instance_id is None:
                raise KeyRequestError(f"instance {echo(name)} does not exist", f"instances[{index}]")
            granted.add(instance_id)
        for index, instance_id in enumerate(request.instance_ids):
            if self._store.instance_name(instance_id) is None:
                raise KeyRequestError(f"no instance with ID {instance_id}", f"instance_ids[{index}]")
            granted.add(instance_id)
        return frozenset(granted)
