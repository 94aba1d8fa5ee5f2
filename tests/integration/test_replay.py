"""`tracker replay` and `tracker dlq replay`: land what is missing, and are safe to repeat."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from kafka import KafkaProducer

from pipeline.replay import replay_dead_letters, replay_topic
from pipeline.writer import Writer
from tests.integration.faults import COUNT_SQL, make_stream, produce, truth_rows
from tracker.cli.wiring import open_core
from tracker.clickhouse import ClientPool
from tracker.settings import CommonSettings


def counts(pool: ClientPool) -> dict[str, int]:
    r = pool.get().query(COUNT_SQL)
    return {k: int(v or 0) for k, v in zip(r.column_names, r.result_rows[0], strict=True)}


def test_replay_lands_once_and_repeats_harmlessly(
    settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str
) -> None:
    core = open_core(settings, watch=False)
    topic = f"replay-{uuid.uuid4().hex[:6]}"
    stream = make_stream(5_000, seed=11)
    produce(kafka_bootstrap, topic, stream.messages)
    writer = Writer(pool.get())
    seen: list[tuple[int, int]] = []

    future = replay_topic(kafka_bootstrap, topic, core.processor, writer,
                          from_time=datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    assert (future.messages, future.landed) == (0, 0)

    first = replay_topic(kafka_bootstrap, topic, core.processor, writer,
                         progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert first.messages == len(stream.messages)
    assert first.landed == stream.records
    assert seen[-1] == (len(stream.messages), len(stream.messages))
    figures = counts(pool)
    assert figures == truth_rows(stream)

    again = replay_topic(kafka_bootstrap, topic, core.processor, writer, from_offset=0)
    assert again.landed == 0 and again.duplicates == first.landed + first.duplicates
    assert counts(pool) == figures
    # Refusals are not written again either (found in review: each replay added a copy).
    rows, unique = pool.query_rows(
        "SELECT count(), uniqExact(source_partition, source_offset, record_index, field) "
        "FROM usage_rejects WHERE source_topic = {t:String}",
        parameters={"t": topic},
    )[0]
    assert rows == unique > 0, (rows, unique)


def test_dlq_replay_lands_what_now_passes(
    settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str
) -> None:
    core = open_core(settings, watch=False)
    dlq = f"dlq-{uuid.uuid4().hex[:6]}"
    now_valid = {"record_id": "dl-1", "gateway_id": "gw-dlq", "agency_id": "in-sbi",
                 "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m",
                 "request_count": 7}  # fmt: skip
    still_bad = {**now_valid, "record_id": "dl-2", "input_tokens": -3}

    def letter(record: dict[str, object], offset: int, field: str = "x") -> bytes:
        return orjson.dumps({"source_topic": "usage.v1", "source_partition": 0,
                             "source_offset": offset, "record_index": 0, "gateway_id": "gw-dlq",
                             "field": field, "reason": "refused by an older release",
                             "payload": orjson.dumps(record).decode()})  # fmt: skip

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i, rec in enumerate([now_valid, still_bad, now_valid]):
        producer.send(dlq, value=letter(rec, i))
    # A second letter of the same refused record (another of its fields): counted once (found
    # in review: a record refused for three fields was "3 still refused").
    producer.send(dlq, value=letter(still_bad, 1, field="y"))
    producer.send(dlq, value=b"not a dead letter")
    producer.flush()
    producer.close()
    writer = Writer(pool.get())
    first = replay_dead_letters(kafka_bootstrap, dlq, core.processor, writer)
    assert (first.messages, first.landed, first.duplicates, first.rejected) == (5, 1, 1, 2)
    second = replay_dead_letters(kafka_bootstrap, dlq, core.processor, writer)
    assert (second.landed, second.duplicates) == (0, 2)
    landed = pool.query_rows(
        "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-dlq'"
    )[0]
    assert (int(landed[0]), int(landed[1])) == (1, 7)


def test_replay_ends_when_the_last_offset_holds_no_message(
    settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str
) -> None:
    # Found in review: a topic written by a transactional producer ends with a commit marker,
    # an offset no consumer ever sees; replay waited for a message there forever.
    core = open_core(settings, watch=False)
    topic = f"txn-{uuid.uuid4().hex[:6]}"
    record = {"record_id": f"txn-{topic}", "gateway_id": "gw-txn", "agency_id": "in-sbi",
              "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=topic)
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, value=orjson.dumps([record]))
    producer.commit_transaction()
    producer.close()
    done = replay_topic(kafka_bootstrap, topic, core.processor, Writer(pool.get()))
    assert (done.messages, done.landed) == (1, 1)
