"""`tracker replay`'s arguments, refused before Kafka is asked anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracker.cli import app


@pytest.mark.parametrize("topic", ["", "usage v1", "usage/v1", "x" * 250])
def test_a_topic_kafka_cannot_have_is_exit_2_naming_the_option(tmp_path: Path, topic: str) -> None:
    """Found in review: `--topic ''` replayed the live topic, as if no --topic were given. A
    name no topic can have is a mistake to name at once (no broker at this address: the
    command must not get as far as asking one)."""
    env = {"TRACKER_DATA_DIR": str(tmp_path), "TRACKER_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = CliRunner().invoke(app, ["replay", "--topic", topic], env=env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--topic" in result.output and "not a Kafka topic name" in result.output
    assert "TRACKER_KAFKA_TOPIC" in result.output  # how to get the live topic
