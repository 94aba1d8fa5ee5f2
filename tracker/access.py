"""Read-API keys and roles: who may see what.

Roles, from least to most:
  public   no key: national aggregates, small cells suppressed (tracker/queries.py)
  agency   a key bound to one registered agency: that agency's detail, nothing of any other
  auditor  every record and aggregate, unsuppressed; every request is written to the audit log
  admin    as auditor, plus reading the audit log

A key is shown once at creation and stored only as SHA-256 (256-bit random tokens: a fast hash
is safe, and the read path pays no password-hashing cost per request).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from clickhouse_connect.driver.client import Client

from tracker import name_claims
from tracker.registry import Registry

KEY_PREFIX = "tka_"
# The calling thread's ClickHouse client (ClientPool.get): clients are per thread.
ClientFactory = Callable[[], Client]
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Role(StrEnum):
    public = "public"
    agency = "agency"
    auditor = "auditor"
    admin = "admin"


class AccessError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    """The caller of one request: a key's holder, or the anonymous public."""

    role: Role
    key_id: str = ""
    agency_id: str = ""

    @property
    def audited(self) -> bool:
        # Every keyed read leaves a trace; the brief requires it for auditors and admins, and an
        # agency's reads of its own raw records are cheap to log and useful in a dispute.
        return self.role is not Role.public

    @property
    def sees_everything(self) -> bool:
        return self.role in (Role.auditor, Role.admin)


PUBLIC = Identity(Role.public)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = [
    "key_id",
    "name",
    "role",
    "agency_id",
    "key_hash",
    "created_at",
    "created_by",
    "revoked",
    "version",
]


def add_key(
    client: Client,
    registry: Registry,
    name: str,
    role: Role,
    agency_id: str | None = None,
    created_by: str = "cli",
) -> tuple[Identity, str]:
    """Create a key; returns the identity it grants and the key itself (shown once)."""
    if not _NAME_RE.fullmatch(name):
        raise AccessError(f"key name {name!r}: use 1-64 lowercase letters, digits, '.', '_', '-'")
    if role is Role.public:
        raise AccessError("the public needs no key")
    if role is Role.agency:
        if not agency_id:
            raise AccessError("an agency key needs --agency ID")
        if agency_id not in {a.id for a in registry.agencies}:
            raise AccessError(f"agency not in the registry: {agency_id}")
    elif agency_id:
        raise AccessError(f"a {role.value} key sees every agency; drop --agency")
    exists = client.query(
        "SELECT count() FROM api_keys FINAL WHERE key_id = {k:String}", parameters={"k": name}
    ).result_rows[0][0]
    if exists:
        raise AccessError(f"key {name!r} already exists")
    key = new_key()
    row = [name, name, role.value, agency_id or "", hash_key(key), datetime.now(UTC),
           created_by, 0, time.time_ns()]  # fmt: skip
    client.insert("api_keys", [row], column_names=_COLUMNS,
                  settings=name_claims.token("api_keys", name))  # fmt: skip
    if not name_claims.claimed(client, "api_keys", name, hash_key(key)):
        raise AccessError(f"key {name!r} already exists (added at the same time elsewhere)")
    return Identity(role, name, agency_id or ""), key


def revoke_key(client: Client, name: str) -> bool:
    """Revoke a key by name (a newer row version with revoked = 1); False if unknown."""
    attempted = False
    for _ in range(name_claims.REVOKE_ATTEMPTS):
        rows = client.query(
            "SELECT key_id, name, role, agency_id, key_hash, created_at, created_by, version "
            "FROM api_keys FINAL WHERE key_id = {k:String} AND revoked = 0",
            parameters={"k": name},
        ).result_rows
        if not rows:
            return attempted
        *row, version = rows[0]
        # The clock alone lost to a row written on a host whose clock ran ahead: the revoke
        # was reported done and the key kept working (found in review).
        revoked = [*row, 1, name_claims.next_version(version)]
        client.insert("api_keys", [revoked], column_names=_COLUMNS)
        attempted = True
    raise AccessError(f"key {name!r}: the revoke kept losing to other changes; run it again")


def list_keys(client: Client) -> list[tuple[Identity, str, datetime]]:
    rows = client.query(
        "SELECT key_id, role, agency_id, name, created_at FROM api_keys FINAL "
        "WHERE revoked = 0 ORDER BY key_id"
    ).result_rows
    return [(Identity(Role(r), k, a), n, c) for k, r, a, n, c in rows]


class KeyAuth:
    """Resolves a bearer key to its identity. Keys are cached for a few seconds so the read
    path does not query ClickHouse per request, while a revoked key stops working quickly."""

    def __init__(self, client_factory: ClientFactory, ttl_seconds: float = 5.0) -> None:
        self._client = client_factory
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._by_hash: dict[str, Identity] = {}
        self._loaded_at = -1e18

    def _refresh(self) -> None:
        rows = (
            self._client()
            .query("SELECT key_id, role, agency_id, key_hash FROM api_keys FINAL WHERE revoked = 0")
            .result_rows
        )
        self._by_hash = {h: Identity(Role(r), k, a) for k, r, a, h in rows}
        self._loaded_at = time.monotonic()

    def authenticate(self, key: str) -> Identity | None:
        self.refresh_if_stale()
        return self.cached(key)

    def stale(self) -> bool:
        """Whether the next lookup must read the keys again (`refresh_if_stale`, which queries
        the store: in a worker thread from async code)."""
        return time.monotonic() - self._loaded_at > self._ttl

    def refresh_if_stale(self) -> None:
        with self._lock:
            if self.stale():
                self._refresh()

    def cached(self, key: str) -> Identity | None:
        """The key's identity as last read, without reading again: no I/O, so async code can
        check a key and act on the answer with nothing else running in between."""
        # A dict lookup on the digest is safe against timing probes: learning a stored
        # digest's prefix does not help anyone find a key that hashes to it.
        return self._by_hash.get(hash_key(key))
