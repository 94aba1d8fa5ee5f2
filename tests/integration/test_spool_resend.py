"""`tracker spool list|resend`: what the spool's drain quarantined reaches Kafka once the cause
is fixed, in the partition its records belong to, and a message still refused is kept with the
reason (real broker)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from collector.quarantine import locked
from collector.sink import KafkaSink
from collector.spool import Spool, quarantine_dir
from tests.integration.faults import assert_sharded, read_topic
from tests.integration.test_collector_spool import (
    _drain,
    _lower_message_limit,
    _records,
    _wide_names,
)
from tracker.cli import app
from tracker.contract import shard_of
from tracker.topics import ensure_topics

PARTITIONS = 4
BROKER_DEFAULT_LIMIT = 1_048_588


@pytest.fixture()
def topic(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 4-partition topic of its own, and the environment `tracker spool` reads it from."""
    name = f"resend-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, name, name + ".dlq", partitions=PARTITIONS)
    for variable, value in {"TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
                            "TRACKER_KAFKA_TOPIC": name, "TRACKER_KAFKA_DLQ_TOPIC": name + ".dlq",
                            "TRACKER_KAFKA_PARTITIONS": str(PARTITIONS),
                            "TRACKER_KAFKA_TIMEOUT_SECONDS": "5"}.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    return name


def spool_cli(data_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["spool", *args, "--data-dir", str(data_dir)])
    return result.exit_code, result.output


def quarantined_files(data_dir: Path) -> list[str]:
    folder = quarantine_dir(data_dir / "spool")
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".value", ".json"))


def test_a_quarantined_record_is_re_sent_once_the_limit_is_raised(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """The drain quarantines a record over a topic's lowered max.message.bytes; `resend` keeps
    it while the limit stands (exit 2, the bytes untouched) and sends it, in its shard's
    partition, once the limit is raised; then the quarantine is empty and a repeat sends
    nothing."""
    sink = KafkaSink(kafka_bootstrap, topic, shards=PARTITIONS, timeout_seconds=5)
    [wide] = sink.messages(_records("gw-resend", "wide", 1, _wide_names(random.Random(7))))
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    spool.append([wide])
    _lower_message_limit(kafka_bootstrap, topic, 1_800)
    _drain(spool, sink)
    [value_file] = [n for n in quarantined_files(tmp_path) if n.endswith(".value")]
    name = value_file.removesuffix(".value")

    code, out = spool_cli(tmp_path, "list")
    assert code == 0, out
    assert name in out and "1 records" in out and "MessageSizeTooLarge" in out

    code, out = spool_cli(tmp_path, "resend")
    assert code == 2, out
    assert f"kept {name}" in out and "MessageSizeTooLarge" in out and "0 part(s) taken" in out
    assert "1 message(s) still refused" in out
    folder = quarantine_dir(tmp_path / "spool")
    assert (folder / value_file).read_bytes() == wide[1]  # kept byte for byte
    assert read_topic(kafka_bootstrap, topic) == []

    _lower_message_limit(kafka_bootstrap, topic, BROKER_DEFAULT_LIMIT)
    code, out = spool_cli(tmp_path, "resend")
    assert code == 0, out
    assert f"re-sent {name} (1 records" in out and "1 message(s) re-sent" in out
    messages = read_topic(kafka_bootstrap, topic)
    assert [r["record_id"] for m in messages for r in m.records] == ["wide0"]
    assert_sharded(messages, PARTITIONS, PARTITIONS)  # the partition its live copies use
    assert quarantined_files(tmp_path) == []

    code, out = spool_cli(tmp_path, "resend")
    assert code == 0 and "nothing quarantined" in out, out
    assert len(read_topic(kafka_bootstrap, topic)) == 1


def test_resend_sends_what_passes_and_keeps_what_does_not(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Three pairs: a message of a plain and an oversized record (the plain one goes, the
    message is kept), a value whose descriptor was never written (sent under the shard of its
    record), and a descriptor whose value is gone (removed). A name not in the quarantine and
    a second resend at once are refused with exit 2, sending nothing."""
    sink = KafkaSink(kafka_bootstrap, topic, shards=1, timeout_seconds=5)
    plain = _records("gw-mixed", "plain", 1, lambda: "sarvam")
    wide = _records("gw-mixed", "wide", 1, _wide_names(random.Random(11)))
    [(key, mixed)] = sink.messages(plain + wide)  # one shard: one message of both
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    spool.append([(key, mixed), (key, b"[]")])
    [(segment, offset, _, _), (segment2, offset2, _, _)] = list(spool.entries())
    kept = spool.quarantine(segment, offset, key, mixed,
                            {"reason": "MessageSizeTooLarge", "records": 2, "topic": topic})  # fmt: skip
    gone = spool.quarantine(segment2, offset2, key, b"[]", {"reason": "x", "records": 0})
    spool.close()
    gone.unlink()  # a run deleted its value, then stopped before its descriptor
    alone = _records("gw-alone", "alone", 1, lambda: "sarvam")
    folder = quarantine_dir(tmp_path / "spool")
    (folder / "20260101T000000Z-000000001-seg00000001-9.value").write_bytes(
        orjson.dumps([r.model_dump(mode="json", exclude_none=True) for r in alone])
    )
    _lower_message_limit(kafka_bootstrap, topic, 1_800)

    code, out = spool_cli(tmp_path, "resend", "no-such-message")
    assert code == 2 and "not in the quarantine: no-such-message" in out, out
    with locked(folder):
        code, out = spool_cli(tmp_path, "resend")
    assert code == 2 and "another resend" in out, out
    assert read_topic(kafka_bootstrap, topic) == []

    code, out = spool_cli(tmp_path, "resend")
    assert code == 2, out
    assert "re-sent 20260101T000000Z-000000001-seg00000001-9 (? records" in out
    assert f"kept {kept.stem} (2 records" in out and "1 part(s) taken before" in out
    messages = read_topic(kafka_bootstrap, topic)
    assert sorted(r["record_id"] for m in messages for r in m.records) == ["alone0", "plain0"]
    [sent_alone] = [m for m in messages if m.records[0]["record_id"] == "alone0"]
    assert sent_alone.partition == shard_of("gw-alone", "alone0", PARTITIONS)
    assert quarantined_files(tmp_path) == [kept.with_suffix(".json").name, kept.name]
    assert kept.read_bytes() == mixed
