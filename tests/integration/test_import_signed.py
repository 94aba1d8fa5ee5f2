"""`tracker import` for a gateway registered with `--signed`, against the embedded app served
by uvicorn: files, the directory watch and the LiteLLM pull all sign with `--signing-secret`.
Found in review: the importer never signed, so such a gateway could not import at all."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from collector.adapters.common import Context
from collector.imports import Checkpoints, FileReport, Importer, Sender, watch
from tests.integration.test_collector_import import _SpendLogs
from tests.integration.test_collector_support import (
    SINGLE_AGENCY,
    make_app,
    older_proxy_spend_rows,
    raw_count,
)
from tracker.cli import app as cli
from tracker.cli.wiring import Core
from tracker.clickhouse import ClientPool
from tracker.gateways import Gateway, add
from tracker.settings import CommonSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(core: Core) -> tuple[Gateway, str]:
    """Made before the app's first request: GatewayAuth caches the table for 5 s."""
    return add(core.pool.get(), core.registry, f"gw-imp-signed-{uuid.uuid4().hex[:6]}",
               [SINGLE_AGENCY], signed=True)  # fmt: skip


@pytest.fixture(scope="module")
def app(settings: CommonSettings, core: Core, signed: tuple[Gateway, str]) -> FastAPI:
    return make_app(settings, core)


def _line(rid: str) -> str:
    return json.dumps({"request_id": rid, "created": int(time.time()) - 3600, "model": "gpt-4o",
                       "usage": {"prompt_tokens": 2, "completion_tokens": 1}}) + "\n"  # fmt: skip


def _import(url: str, key: str, state: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["import", "--url", url, "--key", key, "--data-dir",
                                    str(state), *args])  # fmt: skip


def test_a_signed_gateway_imports_files(
    url: str, signed: tuple[Gateway, str], pool: ClientPool, tmp_path: Path
) -> None:
    gateway, key = signed
    assert gateway.signing_secret is not None
    log = tmp_path / "a.jsonl"
    log.write_text("".join(_line(f"sf-{i}") for i in range(5)))
    refused = _import(url, key, tmp_path / "state", str(log))
    assert refused.exit_code == 2, refused.output
    assert "must sign its requests" in refused.output and "--signing-secret" in refused.output
    assert "refused the gateway key" not in refused.output

    done = _import(url, key, tmp_path / "state", str(log), "--batch-size", "2",
                   "--signing-secret", gateway.signing_secret)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "5 imported, 0 refused" in done.output
    assert gateway.signing_secret not in done.output and key not in done.output
    assert raw_count(pool, gateway.gateway_id, "startsWith(record_id, 'sf-')") == 5


def test_a_signed_gateway_watches_a_directory(
    url: str, signed: tuple[Gateway, str], pool: ClientPool, tmp_path: Path
) -> None:
    gateway, key = signed
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "w.jsonl").write_text(_line("sw-0") + _line("sw-1"))
    sender = Sender(url, key, signing_secret=gateway.signing_secret)
    importer = Importer(sender, Checkpoints(tmp_path / "cp.json"),
                        Context(default_agency=SINGLE_AGENCY))  # fmt: skip
    reports: list[FileReport] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(inbox, importer, stop, reports.append, 0.2))
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while sum(r.accepted for r in reports) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        watcher.join(timeout=30)
        sender.close()
    assert [(r.accepted, r.rejected) for r in reports] == [(2, 0)]
    assert raw_count(pool, gateway.gateway_id, "startsWith(record_id, 'sw-')") == 2


def test_a_signed_gateway_pulls_litellm(
    url: str, signed: tuple[Gateway, str], pool: ClientPool, tmp_path: Path
) -> None:
    gateway, key = signed
    assert gateway.signing_secret is not None
    rows = older_proxy_spend_rows()
    shift = (datetime.now(UTC) - timedelta(hours=1)
             - max(datetime.fromisoformat(r["startTime"]) for r in rows))  # fmt: skip
    _SpendLogs.rows = [
        {**r, "request_id": f"spull-{r['request_id']}",
         **{k: (datetime.fromisoformat(r[k]) + shift).isoformat()
            for k in ("startTime", "endTime", "completionStartTime") if r.get(k)}}
        for r in rows
    ]  # fmt: skip
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _SpendLogs)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        pulled = _import(url, key, tmp_path, "--litellm-url",
                         f"http://127.0.0.1:{proxy.server_address[1]}", "--litellm-key",
                         "sk-master", "--signing-secret", gateway.signing_secret)  # fmt: skip
    finally:
        proxy.shutdown()
    # One recorded call names in-cbse, which this gateway may not report for.
    assert pulled.exit_code == 1, pulled.output
    assert "3 imported, 1 refused" in pulled.output
    assert raw_count(pool, gateway.gateway_id, "startsWith(record_id, 'spull-')") == 3
