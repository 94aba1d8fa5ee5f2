"""`tracker import`: log files, CSV exports and LiteLLM spend logs -> a running tracker.

Records go through the running server's HTTP ingest (`--url`, `--key`), never straight into
ClickHouse: `tracker up` holds the embedded chdb path and a second process cannot open it.
Exit codes: 0 everything imported, 1 some lines refused, a last line left unread (the file ends
mid-line and changed within 30 s: its writer may be mid-line, or a truncated log's copy ends
mid-line), a part a rotation took away unread, or the server stayed unavailable,
2 unusable arguments (nothing to import, missing file, no key, key or signature refused) or a
file that cannot be read to its end (a CSV quote never closed, an unusable header; the other
files and the rows before are still imported), 130 a one-shot import stopped with Ctrl-C (what
the file being read had sent is reported first; run again to resume).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tracker.cli import DataDir, _settings, app, fail

MAX_ERRORS_SHOWN = 50


@contextmanager
def _file_progress(
    console: Console, path: Path
) -> Iterator[tuple[Callable[[int], None], Callable[[int, int], None]]]:
    """A bar for one file's read: its `on_progress` and `on_start` (Importer.import_file)."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(path.name, total=None)

        # Size and offset from the file as opened: it may be renamed meanwhile.
        def start(size: int, offset: int, t: TaskID = task) -> None:
            progress.update(t, total=size, completed=offset)

        def advance(n: int, t: TaskID = task) -> None:
            progress.advance(t, n)

        yield advance, start


def _outage(console: Console, exc: Exception, pause: float) -> None:
    """A watch or a follow waiting out an outage says so, each time it gives up a try."""
    console.print(f"WARNING: {exc}; trying again in {pause:.0f} s (nothing the server did not "
                  "acknowledge is past a checkpoint)", markup=False, highlight=False,
                  soft_wrap=True)  # fmt: skip


def _print_report(console: Console, report: object) -> None:
    from collector.imports import FileReport

    assert isinstance(report, FileReport)
    for err in report.errors[:MAX_ERRORS_SHOWN]:
        console.print(str(err), markup=False, highlight=False, soft_wrap=True)
    more = max(0, len(report.errors) - MAX_ERRORS_SHOWN) + report.errors_unlisted
    if more or report.errors_incomplete:
        # The server lists at most 1,000 refusals a batch: past that only its count is known.
        at_least = "at least " if report.errors_incomplete else ""
        console.print(f"{report.path}: ... and {at_least}{more} more", markup=False, soft_wrap=True)
    if report.ignored_columns:
        ignored = ", ".join(report.ignored_columns)
        console.print(f"{report.path}: ignored columns: {ignored}", markup=False, soft_wrap=True)
    if report.recovered_from is not None:
        console.print(f"{report.path}: truncated in place after byte {report.truncated_at}; the "
                      f"rest of its earlier content was read from {report.recovered_from}",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    for warning in report.warnings:
        console.print(f"WARNING: {warning}", markup=False, highlight=False, soft_wrap=True)
    resumed = f" (resumed at byte {report.resumed_from})" if report.resumed_from else ""
    # Parts a rotation took away before they were read: truncated in place with no copy found,
    # or a live log renamed and compressed at once (the WARNINGs above say which).
    unread = f", {report.unread} part(s) lost to rotation unread" if report.unread else ""
    console.print(
        f"{report.path}: {report.accepted} imported, {report.rejected} refused{unread}{resumed}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if report.stopped:
        console.print(f"{report.stopped} (file not read further)", markup=False,
                      highlight=False, soft_wrap=True)  # fmt: skip


_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: what an HTTP header carries


def _check_key(option: str, key: str) -> str:
    """The key without surrounding whitespace (a key file's line ending), or exit 2. The
    message never quotes the key: a secret must not reach a terminal or a log."""
    key = key.strip()
    if not _KEY.fullmatch(key):
        fail(f"{option}: the key holds a space, a control or a non-ASCII character (not shown)")
    return key


def _check_url(option: str, url: str) -> None:
    """Exit 2 unless `url` is an http(s) address. The message shows no part of a URL that
    does not parse, nor the parser's text: either may hold the start of a password (found in
    review: "Invalid port: 'S3cret'" for http://u:S3cret#tail@host)."""
    import httpx

    from collector.imports import redact_url
    from tracker.cli.dashboards_cmd import url_problem

    problem = url_problem(url)
    if problem:
        fail(f"{option}: {problem}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        fail(f"{option}: not a URL httpx can use (spaces or control characters?); not shown")
    if not parsed.host:
        fail(f"{option} {redact_url(url)!r}: give the running server's http(s) address")


@app.command("import")
def import_(
    files: Annotated[list[Path] | None, typer.Argument(help="JSONL logs or CSV exports")] = None,
    watch: Annotated[
        Path | None, typer.Option("--watch", help="Import new and growing files in DIR")
    ] = None,
    url: Annotated[
        str, typer.Option("--url", envvar="TRACKER_URL", help="Running tracker or collector")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option("--key", envvar="TRACKER_GATEWAY_KEY", help="Gateway key")
    ] = None,
    signing_secret: Annotated[
        str | None,
        typer.Option(
            "--signing-secret",
            envvar="TRACKER_SIGNING_SECRET",
            # Never a default shown: help must not print what the environment holds.
            show_default=False,
            help="Signing secret of a gateway registered with --signed (tks_...): every "
            "request is signed with it",
        ),
    ] = None,
    agency: Annotated[
        str | None, typer.Option("--agency", help="Agency for lines that name none")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="Provider for lines that name none")
    ] = None,
    endpoint_host: Annotated[
        str | None, typer.Option("--endpoint-host", help="Serving host for lines that name none")
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Cloud region for lines that name none")
    ] = None,
    currency: Annotated[str | None, typer.Option("--currency", help="For costs without")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto (by extension), jsonl or csv")
    ] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000)] = 1000,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, max=86_400, help="Poll seconds")
    ] = 2.0,
    litellm_url: Annotated[
        str | None, typer.Option("--litellm-url", help="Pull a LiteLLM proxy's spend logs")
    ] = None,
    litellm_key: Annotated[
        str | None, typer.Option("--litellm-key", envvar="TRACKER_LITELLM_KEY")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep pulling LiteLLM")] = False,
    litellm_max_call: Annotated[
        int,
        typer.Option(
            "--litellm-max-call",
            min=1,
            max=7 * 86_400,
            help="Seconds the longest LiteLLM call may run (the proxy's request timeout; "
            "LiteLLM's default is 6000): every 30 minutes a pull reaches back this far for "
            "long calls, whose rows the proxy writes when they end",
        ),
    ] = 6000,
    from_start: Annotated[
        bool,
        typer.Option(
            "--from-start",
            help="Read FILEs from their first byte, not their checkpoint (e.g. to send lines "
            "refused before, after fixing --agency); records already landed count once",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Import usage from files (resumable), a watched directory, or a LiteLLM proxy."""
    from collector.adapters.common import Context
    from collector.adapters.litellm_pull import Puller, legacy_state_path, state_path
    from collector.imports import (
        Checkpoints,
        FileReport,
        ImportAborted,
        Importer,
        ImportInterrupted,
        Sender,
        UnusableArguments,
        redact_url,
    )
    from collector.imports import (
        watch as watch_dir,
    )
    from tracker.settings import CommonSettings

    paths = list(files or [])
    if not paths and watch is None and litellm_url is None:
        fail("nothing to import: give FILE..., --watch DIR or --litellm-url URL")
    for path in paths:
        if not path.is_file():
            fail(f"{path}: no such file")
    if watch is not None and not watch.is_dir():
        fail(f"--watch {watch}: not a directory")
    if fmt not in ("auto", "jsonl", "csv"):
        fail(f"--format {fmt!r}: use auto, jsonl or csv")
    _check_url("--url", url)
    if litellm_url is not None:
        _check_url("--litellm-url", litellm_url)
    if not key:
        fail("no gateway key: pass --key or set TRACKER_GATEWAY_KEY (tracker gateway add)")
    key = _check_key("--key", key)
    # An empty TRACKER_SIGNING_SECRET is taken as unset, as an unsigned gateway's setup has it.
    secret = _check_key("--signing-secret", signing_secret) if signing_secret else None
    if litellm_url is not None and not litellm_key:
        fail("--litellm-url needs --litellm-key (or TRACKER_LITELLM_KEY)")
    if litellm_key is not None:
        litellm_key = _check_key("--litellm-key", litellm_key)
    root = _settings(CommonSettings, data_dir=data_dir).data_dir
    defaults = {"provider": provider, "endpoint_host": endpoint_host, "region": region,
                "currency": currency}  # fmt: skip
    console = Console(stderr=True)
    # The one sender of files, --watch and the LiteLLM pull: all of them sign with `secret`.
    sender = Sender(url, key, signing_secret=secret)
    refused = stopped = unfinished = 0
    try:
        # As on push: a gateway reporting for one agency needs no --agency.
        gateway_id, agencies = sender.gateway()
        if agency is None and len(agencies) == 1:
            agency = next(iter(agencies))
        ctx = Context(default_agency=agency, agencies=agencies,
                      defaults={k: v for k, v in defaults.items() if v})  # fmt: skip
        # Offsets are kept per server and gateway: a file sent to one has not reached another.
        server = redact_url(url).rstrip("/")
        checkpoints = Checkpoints(root / "import" / "checkpoints.json", server=server,
                                  gateway=gateway_id)  # fmt: skip
        importer = Importer(sender, checkpoints, ctx, batch_size=batch_size,
                            declared_format=fmt)  # fmt: skip
        for path in paths:
            if from_start:
                importer.checkpoints.forget(path)
            try:
                with _file_progress(console, path) as (advance, start):
                    report = importer.import_file(path, advance, on_start=start)
            except ImportInterrupted as exc:
                # Ctrl-C: what the file sent is past its checkpoint, so shown now or never (found
                # in review: its refusals were dropped, exit 130 with no output). Still 130,
                # as any interrupted command: the files were not all read to their end.
                _print_report(console, exc.report)
                console.print("tracker: import interrupted; run again to resume", markup=False,
                              soft_wrap=True)  # fmt: skip
                raise typer.Exit(130) from exc
            except ImportAborted as exc:
                # What the file sent before is past its checkpoint: shown now or never.
                if exc.report is not None:
                    _print_report(console, exc.report)
                    refused += exc.report.rejected
                raise
            _print_report(console, report)
            refused += report.rejected
            if report.stopped:
                stopped += 1
            if report.unfinished is not None or report.unread:
                unfinished += 1
        if litellm_url is not None:
            assert litellm_key is not None
            # Per proxy, server and gateway, like the files' offsets.
            state = state_path(root, litellm_url, server=server, gateway=gateway_id)
            puller = Puller(litellm_url, litellm_key, sender, ctx, state,
                            max_call=timedelta(seconds=litellm_max_call),
                            legacy_state=legacy_state_path(root, litellm_url))  # fmt: skip
            if follow:
                stop = threading.Event()

                def pulled(report: FileReport) -> None:
                    nonlocal refused
                    _print_report(console, report)
                    refused += report.rejected

                try:
                    puller.follow(stop, interval, pulled,
                                  lambda exc, pause: _outage(console, exc, pause))  # fmt: skip
                except KeyboardInterrupt:
                    stop.set()
            else:
                report = puller.report()
                try:
                    puller.pull_once(report)
                finally:
                    # What a pull stopped half way sent is shown too (its refusals counted).
                    _print_report(console, report)
                    refused += report.rejected
        if watch is not None:
            stop = threading.Event()
            console.print(f"watching {watch} every {interval}s (Ctrl-C to stop)")

            def watched(report: FileReport) -> None:
                # Counted as a one-shot file's are (found in review: Ctrl-C ended with exit 0
                # after refusals), and so are parts a rotation took away unread (they were only
                # a warning). A line still unfinished is not: the watcher reads it when its
                # line break comes.
                nonlocal refused, stopped, unfinished
                _print_report(console, report)
                refused += report.rejected
                stopped += report.stopped is not None
                unfinished += bool(report.unread)

            try:
                watch_dir(watch, importer, stop, watched, interval,
                          progress=lambda path: _file_progress(console, path),
                          on_outage=lambda exc, pause: _outage(console, exc, pause))  # fmt: skip
            except KeyboardInterrupt as exc:
                stop.set()
                # Ctrl-C mid-read: that file's batches so far are past its checkpoint, so they
                # are reported and counted now (found in review: dropped, and exit 0).
                if isinstance(exc, ImportInterrupted):
                    watched(exc.report)
    except UnusableArguments as exc:
        fail(str(exc))
    except ImportAborted as exc:
        console.print(
            f"tracker: import stopped: {exc}; run again to resume", markup=False, soft_wrap=True
        )
        raise typer.Exit(1) from exc
    finally:
        sender.close()
    if stopped:
        raise typer.Exit(2)
    if refused or unfinished:
        raise typer.Exit(1)
