"""Two adds of one gateway or API key name at once: exactly one is told it succeeded, and the key
it printed is the one that works (migration 0007, tracker/name_claims.py). Both adds are made to
pass the name check before either inserts, as two commands on a ClickHouse server can."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, cast

from clickhouse_connect.driver.client import Client

from tracker.access import AccessError, KeyAuth, Role, add_key, list_keys
from tracker.clickhouse import ClientPool
from tracker.gateways import GatewayAuth, GatewayError, add, list_all
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
