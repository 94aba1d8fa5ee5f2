"""`tracker spool list|resend`: the collector spool's quarantine (messages Kafka refused for
good), listed, and re-sent once the cause is fixed."""

from __future__ import annotations

import stat
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collector.quarantine import Outcome, Quarantined
    from tracker.settings import CollectorSettings

spool_app = typer.Typer(
    help="The collector's spool: messages Kafka refused for good, listed and re-sent.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The collector's local state (default ./var): its spool"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"tracker: {message}", err=True)
    return typer.Exit(2)


def _settings(data_dir: Path | None) -> CollectorSettings:
    from tracker.cli import _settings as read
    from tracker.settings import CollectorSettings

    settings: CollectorSettings = read(CollectorSettings, data_dir=data_dir)
    return settings


def _folder(settings: CollectorSettings) -> Path:
    from collector.spool import quarantine_dir

    return quarantine_dir(settings.data_dir / "spool")


def _unusable(folder: Path, exc: OSError) -> typer.Exit:
    return _fail(f"--data-dir / TRACKER_DATA_DIR: cannot use {folder}: {exc.strerror or exc}")


def _exists(folder: Path) -> bool:
    """Whether the quarantine folder exists (missing: nothing was ever quarantined there, or
    the data directory is mistyped; the message names the folder). Exit 2 when it cannot be
    looked into: the data directory is a file, or unreadable (found in review: a traceback)."""
    try:
        mode = folder.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:  # NotADirectoryError: the data directory, or its spool, is a file
        raise _unusable(folder, exc) from None
    if not stat.S_ISDIR(mode):
        raise _fail(f"--data-dir / TRACKER_DATA_DIR: {folder} is not a directory")
    return True


def _nothing(folder: Path, exists: bool = True) -> None:
    missing = "" if exists else " (no such folder: is --data-dir / TRACKER_DATA_DIR right?)"
    typer.echo(f"nothing quarantined in {folder}{missing}")


def _size(message: Quarantined) -> str:
    records = "?" if message.records is None else message.records
    return f"{records} records, {message.size} bytes"


@spool_app.command("list")
def spool_list(data_dir: DataDir = None) -> None:
    """The quarantined messages, oldest first: name, when, records, bytes and why."""
    from collector.quarantine import quarantined

    folder = _folder(_settings(data_dir))
    if not _exists(folder):
        _nothing(folder, exists=False)
        return
    found = quarantined(folder)
    if not found:
        _nothing(folder)
        return
    for message in found:
        when = message.about.get("quarantined_at", "?")
        typer.echo(f"{message.name}\t{when}\t{_size(message)}\t{message.reason}")
    typer.echo(f"{len(found)} message(s) in {folder}: `tracker spool resend` sends them again")


@spool_app.command("resend")
def spool_resend(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Messages to send (names from `tracker spool list`; default all)"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Send quarantined messages to Kafka again, oldest first, each cut while Kafka refuses it
    for its size; a message Kafka took is deleted, one still refused is kept with the reason
    (exit 2). Safe to repeat, and to run beside the collector: the pipeline lands a record
    once however often it is sent."""
    from kafka.errors import KafkaError

    from collector.quarantine import QuarantineError, locked, quarantined, remove_orphans, select
    from collector.quarantine import resend as send_again
    from collector.sink import DeliveryFailed, KafkaSink
    from tracker.topics import ensure_configured

    settings = _settings(data_dir)
    folder = _folder(settings)
    if not _exists(folder):
        # Said without creating anything: a mistyped --data-dir was made, lock file and all.
        _nothing(folder, exists=False)
        return
    try:
        with ExitStack() as held:
            # Only these touch the folder before Kafka does: an OSError past them may be
            # Kafka's connection, which the --data-dir message would misname.
            try:
                held.enter_context(locked(folder))
                remove_orphans(folder)
                chosen = select(quarantined(folder), names or [])
            except OSError as exc:
                raise _unusable(folder, exc) from None
            if not chosen:
                _nothing(folder)
                return
            try:
                ensure_configured(settings)
                kafka = KafkaSink(
                    settings.kafka_bootstrap, settings.kafka_topic,
                    records_per_message=settings.kafka_records_per_message,
                    shards=settings.kafka_partitions,
                    timeout_seconds=settings.kafka_timeout_seconds,
                    compression=settings.kafka_compression,
                )  # fmt: skip
            except KafkaError as exc:
                raise _fail(f"Kafka at {settings.kafka_bootstrap} is not reachable "
                            f"({type(exc).__name__}); nothing was sent") from exc  # fmt: skip
            try:
                outcomes = send_again(chosen, kafka, shards=settings.kafka_partitions,
                                      progress=_report)  # fmt: skip
            except DeliveryFailed as exc:
                raise _fail(f"{exc} at {settings.kafka_bootstrap}: the messages not reported "
                            "above are kept; run `tracker spool resend` again once Kafka "
                            "answers") from exc  # fmt: skip
            finally:
                kafka.close()
    except QuarantineError as exc:
        raise _fail(str(exc)) from exc
    kept = [o for o in outcomes if o.refused is not None]
    typer.echo(f"{len(outcomes) - len(kept)} message(s) re-sent to {settings.kafka_topic}, "
               f"{len(kept)} kept in {folder}")  # fmt: skip
    if kept:
        raise _fail(f"{len(kept)} message(s) still refused by Kafka, kept: fix the cause named "
                    "above (for a record over the topic's max.message.bytes, raise that limit), "
                    "then run this again")  # fmt: skip


def _report(outcome: Outcome) -> None:
    message = outcome.message
    if outcome.refused is None:
        typer.echo(f"re-sent {message.name} ({_size(message)}, {outcome.parts} part(s))")
    else:
        typer.echo(f"kept {message.name} ({_size(message)}): refused by Kafka: "
                   f"{outcome.refused} ({outcome.parts} part(s) taken before)")  # fmt: skip
