"""Shared FastAPI dependencies: the ClickHouse client of the calling thread."""

from __future__ import annotations

from typing import Annotated

from clickhouse_connect.driver.client import Client
from fastapi import Depends, Request

from tracker.clickhouse import ClientPool


def _client(request: Request) -> Client:
    pool: ClientPool = request.app.state.clickhouse
    return pool.get()


ClickHouse = Annotated[Client, Depends(_client)]
