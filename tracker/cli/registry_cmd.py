"""`tracker registry ...` and `tracker reclassify`: the effective-dated registry from the shell.

A malformed file is refused whole: every error is printed as `file: path: reason` and the
command exits with code 2; nothing is recorded, and the version in force stays in force.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tracker.bounds import EARLIEST, LATEST, within
from tracker.cli import DataDir, app
from tracker.registry import RegistryError

registry_app = typer.Typer(
    help="The infrastructure registry: check, load (a new version in force), show, history.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z")


def _when(text: str) -> datetime:
    """A date or date-time as ISO 8601 writes it (`2026-01-01`, `2026-01-01T09:30:00+05:30`,
    `...Z`), or as the earlier formats read it (`2026-1-1`). Said with its reason: given a list
    of formats, typer answered a month 13 with "does not match the formats" (found in review);
    pydantic's reading, tried next, took a string of digits for Unix time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        reason = str(exc)
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    raise typer.BadParameter(f"{text!r}: {reason}; give a date or a date-time, e.g. 2026-01-01 "
                             "or 2026-01-01T09:30:00+05:30 (no offset: UTC)")  # fmt: skip


When = Annotated[
    datetime | None,
    typer.Option(parser=_when, metavar="DATE", help="A date or date-time (no offset: UTC)"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"tracker: {message}", err=True)
    return typer.Exit(2)


def _refused(exc: RegistryError) -> typer.Exit:
    """The errors of a refused registry file (the first hundred), one per line: file: path:
    reason."""
    typer.echo(f"tracker: registry {exc.source} refused, {exc.total} error(s):", err=True)
    for path, reason in exc.errors:
        typer.echo(f"{exc.source}: {path}: {reason}", err=True)
    return typer.Exit(2)


def _utc(value: datetime | None, option: str) -> datetime | None:
    """`value` in UTC (no zone: UTC), within the years any query may span, or exit 2: outside
    them the engine refuses the literal, or Python cannot convert it, as a traceback."""
    if value is None:
        return None
    try:
        return within(value)
    except ValueError:
        raise _fail(f"{option} {value.isoformat()}: give a time from {EARLIEST.year} to "
                    f"{LATEST.year - 1}") from None  # fmt: skip


def _cell(value: str) -> str:
    """A ledger text as one cell of a tab-separated line: control characters escaped (older
    rows, or proposals made through the API, may hold them)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)


_TEXT_LIMIT = 1000  # as the API's proposal reason


def _text(option: str, value: str) -> str:
    """An author or reason for the ledger: one line of printable text, bounded. A newline or
    tab in it would forge a row of `registry history`'s tab-separated output."""
    if len(value) > _TEXT_LIMIT:
        raise _fail(f"{option}: over {_TEXT_LIMIT} characters")
    if not value.isprintable():
        raise _fail(f"{option}: holds a newline, tab or other control character")
    return value


def _author(author: str | None) -> str:
    """--author, else the OS user. Under a uid with no passwd entry (a container run with an
    arbitrary uid) getpass.getuser() raises KeyError (found in review: a traceback)."""
    if not author:  # an empty --author too, as before
        try:
            author = getpass.getuser()
        except (KeyError, OSError):
            raise _fail("--author: not given, and this process's user has no name (no "
                        "passwd entry, no LOGNAME or USER): pass --author") from None  # fmt: skip
    return _text("--author", author)


def _client(data_dir: Path | None, *, existing: bool = True) -> Any:
    """The store, migrated. One that does not exist is refused rather than created
    (tracker.cli._existing_store), unless `existing` is False: `registry load` may come
    before the first `tracker up` (tracker.cli._new_or_existing_store)."""
    from tracker.cli import _existing_store, _new_or_existing_store
    from tracker.clickhouse import ClientPool
    from tracker.migrate import migrate

    settings = _existing_store(data_dir) if existing else _new_or_existing_store(data_dir)
    client = ClientPool(settings).get()
    migrate(client)
    return client


@registry_app.command("check")
def check_cmd(file: Annotated[Path, typer.Argument(help="Registry YAML")]) -> None:
    """Validate a registry file without storing anything (exit 2 with every error)."""
    from tracker.registry import load

    try:
        registry, _ = load(file)
    except RegistryError as exc:
        raise _refused(exc) from exc
    counts = f"{len(registry.facilities)} facilities, {len(registry.agencies)} agencies"
    typer.echo(f"{file}: valid, version {registry.version} ({registry.country_name}, {counts})")


@registry_app.command("load")
def load_cmd(
    file: Annotated[Path, typer.Argument(help="Registry YAML")],
    reason: Annotated[str, typer.Option("--reason", help="Why this change (kept in the ledger)")],
    author: Annotated[str | None, typer.Option(help="Who (default: the OS user)")] = None,
    effective_from: When = None,
    before_scheduled: Annotated[
        bool,
        typer.Option(
            "--before-scheduled",
            help="Record it although changes are scheduled after it (each replaces it when it "
            "comes due); without this such a load is refused, listing them",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Store a registry file as a new version in force (now, or from --effective-from)."""
    from tracker import registry_store

    who = _author(author)  # before the database is opened: a refusal needs none of it
    client = _client(data_dir, existing=False)
    when = _utc(effective_from, "--effective-from")
    try:
        registry, change = registry_store.load_file(
            client, file, author=who,
            reason=_text("--reason", reason), effective_from=when,
            before_scheduled=before_scheduled,
        )  # fmt: skip
    except RegistryError as exc:
        raise _refused(exc) from exc
    except registry_store.ScheduledAhead as exc:
        raise _fail(exc.describe("--before-scheduled")) from exc
    except registry_store.ChangeError as exc:
        raise _fail(str(exc)) from exc
    if change is None:
        then = "in force" if when is None else f"the version in force from {when.isoformat()}"
        typer.echo(f"{registry.version} is already {then}; nothing changed")
        return
    typer.echo(f"{registry.version} in force from {change.effective_from.isoformat()} "
               f"(was {change.previous or 'none'}); running processes follow within their "
               "registry refresh interval")  # fmt: skip


@registry_app.command("show")
def show_cmd(
    version: Annotated[str | None, typer.Option(help="A version (default: in force)")] = None,
    at: When = None,
    yaml_text: Annotated[bool, typer.Option("--yaml", help="Print the stored YAML text")] = False,
    data_dir: DataDir = None,
) -> None:
    """The version in force (now, or --at a time), or any stored version."""
    from tracker import registry_store

    client = _client(data_dir)
    if version is None:
        found = registry_store.effective(client, _utc(at, "--at"))
        if found is None:
            raise _fail("no registry version is in force yet")
        version = found[1].version
        c = found[1]
        # On stderr, so `--yaml > file` is byte-for-byte the stored text (same version hash).
        typer.echo(f"# {version} in force since {c.effective_from.isoformat()} by {c.author}: "
                   f"{c.reason}", err=True)  # fmt: skip
    text = registry_store.content(client, version)
    if text is None:
        raise _fail(f"unknown registry version {version}")
    if yaml_text:
        typer.echo(text, nl=False)
        return
    registry = registry_store.registry_of(client, version)
    assert registry is not None
    typer.echo(f"{version}: {registry.country_name} ({registry.country}), "
               f"{len(registry.operators)} operators, {len(registry.facilities)} facilities, "
               f"{len(registry.regions)} regions, {len(registry.endpoints)} endpoints, "
               f"{len(registry.agencies)} agencies")  # fmt: skip


@registry_app.command("history")
def history_cmd(data_dir: DataDir = None) -> None:
    """Every change: effective from, version, previous, author, reason, source."""
    from tracker import registry_store

    for c in registry_store.history(_client(data_dir)):
        typer.echo(f"{c.effective_from.isoformat()}\t{c.version}\t{c.previous or '-'}\t"
                   f"{_cell(c.author)}\t{_cell(c.reason)}\t{_cell(c.source)}")  # fmt: skip


@registry_app.command("classify")
def classify_cmd(
    provider: Annotated[str, typer.Argument(help="Provider as the gateway names it")],
    region: Annotated[str | None, typer.Option(help="Cloud region code")] = None,
    host: Annotated[str | None, typer.Option(help="endpoint_host: a name or an IP literal")] = None,
    file: Annotated[Path | None, typer.Option(help="Classify by this file, not storage")] = None,
    data_dir: DataDir = None,
) -> None:
    """Classify one route as the pipeline would, with the rule and any grade: reproducible."""
    from tracker import registry_store
    from tracker.classify import Classifier
    from tracker.registry import load

    if file is not None:
        try:
            registry = load(file)[0]
        except RegistryError as exc:
            raise _refused(exc) from exc
    else:
        found = registry_store.effective(_client(data_dir))
        if found is None:
            raise _fail("no registry version is in force yet; use --file")
        registry = found[0]
    c = Classifier(registry).classify(provider, region, host)
    grades = ", ".join(g for g in (c.facility_grade, c.operator_grade) if g) or "none"
    typer.echo(f"tier={c.tier.value} rule={c.rule} facility={c.facility_id or '-'} "
               f"country={c.facility_country or '-'} operator={c.operator or '-'} "
               f"grade={grades} registry={c.registry_version}")  # fmt: skip


@app.command("reclassify")
def reclassify_cmd(
    from_: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d", "%Y-%m"])],
    to: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d", "%Y-%m"])],
    version: Annotated[
        str | None, typer.Option(help="Registry version (default: in force)")
    ] = None,
    author: Annotated[str | None, typer.Option(help="Who (default: the OS user)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Re-derive the route rollup of every month overlapping [--from, --to) from usage_raw and
    re-classify it by the registry in force (or --version); "as classified then" is untouched."""
    from rich.console import Console
    from rich.table import Table

    from tracker import reclassify, registry_store
    from tracker.cli.progress import progress_bar

    start, end = _utc(from_, "--from"), _utc(to, "--to")
    assert start is not None and end is not None
    if start >= end:
        raise _fail("--from must be before --to")
    who = _author(author)
    client = _client(data_dir)
    if version is None:
        found = registry_store.effective(client)
        if found is None:
            raise _fail("no registry version is in force yet")
        registry = found[0]
    else:
        registry_or_none = registry_store.registry_of(client, version)
        if registry_or_none is None:
            raise _fail(f"unknown registry version {version}")
        registry = registry_or_none
    months = reclassify.months(start, end)
    table = Table("month", "records", "re-classified differently", "attempts")
    dropped: list[str] = []
    missed: list[reclassify.SkippedMonth] = []
    with progress_bar() as bar:
        task = bar.add_task(f"re-classifying by {registry.version} (months)", total=len(months))

        def done(r: reclassify.MonthResult) -> None:
            table.add_row(f"{r.month:%Y-%m}", str(r.raw_records), str(r.changed_records),
                          str(r.attempts))  # fmt: skip
            bar.advance(task)

        def skipped(s: reclassify.SkippedMonth) -> None:
            missed.append(s)
            bar.advance(task)

        try:
            reclassify.run(client, registry, start, end,
                           author=who,
                           progress=done, skipped=skipped, cleaned=dropped.extend)  # fmt: skip
        except reclassify.MonthsSkipped:
            pass  # reported below, after the months done
        except reclassify.ReclassifyError as exc:
            raise _fail(str(exc)) from exc
    if dropped:
        typer.echo(f"dropped {len(dropped)} scratch table(s) left by interrupted runs: "
                   f"{', '.join(dropped)}")  # fmt: skip
    Console().print(table)
    if missed:
        # Each skipped month with the command that redoes it; the months done are in the
        # table above and in reclassify_runs.
        names = ", ".join(f"{s.month:%Y-%m}" for s in missed)
        typer.echo(f"tracker: {len(missed)} of {len(months)} month(s) skipped, nothing "
                   f"recorded for them: {names}; run again for each (the months done are in "
                   "the table):", err=True)  # fmt: skip
        again = "" if version is None else f" --version {version}"
        for s in missed:
            m, upto = s.month, reclassify.next_month(s.month)
            typer.echo(f"tracker: {m:%Y-%m}: {s.reason}: tracker reclassify --from {m:%Y-%m} "
                       f"--to {upto:%Y-%m}{again}", err=True)  # fmt: skip
        raise typer.Exit(2)
