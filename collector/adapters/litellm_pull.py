"""Pull LiteLLM_SpendLogs rows from a LiteLLM proxy's spend-log API into the tracker.

`GET /spend/logs/v2` (paginated, start/end to the second, sorted by startTime ascending); proxies
without it (404) are read through the older `GET /spend/logs?summarize=false` by whole days.

The proxy keys a row by the call's start but writes it when the call ends (and a little after,
in batches), and the API filters on the start only. So no single watermark is safe:
- each pull re-reads from `overlap` (10 minutes) before the newest start it has seen, which
  catches every call that ended within a few minutes of its start;
- every `sweep_every` (30 minutes) a pull reaches back to `max_call` (LiteLLM's default request
  timeout, 6,000 s) before the previous sweep, which catches every call that ended since that
  sweep however long it ran, and sends of those only what the short pulls cannot have sent.
The checkpoint (data_dir/import/litellm-<hash of the proxy URL, tracker URL and gateway>.json)
holds the newest start seen and the time of the last sweep: rows pulled into one tracker, or by
one gateway, have not reached another. Rows read twice keep their record id and count once; a
following puller does not send again what it has sent.

Records are keyed by LiteLLM's call id and request id together, by its call id alone in the
releases of 2026-11-26 before that, and by its request id before those
(collector/adapters/litellm.py). Every pull re-reads rows an earlier one sent, so a checkpoint
an earlier release wrote also marks the change: rows started at or before its watermark keep
the id they were sent under (`call_ids_from`: the request id; `pair_ids_from`: the call id; both
kept in the checkpoint from then on), and a re-read counts once either side of an upgrade.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    encode,
    outage_pause,
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


def state_path(data_dir: Path, proxy_url: str, *, server: str, gateway: str) -> Path:
    """The pull's checkpoint, one per proxy, tracker server and gateway."""
    return _named(data_dir, "\n".join((proxy_url.rstrip("/"), server.rstrip("/"), gateway)))


def legacy_state_path(data_dir: Path, proxy_url: str) -> Path:
    """Where releases before 2026-11-25 kept the checkpoint: per proxy URL only."""
    return _named(data_dir, proxy_url.rstrip("/"))


def _named(data_dir: Path, scope: str) -> Path:
    digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
    return data_dir / "import" / f"litellm-{digest}.json"


# How long after a call ends the proxy may write its row (it writes in batches every few seconds),
# plus a newest start up to a minute ahead of the pull (a gateway's clock): a margin.
WRITE_DELAY: Final = timedelta(minutes=3)
# LiteLLM's default request timeout (litellm.request_timeout): no call runs longer unless the
# proxy is configured so (then pass its timeout as --litellm-max-call).
LITELLM_MAX_CALL: Final = timedelta(seconds=6000)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Checkpoint:
    watermark: datetime | None  # the newest startTime delivered
    swept_at: datetime | None  # when the last sweep's read began
    # Rows started at or before it are keyed by their request id, as the releases before
    # 2026-11-26 sent them (the watermark of a checkpoint such a release wrote); None: none.
    call_ids_from: datetime | None = None
    # Rows started at or before it (and after call_ids_from) are keyed by their call id alone,
    # as the releases of 2026-11-26 before the fallback fix sent them; None: none.
    pair_ids_from: datetime | None = None

    def ids(self, started: datetime | None) -> litellm.IdScheme:
        """How a row started then was keyed when an earlier release may have sent it."""
        if started is not None:
            if self.call_ids_from is not None and started <= self.call_ids_from:
                return "request"
            if self.pair_ids_from is not None and started <= self.pair_ids_from:
                return "call"
        return "pair"


def _duration(row: dict[str, Any], start: datetime) -> timedelta | None:
    """How long the call ran, if the row says: its endTime, else request_duration_ms."""
    try:
        if row.get("endTime"):
            return as_time(row["endTime"], assume_utc=True) - start
        ms = row.get("request_duration_ms")
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            return timedelta(milliseconds=ms)
    except (ValueError, OverflowError):
        pass
    return None


@dataclass
class Puller:
    proxy_url: str
    proxy_key: str = field(repr=False)  # a secret: never in a repr
    sender: Sender
    ctx: Context
    state_file: Path
    overlap: timedelta = timedelta(minutes=10)
    max_call: timedelta = LITELLM_MAX_CALL
    sweep_every: timedelta = timedelta(minutes=30)
    first_since: timedelta = timedelta(days=1)
    timeout: float = 60.0
    # A checkpoint of the earlier layout, taken up by the first scope that has none of its
    # own: it is what that release would have resumed from, and starting a day back instead
    # would skip what a puller stopped for longer missed. Once that scope saves its own, the
    # old file is renamed `.adopted`, so no other scope starts from another's watermark.
    legacy_state: Path | None = None
    # request_id -> (startTime, ran longer than the short pulls cover) of rows this puller sent
    # or refused: a following pull skips them. Kept while a pull may read them again.
    _sent: dict[str, tuple[datetime, bool]] = field(default_factory=dict)

    def _checkpoint(self) -> _Checkpoint:
        source = self.state_file
        if not source.exists():
            if self.legacy_state is None or not self.legacy_state.exists():
                return _Checkpoint(None, None)
            source = self.legacy_state
        try:
            state = orjson.loads(source.read_bytes())
            names = ("watermark", "swept_at", "call_ids_from", "pair_ids_from")
            marks = [state.get(name) for name in names]
            # Written in UTC; a time without its offset (edited by hand) is read as UTC, not
            # left to fail the first comparison with a trace.
            watermark, swept_at, call_ids_from, pair_ids_from = (
                _utc(datetime.fromisoformat(v)) if isinstance(v, str) else None for v in marks
            )
            if "call_ids" not in state:  # an earlier release's: it sent rows by request id
                call_ids_from = watermark
            if "pair_ids" not in state:  # ... or by call id (or request id, before that)
                pair_ids_from = watermark
            return _Checkpoint(watermark, swept_at, call_ids_from, pair_ids_from)
        except (ValueError, AttributeError) as exc:
            raise UnusableArguments(
                f"{source}: the pull's checkpoint is damaged; move it away to pull "
                "the last day again (records already landed count once)"
            ) from exc

    def _save(self, checkpoint: _Checkpoint) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        marks = {name: value.isoformat() for name, value in (
            ("watermark", checkpoint.watermark), ("swept_at", checkpoint.swept_at),
            ("call_ids_from", checkpoint.call_ids_from),
            ("pair_ids_from", checkpoint.pair_ids_from)) if value is not None}  # fmt: skip
        tmp.write_bytes(orjson.dumps({**marks, "call_ids": True, "pair_ids": True}))
        os.replace(tmp, self.state_file)
        legacy = self.legacy_state
        if legacy is not None and legacy.exists():
            os.replace(legacy, legacy.with_name(legacy.name + ".adopted"))

    def _rows(self, client: httpx.Client, start: datetime, end: datetime) -> Iterator[Any]:
        fmt = "%Y-%m-%d %H:%M:%S"
        page = 1
        while True:
            reply = client.get("/spend/logs/v2", params={
                "start_date": start.strftime(fmt), "end_date": end.strftime(fmt), "page": page,
                "page_size": PAGE_SIZE, "sort_by": "startTime", "sort_order": "asc",
                # The proxy's own health checks are no agency's usage (the adapter drops any
                # that come anyway: older proxies do not know this parameter).
                "exclude_internal_health_checks": "true"})  # fmt: skip
            if reply.status_code == 404 and page == 1:
                yield from self._rows_v1(client, start, end)
                return
            reply.raise_for_status()
            body = _json(reply)
            if not isinstance(body, dict):
                raise ImportAborted("LiteLLM /spend/logs/v2 answered no page object")
            data = body.get("data") or []
            yield from data
            # LiteLLM counts at most 10,000 rows (`total_is_capped`), and total_pages is that
            # count's: a window holding more was read only to its oldest 10,000, and a busy
            # proxy's pulls stalled there for good, exiting 0 (found in review). Its pages past
            # the count still hold rows (LIMIT/OFFSET), so a capped count is read on until a
            # page comes back short.
            capped = body.get("total_is_capped") is True
            full = isinstance(data, list) and len(data) >= PAGE_SIZE
            if page >= int(body.get("total_pages") or 1) and not (capped and full):
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

    def _fetched(self, start: datetime, end: datetime) -> Iterator[Any]:
        """The proxy's rows from `start`, page by page (a sweep may read hours of them), its
        failures as ImportAborted."""
        headers = {"Authorization": f"Bearer {self.proxy_key}"}
        with httpx.Client(base_url=self.proxy_url.rstrip("/"), headers=headers,
                          timeout=self.timeout) as client:  # fmt: skip
            try:
                yield from self._rows(client, start, end)
            except httpx.HTTPStatusError as exc:
                # Not str(exc): it quotes the URL, which may carry user:password.
                if exc.response.status_code in (401, 403):
                    # No wait makes a refused key good: a follow ends here, not retries.
                    raise UnusableArguments(
                        f"LiteLLM spend-log API refused the key (--litellm-key): answered "
                        f"{exc.response.status_code} at {exc.request.url.path}"
                    ) from exc
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

    def _window(self, now: datetime, mark: _Checkpoint) -> tuple[datetime, datetime, bool]:
        """(start of this pull's read, start of what the short pulls cover, is it a sweep)."""
        if mark.watermark is None:
            return now - self.first_since, now - self.first_since, True
        short = mark.watermark - self.overlap
        if mark.swept_at is not None and now - mark.swept_at < self.sweep_every:
            return short, short, False
        # Every call that ended since the last sweep started at most max_call before it.
        since = mark.swept_at if mark.swept_at is not None else short
        return min(short, since - self.max_call - WRITE_DELAY), short, True

    def _already_covered(self, row: dict[str, Any], start: datetime | None,
                         short: datetime) -> tuple[bool, bool]:  # fmt: skip
        """(sent before, ran long): whether a row read again need not be sent again."""
        rid = row.get("request_id")
        if isinstance(rid, str) and rid in self._sent:
            return True, self._sent[rid][1]
        if start is None:
            return False, True
        took = _duration(row, start)
        long = took is None or took + WRITE_DELAY > self.overlap
        # A call that ran shorter than the short pulls' reach, started before it: some pull
        # read it when its row appeared (whichever process made that pull).
        return start < short and not long, long

    def _remember(self, row: dict[str, Any], start: datetime | None, long: bool) -> None:
        rid = row.get("request_id")
        if isinstance(rid, str) and start is not None:
            self._sent[rid] = (start, long)

    def _forget_before(self, short: datetime, sweep: datetime) -> None:
        """Drop what no pull will read again: short calls before the short reach, long ones
        before the next sweep's."""
        self._sent = {rid: (start, long) for rid, (start, long) in self._sent.items()
                      if start >= (sweep if long else short)}  # fmt: skip

    def pull_once(self, report: FileReport) -> None:
        """Fetch and deliver what is new since the checkpoint; then move the checkpoint."""
        now = datetime.now(UTC)
        mark = self._checkpoint()
        start, short, sweep = self._window(now, mark)
        end = now + timedelta(minutes=1)
        newest = mark.watermark
        batch: list[bytes] = []
        numbers: list[int] = []
        pending: list[tuple[dict[str, Any], datetime | None, bool]] = []

        def send() -> None:
            result = self.sender.send(batch)
            tally(report, result, numbers)
            for row, started, long in pending:
                self._remember(row, started, long)
            batch.clear()
            numbers.clear()
            pending.clear()

        for number, row in enumerate(self._fetched(start, end), start=1):
            seen: datetime | None = None
            long = False
            if isinstance(row, dict):
                if row.get("startTime"):
                    try:
                        seen = as_time(row["startTime"], assume_utc=True)
                    except ValueError:
                        seen = None
                    if seen is not None and (newest is None or seen > newest):
                        newest = seen
                covered, long = self._already_covered(row, seen, short)
                if covered:
                    continue
            # Encoded one by one, as the importer does: a value JSON cannot carry (a lone
            # surrogate the reply's parser let through) is refused alone, not the whole pull.
            mapper = functools.partial(litellm.map_spend_log, ids=mark.ids(seen))
            found = run(mapper, row, self.ctx)
            mapped = encode(found) if isinstance(found, dict) else found
            if isinstance(mapped, Rejected):
                report.rejected += 1
                report.add_error(number, mapped.field, mapped.reason)
                if isinstance(row, dict):
                    self._remember(row, seen, long)  # not reported again
            elif mapped is not None:
                batch.append(mapped)
                numbers.append(number)
                pending.append((row, seen, long))
                if len(batch) >= 1000:
                    send()
        if batch:
            send()
        swept_at = now if sweep else mark.swept_at
        if newest is not None and swept_at is not None:
            self._save(_Checkpoint(newest, swept_at, mark.call_ids_from, mark.pair_ids_from))
            self._forget_before(newest - self.overlap - WRITE_DELAY,
                                swept_at - self.max_call - WRITE_DELAY)  # fmt: skip

    def report(self) -> FileReport:
        """An empty report for one pull, named by the proxy (without its credentials)."""
        return FileReport(f"{redact_url(self.proxy_url.rstrip('/'))}/spend/logs")

    def follow(self, stop: threading.Event, interval: float,
               on_report: Callable[[FileReport], None],
               on_outage: Callable[[ImportAborted, float], None]) -> None:  # fmt: skip
        """Pull every `interval` seconds until `stop`, each pull's report to `on_report`.

        An outage of the proxy or of the tracker (found in review: one outlasting the sender's
        ~15 s of retries ended `--follow`) is waited out: the pull's report so far is given,
        then `on_outage`, and the next pull comes after `outage_pause` and reads on from the
        checkpoint, which a pull that did not finish leaves where it was. A refused key
        (UnusableArguments) ends it; so does Ctrl-C, after the pull's report so far."""
        failures = 0
        while not stop.is_set():
            report = self.report()
            try:
                self.pull_once(report)
            except UnusableArguments:
                raise
            except KeyboardInterrupt:
                # What this pull sent before Ctrl-C landed: shown and counted (its refusals
                # too) before the command ends. Found in review: dropped with the pull.
                on_report(report)
                raise
            except ImportAborted as exc:
                on_report(report)
                failures += 1
                pause = outage_pause(failures, interval)
                on_outage(exc, pause)
                stop.wait(pause)
                continue
            failures = 0
            on_report(report)
            stop.wait(interval)
