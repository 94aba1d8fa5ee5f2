"""Dead letters the broker does not take (found in review, 2026-11-26): the partition waited
for them without a log line, a metric or a fresh lag figure, and every letter of the batch was
sent again at each attempt, those the broker had taken included (also when send() itself
refused one, found in review of the fix)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from pipeline.consumer import Batch, PipelineConsumer
from pipeline.writer import Writer
from tracker.cli.wiring import Core


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        if self._error is not None:
            raise self._error


class _FlakyProducer:
    """Takes every letter, except `refusals` times the one it was told to refuse."""

    def __init__(self, refused: bytes, refusals: int) -> None:
        self.refused, self.refusals = refused, refusals
        self.taken: list[bytes] = []
        self.sends = 0

    def send(self, topic: str, value: bytes) -> _Future:
        self.sends += 1
        if value == self.refused and self.refusals > 0:
            self.refusals -= 1
            if self.refusals % 2:  # refused at once, as send() does without metadata
                raise KafkaTimeoutError("no metadata for the dead-letter topic")
            return _Future(KafkaTimeoutError("no leader for the dead-letter topic"))
        self.taken.append(value)
        return _Future(None)


def test_letters_not_taken_are_logged_counted_and_sent_again_alone(
    kafka_bootstrap: str, core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"dl-{uuid.uuid4().hex[:6]}"
    consumer = PipelineConsumer(
        bootstrap=kafka_bootstrap, topic=topic, dlq_topic=topic + ".dlq",
        group_id=f"g-{topic}", processor=core.processor, writer=Writer(core.pool.get()),
    )  # fmt: skip
    try:
        letters = [f'{{"letter": {i}}}'.encode() for i in range(5)]
        flaky = _FlakyProducer(letters[2], refusals=2)
        consumer._dlq.close(timeout=5)
        dlq: Any = flaky
        consumer._dlq = dlq
        with caplog.at_level(logging.WARNING, logger="pipeline.consumer"):
            consumer._send_dead_letters(letters, Batch())
        assert sorted(flaky.taken) == sorted(letters)  # each once
        assert flaky.sends == 5 + 2  # the refused one alone, twice more
        warned = [
            r.getMessage() for r in caplog.records if "dead letters not taken" in r.getMessage()
        ]
        assert len(warned) == 2 and warned[0].startswith(f"1 dead letters not taken by {topic}.dlq")
        assert "no metadata" in warned[0] and "no leader" in warned[1]
        failures = consumer.metrics.registry.get_sample_value(
            "tracker_pipeline_dead_letter_failures_total"
        )
        assert failures == 2
    finally:
        consumer._consumer.close()
