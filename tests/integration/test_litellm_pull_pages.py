"""The LiteLLM spend-log puller reads a window past the proxy's capped row count. (Found in
review: LiteLLM counts at most 10,000 rows, `total_pages` is that count's, and a busy proxy's
pulls stopped at the oldest 10,000 rows of their window, then stalled there for good, exit 0.)"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from collector.adapters.common import Context
from collector.adapters.litellm_pull import PAGE_SIZE, Puller
from collector.imports import Sender

CAP = 2 * PAGE_SIZE  # LiteLLM's is 10,000; any cap shows it
NOW = datetime.now(UTC)
STARTS = [NOW - timedelta(minutes=50) + timedelta(seconds=i) for i in range(5 * PAGE_SIZE + 123)]


def _row(i: int) -> dict[str, Any]:
    start = STARTS[i]
    return {"request_id": f"chatcmpl-{i}", "call_type": "completion",
            "custom_llm_provider": "openai", "model": "gpt-4o", "startTime": start.isoformat(),
            "endTime": (start + timedelta(seconds=2)).isoformat(), "prompt_tokens": 1,
            "completion_tokens": 1, "spend": 0.0, "status": "success", "metadata": {},
            "cache_hit": "False", "api_base": ""}  # fmt: skip


class _Proxy(BaseHTTPRequestHandler):
    """/spend/logs/v2 as LiteLLM 1.106 pages it: LIMIT/OFFSET over every matching row, the
    count clamped to CAP, total_pages from the clamped count."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        fmt = "%Y-%m-%d %H:%M:%S"
        lo = datetime.strptime(q["start_date"], fmt).replace(tzinfo=UTC)
        hi = datetime.strptime(q["end_date"], fmt).replace(tzinfo=UTC)
        a, b = bisect.bisect_left(STARTS, lo), bisect.bisect_right(STARTS, hi)
        page, size = int(q["page"]), int(q["page_size"])
        total = min(b - a, CAP)
        skip = (page - 1) * size
        body = json.dumps({
            "data": [_row(i) for i in range(a + skip, min(b, a + skip + size))],
            "total": total, "page": page, "page_size": size,
            "total_pages": (total + size - 1) // size, "total_is_capped": b - a > CAP,
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


class _Kept(Sender):
    """Keeps what it is given (no tracker server)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "k")
        self.sent: list[dict[str, Any]] = []

    def send(self, records: list[bytes]) -> dict[str, Any]:
        self.sent.extend(orjson.loads(r) for r in records)
        return {"accepted": len(records), "rejected": 0, "errors": []}


@pytest.fixture
def proxy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_window_past_the_proxys_capped_count_is_read_whole(proxy: str, tmp_path: Path) -> None:
    sender = _Kept()
    ctx = Context(default_agency="in-mohfw", agencies=frozenset({"in-mohfw"}))
    puller = Puller(proxy, "sk", sender, ctx, tmp_path / "state.json")
    report = puller.report()
    puller.pull_once(report)
    assert len({r["record_id"] for r in sender.sent}) == len(STARTS) > CAP
    assert report.accepted == len(STARTS)


class _CtrlCOnThirdSend(_Kept):
    def send(self, records: list[bytes]) -> dict[str, Any]:
        if len(self.sent) == 2 * 1000:
            raise KeyboardInterrupt
        return super().send(records)


def test_ctrl_c_mid_pull_in_follow_reports_what_the_pull_sent(proxy: str, tmp_path: Path) -> None:
    """`tracker import --litellm-url ... --follow`, Ctrl-C while a pull's third batch is on
    the wire: the two batches that landed are reported (and counted toward the exit code)
    before the command ends. Found in review: the pull's report was dropped."""
    sender = _CtrlCOnThirdSend()
    ctx = Context(default_agency="in-mohfw", agencies=frozenset({"in-mohfw"}))
    puller = Puller(proxy, "sk", sender, ctx, tmp_path / "state.json")
    reports: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        puller.follow(threading.Event(), 60, reports.append, lambda exc, pause: None)
    [report] = reports
    assert report.accepted == len(sender.sent) == 2000
    assert not (tmp_path / "state.json").exists()  # the pull did not finish: read again next
