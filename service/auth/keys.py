"""Who is calling: API keys (bearer tokens, stored as sha256), tenants and scopes.

No FastAPI here: the routes' dependencies and the predict lane both call
``Authenticator.principal(headers, needed)``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from service.config import Settings
from service.errors import Forbidden, Unauthorized
from service.store.keys import KeyRepository
from service.store.metadata import MetadataStore

SCOPES = ("predict", "train", "admin")  # each includes the ones before it
_CACHE_SECONDS = 2.0  # a revoked key stops working within this time
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    tenant: str
    scope: str
    key_id: str | None = None

    def allows(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


OPEN = Principal(DEFAULT_TENANT, "admin")  # auth off: one tenant, every scope


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "fsk_" + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, insecure: bool = False) -> str | None:
    """Why this server must not start as configured (None: it may)."""
    if settings.auth or is_loopback(settings.host) or insecure:
        return None
    return (
        f"refusing to listen on {settings.host} with authentication off: anyone who can reach "
        "it could train and read every model. Create a key with `fitserve keys create "
        "--tenant NAME --scope admin`, then start with FITSERVE_AUTH=true (or bind "
        "127.0.0.1, or pass --insecure to accept the risk)."
    )


class Authenticator:
    def __init__(self, settings: Settings, meta: MetadataStore) -> None:
        self.enabled = settings.auth
        self.keys = KeyRepository(meta)
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._misses: set[str] = set()

    def create(self, tenant: str, scope: str, name: str | None = None) -> tuple[str, str]:
        """A new key for a tenant and scope; returns (key id, the key: shown once)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key = new_key()
        row = self.keys.add(tenant, scope, hash_key(key), key[:8], name)
        return row.id, key

    def principal(self, headers: Mapping[str, str], needed: str) -> Principal:
        """The caller, if allowed ``needed``; else 401 (no or bad key) or 403 (scope).
        May read the metadata store: call it off the event loop (see ``cached``)."""
        if not self.enabled:
            return OPEN
        return self._check(self._lookup(self._token(headers)), needed)

    def cached(self, headers: Mapping[str, str], needed: str) -> Principal | None:
        """Like ``principal`` when the answer needs no store read; None when it does."""
        if not self.enabled:
            return OPEN
        token = self._token(headers)
        hit = self._cache.get(hash_key(token)) if token else None
        if token and (hit is None or hit[0] <= time.monotonic()):
            return None
        return self._check(hit[1] if hit else None, needed)

    def _token(self, headers: Mapping[str, str]) -> str:
        if not self.enabled:
            return ""
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send an API key: Authorization: Bearer <key>",
                               headers={"WWW-Authenticate": "Bearer"})
        return token.strip()

    def _check(self, who: Principal | None | str, needed: str) -> Principal:
        if not self.enabled:
            return OPEN
        if not isinstance(who, Principal):
            raise Unauthorized("the API key is unknown or revoked",
                               headers={"WWW-Authenticate": "Bearer"})
        if not who.allows(needed):
            raise Forbidden(f"this key's scope is {who.scope!r}; this needs {needed!r}")
        return who

    def _lookup(self, token: str) -> Principal | None:
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = self.keys.by_hash(digest)
        who = None
        if row is not None and row.revoked_at is None:
            who = Principal(row.tenant, row.scope, row.id)
        if who is None:  # junk tokens are remembered apart, and cannot push good keys out
            if len(self._misses) > 10_000:
                for d in self._misses:
                    self._cache.pop(d, None)
                self._misses.clear()
            self._misses.add(digest)
        self._cache[digest] = (now + _CACHE_SECONDS, who)
        return who


async def principal_of(auth: Authenticator, headers: Mapping[str, str], needed: str
                       ) -> Principal:
    """``auth.principal`` for async code: cached answers at once, store reads in a thread."""
    who = auth.cached(headers, needed)
    if who is not None:
        return who
    import anyio.to_thread

    return await anyio.to_thread.run_sync(auth.principal, headers, needed)
