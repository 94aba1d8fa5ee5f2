"""`tracker replay` and `tracker dlq replay`: re-submit to the live topic, safely repeatable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from tracker.cli.progress import progress_bar

if TYPE_CHECKING:
    from pipeline.replay import ReplayResult
    from tracker.settings import PipelineSettings

dlq_app = typer.Typer(help="Dead letters (records the pipeline refused).", no_args_is_help=True)

# Exit code when the copies were sent but the group has not landed them (yet).
NOT_LANDED_YET = 3
# Past this, the command stops waiting (the copies are in Kafka and land when the group does).
WAIT_LIMIT_SECONDS = 24 * 3600

Wait = Annotated[
    float,
    typer.Option(
        "--wait", min=0, max=WAIT_LIMIT_SECONDS,
        help="Seconds to wait for the pipeline group to land the copies (0: do not wait)",
    ),
]  # fmt: skip


def _fail(message: str) -> NoReturn:
    # tracker.cli.fail, which this module cannot import at load (tracker.cli imports it).
    typer.echo(f"tracker: {message}", err=True)
    raise typer.Exit(2)


def _settings() -> PipelineSettings:
    from pipeline.replay import ReplayError, check_partitions
    from tracker.cli import _settings as read
    from tracker.settings import PipelineSettings
    from tracker.topics import ensure_configured

    settings: PipelineSettings = read(PipelineSettings)
    # First: ensure_configured adds partitions up to the setting, and a replay that differs
    # from the collector must change nothing (found in review: it grew the live topic).
    try:
        check_partitions(settings.kafka_bootstrap, settings.kafka_topic, settings.kafka_partitions)
    except ReplayError as exc:
        _fail(str(exc))
    # The live topic with its settings (retention by append time) before a copy is sent to it.
    ensure_configured(settings)
    return settings


def _await(settings: PipelineSettings, result: ReplayResult, wait: float) -> None:
    """Wait for the group to land the copies, with progress; say what became of them."""
    from pipeline.replay import ReplayError, wait_landed

    group, topic = settings.consumer_group, settings.kafka_topic
    if not result.ends:
        return
    if not wait:
        typer.echo(f"not waiting: group {group!r} lands the copies as it reaches them")
        return
    with progress_bar() as bar:
        task = bar.add_task(f"waiting for group {group} to land them (messages)", total=None)
        try:
            outcome = wait_landed(
                settings.kafka_bootstrap, topic, group, result.ends, timeout_seconds=wait,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ReplayError as exc:
            _fail(f"the copies are in {topic}, but waiting for them failed: {exc}")
    if outcome == "landed":
        typer.echo(f"group {group!r} has landed them (records landed before count once)")
        return
    if outcome == "no members":
        typer.echo(f"no member of group {group!r} is running: the copies are kept in "
                   f"{topic} and land when `tracker pipeline` runs")  # fmt: skip
    else:
        typer.echo(f"group {group!r} has not reached them after {wait:g} s: they are kept in "
                   f"{topic} and land as it does")  # fmt: skip
    # Sent but not landed yet: a script can tell this from done (0) and from a failure (1, 2).
    raise typer.Exit(NOT_LANDED_YET)


def replay(
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", min=0, help="Start offset in every partition")
    ] = None,
    from_time: Annotated[
        datetime | None, typer.Option("--from-time", help="Start at this append time (UTC)")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default TRACKER_KAFKA_TOPIC)")] = None,
    wait: Wait = 600,
) -> None:
    """Re-read a topic from an offset or a time up to its current end and re-submit it to the
    live topic: the pipeline lands what is not landed yet. Safe to repeat, and to run beside
    the pipeline and other replays. Default: from the beginning. Exit 3: sent, but not landed
    within --wait (or no pipeline running)."""
    from pipeline.copies import TOPIC_NAME
    from pipeline.replay import ReplayError, replay_topic

    if from_offset is not None and from_time is not None:
        _fail("give --from-offset or --from-time, not both")
    # Checked as given: `--topic ''` read as "no --topic" replayed the live topic (found in
    # review), and a name Kafka cannot have is a typo to name, not a topic to look for.
    if topic is not None and not TOPIC_NAME.fullmatch(topic):
        _fail(f"--topic {topic!r}: not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -); "
              "leave --topic out for the live topic (TRACKER_KAFKA_TOPIC)")  # fmt: skip
    settings = _settings()
    source = settings.kafka_topic if topic is None else topic
    if source == settings.kafka_dlq_topic:
        _fail(f"{source} holds dead letters: use `tracker dlq replay`")
    when = from_time.replace(tzinfo=from_time.tzinfo or UTC) if from_time else None
    with progress_bar() as bar:
        task = bar.add_task(f"replaying {source} (messages)", total=None)
        try:
            result = replay_topic(
                settings.kafka_bootstrap, source, settings.kafka_topic,
                from_offset=from_offset, from_time=when, shards=settings.kafka_partitions,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ReplayError as exc:
            _fail(str(exc))
    if source == settings.kafka_topic:
        refused = f"{result.refused} refused (dead-lettered when first read; not re-submitted)"
    else:  # never dead-lettered: the group does it, under this topic's places
        refused = (f"{result.refused} refused (re-submitted for the pipeline to dead-letter and "
                   f"record in usage_rejects as {source}'s)")  # fmt: skip
    typer.echo(f"read {result.messages} messages: {result.records} records re-submitted to "
               f"{settings.kafka_topic}, {refused}, {result.copies_skipped} copies from earlier "
               "replays skipped")  # fmt: skip
    _await(settings, result, wait)


@dlq_app.command("replay")
def dlq_replay(
    from_offset: Annotated[
        int | None,
        typer.Option(
            "--from-offset",
            min=0,
            help="Start offset in every partition of the "
            "dead-letter topic (default: its beginning)",
        ),
    ] = None,
    wait: Wait = 600,
) -> None:
    """Re-submit dead letters that today's contract accepts to the live topic; the pipeline
    lands what is not landed yet. Safe to repeat. Exit 3: sent, but not landed within --wait
    (or no pipeline running)."""
    from pipeline.replay import ReplayError, replay_dead_letters

    settings = _settings()
    with progress_bar() as bar:
        task = bar.add_task(f"re-reading {settings.kafka_dlq_topic} (letters)", total=None)
        try:
            result = replay_dead_letters(
                settings.kafka_bootstrap, settings.kafka_dlq_topic, settings.kafka_topic,
                from_offset=from_offset, shards=settings.kafka_partitions,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ReplayError as exc:
            _fail(str(exc))
    lost = f", {result.lost} not re-readable" if result.lost else ""
    again = (f", {result.copies_skipped} letters of earlier runs' copies refused again (their "
             "records' first letters re-submitted)") if result.copies_skipped else ""  # fmt: skip
    typer.echo(f"{result.messages} dead letters: {result.records} records re-submitted to "
               f"{settings.kafka_topic}, {result.refused} still refused{lost}{again}")  # fmt: skip
    if result.lost:
        more = f" (and {result.lost - len(result.lost_named)} more)" if result.lost > len(
            result.lost_named) else ""  # fmt: skip
        typer.echo("tracker: not re-submitted, as they keep only the first 64 KiB of what was "
                   "refused and it could not be read again where it was: "
                   f"{'; '.join(result.lost_named)}{more}", err=True)  # fmt: skip
    _await(settings, result, wait)
