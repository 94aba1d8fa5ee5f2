"""Gateways: who may push usage, and for which agencies.

A gateway's key is shown once at creation and stored only as SHA-256: keys carry 256 bits of
randomness, so a fast hash is safe, and ingest pays no password-hashing cost per batch.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from tracker.registry import Registry

KEY_PREFIX = "tk_"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class GatewayError(ValueError):
    pass


@dataclass(frozen=True)
class Gateway:
    gateway_id: str
    name: str
    agencies: frozenset[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def add(client: Client, registry: Registry, name: str, agencies: list[str]) -> tuple[Gateway, str]:
    """Register a gateway for the given agencies; returns it with its new key (shown once)."""
    if not _NAME_RE.match(name):
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
    now = datetime.now(UTC)
    client.insert(
        "gateways",
        [[name, name, sorted(set(agencies)), hash_key(key), now, 0, time.time_ns()]],
        column_names=[
            "gateway_id",
            "name",
            "agencies",
            "key_hash",
            "created_at",
            "revoked",
            "version",
        ],
    )
    return Gateway(name, name, frozenset(agencies)), key


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
            "SELECT gateway_id, name, agencies, key_hash FROM gateways FINAL WHERE revoked = 0"
        ).result_rows
        self._by_hash = {h: Gateway(g, n, frozenset(a)) for g, n, a, h in rows}
        self._loaded_at = time.monotonic()

    def authenticate(self, key: str) -> Gateway | None:
        digest = hash_key(key)
        with self._lock:
            if time.monotonic() - self._loaded_at > self._ttl:
                self._refresh()
            # A dict lookup on the digest is safe against timing probes: learning a stored
            # digest's prefix does not help anyone find a key that hashes to it.
            return self._by_hash.get(digest)
