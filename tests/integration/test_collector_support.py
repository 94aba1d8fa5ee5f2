"""Shared by the collector integration tests (holds no tests itself): the embedded app on the
module's chdb database, registered gateways, and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from pipeline.processor import Processor
from tracker import registry as registry_mod
from tracker.classify import Classifier
from tracker.cli.wiring import Core, embedded_app
from tracker.clickhouse import ClientPool
from tracker.gateways import add
from tracker.settings import CommonSettings, EmbeddedSettings

SINGLE_AGENCY = "in-mohfw"
MULTI_AGENCIES = ("in-moe", "in-cbse", "in-kvs")


@dataclass(frozen=True)
class Keys:
    single: str  # gateway reporting for SINGLE_AGENCY only
    single_id: str
    multi: str  # gateway reporting for MULTI_AGENCIES
    multi_id: str


class ServerThread:
    """uvicorn serving an app on a loopback port (ephemeral unless given), in a background
    thread."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off", access_log=False)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def make_core(pool: ClientPool) -> Core:
    registry, _ = registry_mod.load(None)
    return Core(pool, registry, Processor(Classifier(registry)))


def make_app(
    settings: CommonSettings,
    core: Core,
    max_body_bytes: int = 16 * 1024 * 1024,
    max_batch_records: int = 10_000,
) -> FastAPI:
    embedded = EmbeddedSettings(
        data_dir=settings.data_dir,
        clickhouse_database=settings.clickhouse_database,
        max_body_bytes=max_body_bytes,
        max_batch_records=max_batch_records,
    )
    return embedded_app(embedded, core)


def make_keys(core: Core) -> Keys:
    suffix = uuid.uuid4().hex[:6]
    single, single_key = add(core.pool.get(), core.registry, f"gw-one-{suffix}", [SINGLE_AGENCY])
    multi, multi_key = add(
        core.pool.get(), core.registry, f"gw-many-{suffix}", list(MULTI_AGENCIES)
    )
    return Keys(single_key, single.gateway_id, multi_key, multi.gateway_id)


def raw_count(pool: ClientPool, gateway_id: str, where: str = "1") -> int:
    rows = (
        pool.get()
        .query(
            f"SELECT count() FROM usage_raw WHERE gateway_id = {{g:String}} AND {where}",
            parameters={"g": gateway_id},
        )
        .result_rows
    )
    return int(rows[0][0])


def older_proxy_spend_rows() -> list[dict[str, Any]]:
    """The recorded LiteLLM spend-log rows as an older proxy serves them: without the
    `litellm_call_id` column (nor that key in their metadata), so that a test giving rows
    request ids of its own has them keyed by those (collector/adapters/litellm.py)."""
    path = Path(__file__).resolve().parents[1] / "fixtures/litellm/spend_logs.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    return [
        {**{k: v for k, v in row.items() if k != "litellm_call_id"},
         "metadata": {k: v for k, v in (row.get("metadata") or {}).items()
                      if k != "litellm_call_id"}}
        for row in rows
    ]  # fmt: skip
