"""Gateways: who may push usage, and for which agencies.

A gateway's key is shown once at creation and stored only as SHA-256: keys carry 256 bits of
randomness, so a fast hash is safe, and ingest pays no password-hashing cost per batch.

A gateway added with `signed=True` also gets a signing secret (HMAC of each request body,
collector/signing.py). Unlike the key it must be readable to verify, so it is stored as is
(`gateways.signing_secret`, migration 0004), shown once at creation and never logged, listed
or returned afterwards (`Gateway.signing_secret` is left out of repr). docs/collectors.md says
why it is stored rather than derived from a server key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker import name_claims
from tracker.registry import Registry

KEY_PREFIX = "tk_"
SIGNING_PREFIX = "tks_"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class GatewayError(ValueError):
    pass


@dataclass(frozen=True)
class Gateway:
    gateway_id: str
    name: str
    agencies: frozenset[str]
    # Set only for gateways that must sign their requests; never in repr (logs, tracebacks).
    signing_secret: str | None = field(default=None, repr=False, compare=False)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_signing_secret() -> str:
    return SIGNING_PREFIX + secrets.token_urlsafe(32)


def add(
    client: Client, registry: Registry, name: str, agencies: list[str], *, signed: bool = False
) -> tuple[Gateway, str]:
    """Register a gateway for the given agencies; returns it with its new key (shown once).

    With `signed`, requests must also carry an HMAC signature: the returned gateway's
    `signing_secret` holds the secret, to be shown once like the key."""
    if not _NAME_RE.fullmatch(name):
        raise GatewayError(
            f"gateway name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-'"
        )
    if not agencies:
        raise GatewayError("a gateway must report for at least one agency (--agency ID)")
    known = {a.id for a in registry.agencies}
    unknown = sorted(set(agencies) - known)
    if unknown:
        raise GatewayError(f"agency not in the registry: {', '.join(unknown)}")
    exists = client.query(
        "SELECT count() FROM gateways FINAL WHERE gateway_id = {g:String}", parameters={"g": name}
    ).result_rows[0][0]
    if exists:
        raise GatewayError(f"gateway {name!r} already exists")
    key = new_key()
    secret = new_signing_secret() if signed else ""
    now = datetime.now(UTC)
    # Any later row version of a gateway (revocation, agency change) must carry
    # signing_secret over: ReplacingMergeTree keeps the newest row whole, and an empty secret
    # means "unsigned".
    client.insert(
        "gateways",
        [[name, name, sorted(set(agencies)), hash_key(key), now, 0, time.time_ns(), secret]],
        column_names=_COLUMNS,
        settings=name_claims.token("gateways", name),
    )
    if not name_claims.claimed(client, "gateways", name, hash_key(key)):
        raise GatewayError(f"gateway {name!r} already exists (added at the same time elsewhere)")
    return Gateway(name, name, frozenset(agencies), secret or None), key


_COLUMNS = ["gateway_id", "name", "agencies", "key_hash", "created_at", "revoked", "version",
            "signing_secret"]  # fmt: skip
_KEY_HASH, _REVOKED, _VERSION, _SECRET = map(
    _COLUMNS.index, ("key_hash", "revoked", "version", "signing_secret")
)


def _active_row(client: Client, name: str) -> list[Any] | None:
    rows = client.query(
        f"SELECT {', '.join(_COLUMNS)} FROM gateways FINAL "
        "WHERE gateway_id = {g:String} AND revoked = 0",
        parameters={"g": name},
    ).result_rows
    return list(rows[0]) if rows else None


def revoke(client: Client, name: str) -> bool:
    """Revoke a gateway's key (a newer row version with revoked = 1); False if none is active.
    Collectors refuse it within their cache's seconds; its records already landed stay.
    Checked after writing: a rotation written at the same moment may have won, and a revoke
    must not be reported done while a key of the gateway still works."""
    row = _active_row(client, name)
    if row is None:
        return False
    for _ in range(name_claims.REVOKE_ATTEMPTS):
        row[_REVOKED], row[_VERSION] = 1, name_claims.next_version(row[_VERSION])
        client.insert("gateways", [row], column_names=_COLUMNS)
        winner = _active_row(client, name)
        if winner is None:
            return True
        row = winner
    raise GatewayError(f"gateway {name!r}: the revoke kept losing to other changes; run it again")


@dataclass(frozen=True)
class Rotated:
    """What a rotation issued, each shown once: a new key, a new signing secret, or both."""

    key: str | None
    signing_secret: str | None = field(default=None, repr=False)


def rotate(client: Client, name: str, *, key: bool = True, secret: bool = False) -> Rotated | None:
    """A new key and/or signing secret for an active gateway, the old ones refused from then
    on (within the collectors' cache seconds); None if none is active. The gateway id and
    agencies stay, and whatever is not rotated: records keep their idempotency key
    (gateway_id, record_id), so a resend across the rotation still counts once."""
    if not key and not secret:
        raise GatewayError("nothing to rotate: rotate the key, the signing secret or both")
    row = _active_row(client, name)
    if row is None:
        return None
    if secret and not row[_SECRET]:
        raise GatewayError(
            f"gateway {name!r} does not sign its requests: it has no signing secret to rotate"
        )
    new_key_text = new_key() if key else None
    new_secret = new_signing_secret() if secret else None
    if new_key_text is not None:
        row[_KEY_HASH] = hash_key(new_key_text)
    if new_secret is not None:
        row[_SECRET] = new_secret
    read = row[_VERSION]
    row[_VERSION] = name_claims.next_version(read)
    client.insert("gateways", [row], column_names=_COLUMNS)
    revoked_meanwhile = client.query(
        "SELECT count() FROM gateways "
        "WHERE gateway_id = {g:String} AND revoked = 1 AND version > {v:UInt64}",
        parameters={"g": name, "v": read},
    ).result_rows[0][0]
    if revoked_meanwhile:
        # A revoke written between this rotation's read and its insert, on a host whose clock
        # ran behind, would lose to the rotation: the gateway would be active again after a
        # revoke reported done. The revoke is put back on top.
        row[_REVOKED], row[_VERSION] = 1, name_claims.next_version(row[_VERSION])
        client.insert("gateways", [row], column_names=_COLUMNS)
        raise GatewayError(f"gateway {name!r} was revoked while rotating: nothing was rotated")
    if _active_row(client, name) != row:
        # A revoke (or another rotation) written at the same moment won: what was issued
        # here does not work, and must not be handed out as if it did.
        raise GatewayError(
            f"gateway {name!r} changed while rotating (revoked or rotated by someone else): "
            "nothing was rotated; check it and run again"
        )
    return Rotated(new_key_text, new_secret)


def list_all(client: Client) -> list[Gateway]:
    rows = client.query(
        "SELECT gateway_id, name, agencies FROM gateways FINAL "
        "WHERE revoked = 0 ORDER BY gateway_id"
    ).result_rows
    return [Gateway(g, n, frozenset(a)) for g, n, a in rows]


class GatewayAuth:
    """Resolves a bearer key to its gateway, with a short cache so a new gateway is usable
    within seconds while ingest does not query ClickHouse on every batch."""

    def __init__(self, client: Client, ttl_seconds: float = 5.0) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._by_hash: dict[str, Gateway] = {}
        self._loaded_at = 0.0

    def _refresh(self) -> None:
        rows = self._client.query(
            "SELECT gateway_id, name, agencies, key_hash, signing_secret "
            "FROM gateways FINAL WHERE revoked = 0"
        ).result_rows
        self._by_hash = {h: Gateway(g, n, frozenset(a), s or None) for g, n, a, h, s in rows}
        self._loaded_at = time.monotonic()

    def authenticate(self, key: str) -> Gateway | None:
        digest = hash_key(key)
        with self._lock:
            if time.monotonic() - self._loaded_at > self._ttl:
                self._refresh()
            # A dict lookup on the digest is safe against timing probes: learning a stored
            # digest's prefix does not help anyone find a key that hashes to it.
            return self._by_hash.get(digest)
