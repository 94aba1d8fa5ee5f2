"""Progress of long commands where output is no terminal (found in review, 2026-11-26: rich's
bar draws only its final state there, so a replay of hours under cron, CI or `kubectl exec`
without -t showed nothing until it ended)."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from tracker.cli.progress import LineProgress, progress_bar


def test_a_line_at_most_every_interval_and_one_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = [100.0]
    with LineProgress(every=10, clock=lambda: now[0]) as bar:
        task = bar.add_task("replaying usage.v1 (messages)", total=None)
        for done in range(1, 31):
            now[0] += 1  # one message a second
            bar.update(task, completed=done, total=300)
        bar.advance(task, 5)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "replaying usage.v1 (messages): 10/300 (10 s)",
        "replaying usage.v1 (messages): 20/300 (20 s)",
        "replaying usage.v1 (messages): 30/300 (30 s)",
        "replaying usage.v1 (messages): 35/300 (30 s)",
    ]


def test_large_counts_are_written_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: `:g` wrote 1234567 as 1.23457e+06, and past a million a long replay's
    lines looked frozen."""
    with LineProgress(every=0, clock=lambda: 0.0) as bar:
        task = bar.add_task("replaying usage.v1 (messages)")
        bar.update(task, completed=1_234_567, total=4_500_000)
    line = capsys.readouterr().err.splitlines()[0]
    assert line == "replaying usage.v1 (messages): 1234567/4500000 (0 s)"


def test_without_a_total_the_count_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with LineProgress(every=0, clock=lambda: 0.0) as bar:
        task = bar.add_task("re-reading usage.dlq.v1 (letters)")
        bar.update(task, completed=7, total=None)
    assert capsys.readouterr().err.splitlines()[0] == "re-reading usage.dlq.v1 (letters): 7 (0 s)"


def test_no_terminal_gets_lines_and_a_terminal_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: False))
    assert isinstance(progress_bar(), LineProgress)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert isinstance(progress_bar(), Progress)
