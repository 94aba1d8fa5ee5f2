"""Pull LiteLLM_SpendLogs rows from a LiteLLM proxy's spend-log API into the tracker.

`GET /spend/logs/v2` (paginated, start/end to the second, sorted by startTime ascending); proxies
without it (404) are read through the older `GET /spend/logs?summarize=false` by whole days.
The checkpoint (data_dir/import/litellm-<hash of the proxy URL>.json) is the latest startTime
delivered. Each pull re-reads from `overlap` before it, because the proxy writes spend logs in
batches, a little after the calls; rows read twice keep their request_id and count once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from collector.adapters import litellm
from collector.adapters.common import Context, Rejected, as_time, run
from collector.imports import (
    FileReport,
    ImportAborted,
    Sender,
    UnusableArguments,
    redact_text,
    redact_url,
    tally,
)

PAGE_SIZE: Final = 500


def _json(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError as exc:
        raise ImportAborted(f"LiteLLM {reply.url.path} answered no JSON") from exc


def state_path(data_dir: Path, proxy_url: str) -> Path:
    digest = hashlib.sha256(proxy_url.rstrip("/").encode()).hexdigest()[:16]
    return data_dir / "import" / f"litellm-{digest}.json"


@dataclass
class Puller:
    proxy_url: str
    proxy_key: str
    sender: Sender
    ctx: Context
    state_file: Path
    overlap: timedelta = timedelta(minutes=10)
    first_since: timedelta = timedelta(days=1)
    timeout: float = 60.0

    def _watermark(self) -> datetime | None:
        if not self.state_file.exists():
            return None
        try:
            value = orjson.loads(self.state_file.read_bytes()).get("watermark")
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except (ValueError, AttributeError) as exc:
            raise UnusableArguments(
                f"{self.state_file}: the pull's checkpoint is damaged; move it away to pull "
                "the last day again (records already landed count once)"
            ) from exc

    def _save(self, watermark: datetime) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"watermark": watermark.isoformat()}))
        os.replace(tmp, self.state_file)

    def _rows(self, client: httpx.Client, start: datetime, end: datetime) -> Iterator[Any]:
        fmt = "%Y-%m-%d %H:%M:%S"
        page = 1
        while True:
            reply = client.get("/spend/logs/v2", params={
                "start_date": start.strftime(fmt), "end_date": end.strftime(fmt), "page": page,
                "page_size": PAGE_SIZE, "sort_by": "startTime", "sort_order": "asc"})  # fmt: skip
            if reply.status_code == 404 and page == 1:
                yield from self._rows_v1(client, start, end)
                return
            reply.raise_for_status()
            body = _json(reply)
            if not isinstance(body, dict):
                raise ImportAborted("LiteLLM /spend/logs/v2 answered no page object")
            yield from body.get("data") or []
            if page >= int(body.get("total_pages") or 1):
                return
            page += 1

    def _rows_v1(self, client: httpx.Client, start: datetime, end: datetime) -> Iterator[Any]:
        params = {
            "start_date": start.strftime("%Y-%m-%d"),
            "end_date": (end + timedelta(days=1)).strftime("%Y-%m-%d"),
            "summarize": "false",
        }
        reply = client.get("/spend/logs", params=params)
        reply.raise_for_status()
        body = _json(reply)
        yield from body if isinstance(body, list) else []

    def pull_once(self, report: FileReport) -> None:
        """Fetch, deliver and checkpoint everything since the watermark (minus the overlap)."""
        now = datetime.now(UTC)
        watermark = self._watermark()
        start = (watermark - self.overlap) if watermark else now - self.first_since
        end = now + timedelta(minutes=1)
        newest = watermark
        batch: list[dict[str, Any]] = []
        numbers: list[int] = []
        headers = {"Authorization": f"Bearer {self.proxy_key}"}
        with httpx.Client(base_url=self.proxy_url.rstrip("/"), headers=headers,
                          timeout=self.timeout) as client:  # fmt: skip
            try:
                rows = list(self._rows(client, start, end))
            except httpx.HTTPStatusError as exc:
                # Not str(exc): it quotes the URL, which may carry user:password.
                raise ImportAborted(
                    f"LiteLLM spend-log API answered {exc.response.status_code} "
                    f"at {exc.request.url.path}"
                ) from exc
            except httpx.HTTPError as exc:
                raise ImportAborted(
                    f"LiteLLM spend-log API at {redact_url(self.proxy_url)}: "
                    f"{type(exc).__name__}: {redact_text(str(exc), self.proxy_url)}"
                ) from exc
            except (ValueError, TypeError) as exc:  # total_pages that is no number
                raise ImportAborted(f"LiteLLM spend-log API answered a bad page: {exc}") from exc
        for number, row in enumerate(rows, start=1):
            mapped = run(litellm.map_spend_log, row, self.ctx)
            if isinstance(row, dict) and row.get("startTime"):
                try:
                    seen = as_time(row["startTime"], assume_utc=True)
                except ValueError:
                    seen = None
                if seen is not None and (newest is None or seen > newest):
                    newest = seen
            if isinstance(mapped, Rejected):
                report.rejected += 1
                report.add_error(number, mapped.field, mapped.reason)
            elif mapped is not None:
                batch.append(mapped)
                numbers.append(number)
        for first in range(0, len(batch), 1000):
            result = self.sender.send(batch[first : first + 1000])
            tally(report, result, numbers[first : first + 1000])
        if newest is not None:
            self._save(newest)
