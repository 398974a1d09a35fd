"""Who sent a request: management keys, inference keys, and the checks of each route family.

Management keys (``auth.management_keys``, or one generated at first start)
may do everything. Inference keys (``api_keys.py``) may do inference, on
every instance or on the ones they list.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import msgspec

from llamactl.errors import LlamactlError
from llamactl.server.api_keys import MAX_KEY_LENGTH, ApiKeyInfo, ApiKeyStore, PermissionMode, key_digest

MANAGEMENT_KEY_PREFIX = "llamactl-mgmt-"


class AuthError(LlamactlError):
    status = 401
    code = "invalid_api_key"


class ManagementKeys:
    """The keys allowed everything: the configured ones, or else the one generated at first start."""

    def __init__(self, configured: Iterable[str]) -> None:
        self._digests = {key_digest(key) for key in configured if key}
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
        digest = key_digest(key)
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
        return len(presented) <= MAX_KEY_LENGTH and key_digest(presented) in self._digests


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
