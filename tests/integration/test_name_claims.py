"""Two adds of one gateway or API key name at once: exactly one is told it succeeded, and the key
it printed is the one that works (migration 0007, tracker/name_claims.py). Both adds are made to
pass the name check before either inserts, as two commands on a ClickHouse server can."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
from clickhouse_connect.driver.client import Client

from tracker.access import AccessError, KeyAuth, Role, add_key, list_keys, revoke_key
from tracker.clickhouse import ClientPool
from tracker.gateways import GatewayAuth, GatewayError, add, list_all, revoke, rotate
from tracker.registry import load

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


class _CheckTogether:
    """A client whose first query (the add's name check) waits until the other add has made its
    own: both find the name free. Everything reaches the real store."""

    def __init__(self, client: Client, barrier: threading.Barrier) -> None:
        self._client = client
        self._barrier = barrier
        self._checked = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        result = self._client.query(*args, **kwargs)
        if not self._checked:
            self._checked = True
            self._barrier.wait(timeout=60)
        return result


def _race(pool: ClientPool, add_one: Callable[[Client], str]) -> list[str | Exception]:
    """Run two adds whose checks both pass; each outcome is the printed key or the error."""
    barrier = threading.Barrier(2)
    outcomes: list[str | Exception] = [RuntimeError("did not run")] * 2

    def run(i: int) -> None:
        client = cast(Client, _CheckTogether(pool.get(), barrier))
        try:
            outcomes[i] = add_one(client)
        except (GatewayError, AccessError) as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


def _one_winner(outcomes: list[str | Exception]) -> str:
    keys = [o for o in outcomes if isinstance(o, str)]
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(keys) == 1 and len(errors) == 1, outcomes
    assert "already exists" in str(errors[0]), errors[0]
    return keys[0]


def test_two_gateway_adds_of_one_name_at_once(pool: ClientPool) -> None:
    registry = load()[0]
    agency = registry.agencies[0].id
    for _ in range(3):  # the race is forced each time; three names to see it hold
        name = f"gw-race-{uuid.uuid4().hex[:6]}"

        def add_gateway(client: Client, name: str = name) -> str:
            return add(client, registry, name, [agency])[1]

        key = _one_winner(_race(pool, add_gateway))
        found = GatewayAuth(pool.get(), ttl_seconds=0).authenticate(key)
        assert found is not None and found.gateway_id == name
        assert [g.gateway_id for g in list_all(pool.get())].count(name) == 1


def test_two_key_adds_of_one_name_at_once(pool: ClientPool) -> None:
    registry = load()[0]
    for _ in range(3):
        name = f"k-race-{uuid.uuid4().hex[:6]}"

        def add_auditor(client: Client, name: str = name) -> str:
            return add_key(client, registry, name, Role.auditor)[1]

        key = _one_winner(_race(pool, add_auditor))
        found = KeyAuth(pool.get, ttl_seconds=0).authenticate(key)
        assert found is not None and found.key_id == name and found.role is Role.auditor
        assert [i.key_id for i, _, _ in list_keys(pool.get())].count(name) == 1


def _rewrite_ahead(client: Client, table: str, id_column: str, name: str) -> None:
    """The active row written again with a version a minute ahead of this host's clock, as a
    change made on a host whose clock runs ahead would be."""
    client.command(
        f"INSERT INTO {table} SELECT * REPLACE (version + 60000000000 AS version) FROM "
        f"(SELECT * FROM {table} FINAL WHERE {id_column} = {{n:String}} AND revoked = 0)",
        parameters={"n": name},
    )


def test_a_revoke_wins_over_a_row_from_a_clock_ahead(pool: ClientPool) -> None:
    # Found in review: the revoke's version was this host's clock alone; against a row written
    # on a host whose clock ran ahead it lost the merge, was reported done, and the key worked.
    registry = load()[0]
    gw = f"gw-ahead-{uuid.uuid4().hex[:6]}"
    gw_key = add(pool.get(), registry, gw, [registry.agencies[0].id])[1]
    _rewrite_ahead(pool.get(), "gateways", "gateway_id", gw)
    assert revoke(pool.get(), gw)
    assert gw not in [g.gateway_id for g in list_all(pool.get())]
    assert GatewayAuth(pool.get(), ttl_seconds=0).authenticate(gw_key) is None
    k = f"k-ahead-{uuid.uuid4().hex[:6]}"
    api_key = add_key(pool.get(), registry, k, Role.auditor)[1]
    _rewrite_ahead(pool.get(), "api_keys", "key_id", k)
    assert revoke_key(pool.get(), k)
    assert k not in [i.key_id for i, _, _ in list_keys(pool.get())]
    assert KeyAuth(pool.get, ttl_seconds=0).authenticate(api_key) is None


class _RevokedAfterRead:
    """A client for a rotation: right after its first query (the read of the active row), the
    gateway is revoked through another client, with a version behind the rotation's."""

    def __init__(self, client: Client, revoke_now: Callable[[], None]) -> None:
        self._client = client
        self._revoke_now: Callable[[], None] | None = revoke_now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        result = self._client.query(*args, **kwargs)
        revoke_now, self._revoke_now = self._revoke_now, None
        if revoke_now is not None:
            revoke_now()
        return result


def test_a_revoke_made_during_a_rotation_stays(pool: ClientPool) -> None:
    # Found in review: a revoke landing between a rotation's read and its insert lost to the
    # rotation's newer version; the gateway was active again and the rotated key worked.
    registry = load()[0]
    gw = f"gw-rot-{uuid.uuid4().hex[:6]}"
    old_key = add(pool.get(), registry, gw, [registry.agencies[0].id])[1]

    def revoke_behind() -> None:
        # The revoking host's clock is behind: its version is the read row's + 1.
        client = pool.get()
        client.command(
            "INSERT INTO gateways SELECT * REPLACE (1 AS revoked, version + 1 AS version) FROM "
            "(SELECT * FROM gateways FINAL WHERE gateway_id = {n:String} AND revoked = 0)",
            parameters={"n": gw},
        )

    with pytest.raises(GatewayError, match="revoked while rotating"):
        rotate(cast(Client, _RevokedAfterRead(pool.get(), revoke_behind)), gw)
    assert gw not in [g.gateway_id for g in list_all(pool.get())]
    auth = GatewayAuth(pool.get(), ttl_seconds=0)
    assert auth.authenticate(old_key) is None
