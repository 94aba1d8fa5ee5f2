"""`tracker replay` and `tracker dlq replay`: re-read the stream, safely repeatable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

dlq_app = typer.Typer(help="Dead letters (records the pipeline refused).", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())  # fmt: skip


def _fail(message: str) -> None:
    typer.echo(f"tracker: {message}", err=True)
    raise typer.Exit(2)


def replay(
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", min=0, help="Start offset in every partition")
    ] = None,
    from_time: Annotated[
        datetime | None, typer.Option("--from-time", help="Start at this append time (UTC)")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default TRACKER_KAFKA_TOPIC)")] = None,
) -> None:
    """Re-read a topic from an offset or a time up to its current end, landing what is not
    yet landed; safe to repeat. Default: from the beginning."""
    from pipeline.replay import replay_topic
    from pipeline.writer import Writer
    from tracker.cli import _settings
    from tracker.cli.wiring import open_core
    from tracker.settings import PipelineSettings

    if from_offset is not None and from_time is not None:
        _fail("give --from-offset or --from-time, not both")
    settings = _settings(PipelineSettings)
    core = open_core(settings, watch=False)
    when = from_time.replace(tzinfo=from_time.tzinfo or UTC) if from_time else None
    with _progress() as bar:
        task = bar.add_task(f"replaying {topic or settings.kafka_topic}", total=None)
        try:
            result = replay_topic(
                settings.kafka_bootstrap, topic or settings.kafka_topic, core.processor,
                Writer(core.pool.get()), from_offset=from_offset, from_time=when,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ValueError as exc:
            _fail(str(exc))
            return
    typer.echo(f"replayed {result.messages} messages: {result.landed} records landed, "
               f"{result.duplicates} already landed, {result.rejected} refused")  # fmt: skip


@dlq_app.command("replay")
def dlq_replay(
    from_offset: Annotated[int | None, typer.Option("--from-offset", min=0)] = None,
) -> None:
    """Re-submit dead letters after a fix (code or registry); safe to repeat."""
    from pipeline.replay import replay_dead_letters
    from pipeline.writer import Writer
    from tracker.cli import _settings
    from tracker.cli.wiring import open_core
    from tracker.settings import PipelineSettings

    settings = _settings(PipelineSettings)
    core = open_core(settings, watch=False)
    with _progress() as bar:
        task = bar.add_task(f"re-submitting {settings.kafka_dlq_topic}", total=None)
        try:
            result = replay_dead_letters(
                settings.kafka_bootstrap, settings.kafka_dlq_topic, core.processor,
                Writer(core.pool.get()), from_offset=from_offset,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ValueError as exc:
            _fail(str(exc))
            return
    typer.echo(f"{result.messages} dead letters: {result.landed} records landed now, "
               f"{result.duplicates} already landed, {result.rejected} still refused")  # fmt: skip
