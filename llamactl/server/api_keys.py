"""API keys: storage in the llamactl database, and authentication of requests.

Two kinds of key. Management keys (``auth.management_keys``, or one generated
at first start) may do everything. Inference keys are created through the API,
live in the database as SHA-256 digests only, and may be limited to a list of
instances. An inference key reads ``llamactl-<id>-<secret>``: the id lets a
request be checked against one row, so checking costs the same whatever the
number of keys (the Go llamactl ran Argon2id against every key, per request).
Digests are compared as bytes with ``hmac.compare_digest``: constant time, and
no ``TypeError`` on a non-ASCII header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import msgspec

from llamactl.errors import LlamactlError
from llamactl.instance.store import StoreError

KEY_PREFIX = "llamactl-"
MANAGEMENT_KEY_PREFIX = "llamactl-mgmt-"
MAX_KEY_LENGTH = 4096
"""Longer header values are refused before any hashing: no key of ours is near that long."""
MAX_NAME_LENGTH = 100
LAST_USED_RESOLUTION = 60
"""Seconds: ``last_used_at`` is written at most this often per key, not on every request."""
_MAX_ID_DIGITS = 18
"""Keeps a parsed id inside SQLite's 64-bit INTEGER, so a forged id cannot overflow the binding."""
_GENERATED_MANAGEMENT_DIGEST = "generated_management_key_sha256"

SCHEMA = """
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
    """The Go llamactl's way to name them; the API turns IDs into names before ``create``."""


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A key as the API shows it: never the key itself nor its digest."""

    id: int
    name: str
    permission_mode: PermissionMode
    instances: list[str]
    expires_at: int | None
    created_at: int
    last_used_at: int | None


class KeyRequestError(LlamactlError):
    """A create request breaks a rule; ``field`` names the offending field."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}", field)


class KeyNotFound(LlamactlError):
    status = 404
    code = "not_found"

    def __init__(self, key_id: int) -> None:
        super().__init__(f"no API key with id {key_id}", "id")
        self.key_id = key_id


class AuthError(LlamactlError):
    status = 401
    code = "invalid_api_key"


class _CachedKey(msgspec.Struct, frozen=True):
    digest: bytes
    info: ApiKeyInfo


def _digest(key: str) -> bytes:
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


def _validated_instances(request: CreateKeyRequest, existing_instances: set[str], now: int) -> list[str]:
    """Check a create request; the instance names, without repeats, in the order given."""
    if not request.name.strip():
        raise KeyRequestError("must not be empty", "name")
    if len(request.name) > MAX_NAME_LENGTH:
        raise KeyRequestError(f"must be at most {MAX_NAME_LENGTH} characters", "name")
    if request.expires_at is not None and request.expires_at <= now:
        raise KeyRequestError("must be in the future (unix seconds)", "expires_at")
    if request.permission_mode is PermissionMode.ALLOW_ALL:
        if request.instances:
            raise KeyRequestError("only a per_instance key lists instances", "instances")
        return []
    if not request.instances:
        raise KeyRequestError("a per_instance key needs at least one instance", "instances")
    for index, name in enumerate(request.instances):
        if name not in existing_instances:
            raise KeyRequestError(f"instance {name!r} does not exist", f"instances[{index}]")
    return list(dict.fromkeys(request.instances))


class ApiKeyStore:
    """The ``api_keys`` tables of the llamactl database, with a cache that keeps ``verify`` off SQLite.

    The lock makes one store usable from the event loop and from Starlette's
    worker threads alike: the connection and the cache change together.
    """

    def __init__(self, db_path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = db_path
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[int, _CachedKey] = {}
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as error:
            raise StoreError(f"cannot use the database {db_path}: {error}") from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def create(self, request: CreateKeyRequest, existing_instances: set[str]) -> tuple[ApiKeyInfo, str]:
        """Store a new key; the plaintext is returned here and never again."""
        now = int(self._clock())
        instances = _validated_instances(request, existing_instances, now)
        secret = secrets.token_urlsafe(32)
        with self._lock, self._transaction():
            # the key embeds its row id, so the row is made first and its digest filled in after
            cursor = self._db.execute(
                "INSERT INTO api_keys (name, key_sha256, permission_mode, expires_at, created_at)"
                " VALUES (?, x'', ?, ?, ?)",
                (request.name, request.permission_mode.value, request.expires_at, now),
            )
            key_id = cursor.lastrowid
            assert key_id is not None
            key = f"{KEY_PREFIX}{key_id}-{secret}"
            self._db.execute("UPDATE api_keys SET key_sha256 = ? WHERE id = ?", (_digest(key), key_id))
            self._db.executemany(
                "INSERT INTO api_key_instances (key_id, instance_name) VALUES (?, ?)",
                [(key_id, name) for name in instances],
            )
        info = ApiKeyInfo(
            id=key_id,
            name=request.name,
            permission_mode=request.permission_mode,
            instances=sorted(instances),
            expires_at=request.expires_at,
            created_at=now,
            last_used_at=None,
        )
        return info, key

    def get(self, key_id: int) -> ApiKeyInfo:
        with self._lock:
            cached = self._load(key_id)
        if cached is None:
            raise KeyNotFound(key_id)
        return cached.info

    def delete(self, key_id: int) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount
            self._cache.pop(key_id, None)
        if not deleted:
            raise KeyNotFound(key_id)

    def forget_instance(self, name: str) -> None:
        """Drop a deleted instance from every per_instance key.

        A key left with no instance stays per_instance and may use none: it is
        never widened to allow_all.
        """
        with self._lock:
            self._db.execute("DELETE FROM api_key_instances WHERE instance_name = ?", (name,))
            self._cache.clear()

    def verify(self, presented: str) -> ApiKeyInfo | None:
        """The key's info when ``presented`` is a live key, else None; malformed input never raises."""
        key_id = _parse_key_id(presented)
        if key_id is None:
            return None
        digest = _digest(presented)
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is None:
                cached = self._load(key_id)
                if cached is None:
                    return None
                self._cache[key_id] = cached
            if not hmac.compare_digest(cached.digest, digest):
                return None
            now = int(self._clock())
            info = cached.info
            if info.expires_at is not None and now >= info.expires_at:
                return None
            if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
                self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
                info = msgspec.structs.replace(info, last_used_at=now)
                self._cache[key_id] = _CachedKey(cached.digest, info)
            return info

    def _load(self, key_id: int) -> _CachedKey | None:
        row = self._db.execute(
            "SELECT id, name, key_sha256, permission_mode, expires_at, created_at, last_used_at"
            " FROM api_keys WHERE id = ?",
            (key_id,),
        ).fetchone()
        if row is None:
            return None
        instances = [
            name
            for (name,) in self._db.execute(
                "SELECT instance_name FROM api_key_instances WHERE key_id = ? ORDER BY instance_name",
                (key_id,),
            )
        ]
        return _CachedKey(row[2], _info(row, instances))

    def list(self) -> list[ApiKeyInfo]:
        """Every key, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, key_sha256, permission_mode, expires_at, created_at, last_used_at"
                " FROM api_keys ORDER BY created_at DESC, id DESC"
            ).fetchall()
            instances: dict[int, list[str]] = {}
            for key_id, name in self._db.execute(
                "SELECT key_id, instance_name FROM api_key_instances ORDER BY instance_name"
            ):
                instances.setdefault(key_id, []).append(name)
        return [_info(row, instances.get(row[0], [])) for row in rows]

    def generated_management_digest(self) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM settings WHERE name = ?", (_GENERATED_MANAGEMENT_DIGEST,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def save_generated_management_digest(self, digest: bytes) -> bool:
        """Record the generated management key's digest; False when one was recorded before."""
        with self._lock:
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)",
                (_GENERATED_MANAGEMENT_DIGEST, digest),
            ).rowcount
        return inserted == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _info(row: tuple[int, str, bytes, str, int | None, int, int | None], instances: list[str]) -> ApiKeyInfo:
    key_id, name, _digest_column, mode, expires_at, created_at, last_used_at = row
    return ApiKeyInfo(
        id=key_id,
        name=name,
        permission_mode=PermissionMode(mode),
        instances=instances,
        expires_at=expires_at,
        created_at=created_at,
        last_used_at=last_used_at,
    )


class ManagementKeys:
    """The keys allowed everything: the configured ones, or else the one generated at first start."""

    def __init__(self, configured: Iterable[str]) -> None:
        self._digests = {_digest(key) for key in configured if key}
        self._configured = bool(self._digests)

    def ensure_generated_key(self, store: ApiKeyStore) -> str | None:
        """Generate a management key when none is configured and none was generated before.

        Returns the plaintext only when it was generated now, so that it is
        shown once, ever; the database keeps its digest. Call it when
        management auth is required, before serving.
        """
        if self._configured:
            return None
        key = f"{MANAGEMENT_KEY_PREFIX}{secrets.token_urlsafe(32)}"
        digest = _digest(key)
        if store.save_generated_management_digest(digest):
            self._digests.add(digest)
            return key
        earlier = store.generated_management_digest()
        assert earlier is not None, "settings rows are never deleted"
        self._digests.add(earlier)
        return None

    def matches(self, presented: str) -> bool:
        # A set lookup compares SHA-256 digests, never keys: its timing can reveal
        # at most a digest prefix, which does not help to find a key.
        return len(presented) <= MAX_KEY_LENGTH and _digest(presented) in self._digests


class Principal(msgspec.Struct, frozen=True):
    """Who sent an inference request: a management key, an API key, or nobody (inference auth off)."""

    management: bool = False
    api_key: ApiKeyInfo | None = None


class Authenticator:
    """Checks the key of a request, from ``Authorization: Bearer`` or ``X-API-Key`` only.

    Never from the query string: URLs end up in access logs and Referer headers.
    """

    def __init__(
        self,
        management: ManagementKeys,
        store: ApiKeyStore,
        require_management: bool,
        require_inference: bool,
    ) -> None:
        self.management = management
        self.store = store
        self.require_management = require_management
        self.require_inference = require_inference

    def authenticate_management(self, authorization: str | None, x_api_key: str | None) -> None:
        if not self.require_management:
            return
        if not self.management.matches(_presented_key(authorization, x_api_key)):
            raise AuthError("invalid API key")

    def authenticate_inference(self, authorization: str | None, x_api_key: str | None) -> Principal:
        if not self.require_inference:
            return Principal()
        key = _presented_key(authorization, x_api_key)
        if self.management.matches(key):
            return Principal(management=True)
        info = self.store.verify(key)
        if info is None:
            raise AuthError("invalid API key")
        return Principal(api_key=info)

    def can_use(self, principal: Principal, instance_name: str) -> bool:
        if not self.require_inference or principal.management:
            return True
        key = principal.api_key
        if key is None:
            return False
        return key.permission_mode is PermissionMode.ALLOW_ALL or instance_name in key.instances


def _presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key from the headers; raises when there is none or it is absurdly long."""
    key = ""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    if not key and x_api_key:
        key = x_api_key.strip()
    if not key:
        raise AuthError("missing API key")
    if len(key) > MAX_KEY_LENGTH:
        raise AuthError("invalid API key")
    return key
