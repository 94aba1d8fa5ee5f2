"""Shared FastAPI dependencies: the ClickHouse client of the calling thread."""

from __future__ import annotations

from typing import Annotated, Any, cast

from clickhouse_connect.driver.client import Client
from fastapi import Depends, Request

from tracker.clickhouse import ClientPool


class _CallingThreadClient:
    """The pool's client of whichever thread uses it. FastAPI resolves a sync dependency and
    runs the sync route on two threads of its pool, each taken from the pool again at once: the
    dependency thread's own client, handed to the route, was then used by another request on
    that thread at the same moment, which clickhouse-connect refuses over HTTP ("concurrent
    queries within the same session"; found with concurrent registry applies)."""

    def __init__(self, pool: ClientPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool.get(), name)


def _client(request: Request) -> Client:
    pool: ClientPool = request.app.state.clickhouse
    return cast(Client, _CallingThreadClient(pool))


ClickHouse = Annotated[Client, Depends(_client)]
