"""`tracker replay` and `tracker dlq replay`: re-submit to the live topic, where the pipeline's
group lands what is missing; safe to repeat and to run at the same time, with a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from pipeline import replay as replay_module
from pipeline.consumer import PipelineConsumer
from pipeline.copies import COPY_HEADER
from pipeline.processor import Processed
from pipeline.replay import (
    ReplayError,
    replay_dead_letters,
    replay_topic,
    wait_landed,
)
from tests.integration.faults import (
    COUNT_SQL,
    Stream,
    assert_sharded,
    make_stream,
    produce,
    read_topic,
    truth_rows,
    wait_caught_up,
)
from tests.integration.stores import server_settings
from tracker.cli.wiring import Core, open_core, run_pipeline
from tracker.clickhouse import ClientPool
from tracker.contract import shard_of
from tracker.settings import CommonSettings, PipelineSettings
from tracker.topics import ensure_topics

BOTH_STORES = True
ROOT = Path(__file__).resolve().parents[2]
# What a store that lost its usage (restored from an older backup, say) no longer holds.
USAGE_TABLES = ("usage_raw", "usage_key_index", "usage_hourly", "usage_daily", "landed_batches")


def counts(pool: ClientPool) -> dict[str, int]:
    r = pool.get().query(COUNT_SQL)
    return {k: int(v or 0) for k, v in zip(r.column_names, r.result_rows[0], strict=True)}


@pytest.fixture()
def store_settings(
    settings: CommonSettings, store: str, request: pytest.FixtureRequest
) -> CommonSettings:
    if store == "server":
        return server_settings(settings, request.getfixturevalue("server_dsn"))
    return settings


@pytest.fixture()
def core(store_settings: CommonSettings, pool: ClientPool) -> Core:
    for table in (*USAGE_TABLES, "usage_rejects"):  # each test against its own ground truth
        pool.get().command(f"TRUNCATE TABLE {table}")
    return open_core(store_settings)


class Member:
    """One pipeline member of `group` on `topic`, in a thread, stopped at the test's end."""

    def __init__(self, core: Core, settings: CommonSettings, bootstrap: str, topic: str,
                 group: str) -> None:  # fmt: skip
        ps = PipelineSettings(
            data_dir=settings.data_dir, clickhouse_database=settings.clickhouse_database,
            clickhouse_dsn=settings.clickhouse_dsn, kafka_bootstrap=bootstrap,
            kafka_topic=topic, kafka_dlq_topic=topic + ".dlq", consumer_group=group,
            batch_max_rows=2_000, batch_max_seconds=0.2, consumer_session_timeout_ms=6_000,
        )  # fmt: skip
        self.consumer: PipelineConsumer = run_pipeline(ps, core)
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.consumer.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture()
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for member in started:
        if member.thread.is_alive():
            member.consumer.halt()
            member.thread.join(timeout=60)


def valid_records(stream: Stream) -> int:
    """Records of the stream that pass the contract, resends included (make_stream's invalid
    messages are unreadable, or hold one record with negative tokens)."""
    total = 0
    for _, value in stream.messages:
        try:
            items = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        total += sum(1 for item in items if item.get("input_tokens", 0) >= 0)
    return total


def replay_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tracker", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finished(proc: subprocess.Popen[str], code: int = 0) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, (out, err)
    return out


def test_replays_at_once_beside_the_pipeline_count_every_record_once(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member], tmp_path: Path,
) -> None:  # fmt: skip
    """The store loses its usage; replays re-submit the topic, two of them at the same time,
    while the pipeline runs. Found in review: two replays that landed directly, at the same
    time, counted 18,721 of 20,000 records twice. Now only the group lands, and every count
    equals the ground truth. The replays run as processes beside an embedded pipeline that
    holds the store's directory, which a replay that opened the store could not."""
    topic, group = f"replay-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    stream = make_stream(12_000, seed=11)
    produce(kafka_bootstrap, topic, stream.messages)
    members.append(Member(core, store_settings, kafka_bootstrap, topic, group))
    wait_caught_up(kafka_bootstrap, topic, group, timeout=120)
    truth = truth_rows(stream)
    assert counts(pool) == truth
    members[0].stop()
    for table in USAGE_TABLES:  # the refusals were recorded and are kept
        pool.get().command(f"TRUNCATE TABLE {table}")

    env = {
        **os.environ, "TRACKER_DATA_DIR": str(tmp_path), "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRACKER_KAFKA_TOPIC": topic, "TRACKER_KAFKA_DLQ_TOPIC": topic + ".dlq",
        "TRACKER_CONSUMER_GROUP": group,
    }  # fmt: skip
    # No member running: the copies wait in the topic, and the command says so.
    alone = finished(replay_cli(env, "replay", "--wait", "30"), code=3)  # sent, not landed
    resubmitted = valid_records(stream)
    refused = stream.malformed_records
    assert (f"{resubmitted} records re-submitted to {topic}, {refused} refused (dead-lettered "
            "when first read; not re-submitted), 0 copies from earlier replays skipped") in alone  # fmt: skip
    assert f"no member of group {group!r} is running" in alone
    assert counts(pool)["raw_records"] == 0

    members.append(Member(core, store_settings, kafka_bootstrap, topic, group))
    both = [replay_cli(env, "replay", "--from-offset", "0", "--wait", "180") for _ in range(2)]
    outputs = [finished(proc) for proc in both]
    for out in outputs:
        # Each re-submits the originals only: the first replay's copies are skipped.
        assert f"{resubmitted} records re-submitted" in out, out
        assert f"group {group!r} has landed them" in out, out
    wait_caught_up(kafka_bootstrap, topic, group, timeout=120)
    assert counts(pool) == truth
    # Refusals were not written again (found in an earlier review: each replay added a copy).
    rows, unique = pool.query_rows(
        "SELECT count(), uniqExact(source_partition, source_offset, record_index, field) "
        "FROM usage_rejects WHERE source_topic = {t:String}",
        parameters={"t": topic},
    )[0]
    assert rows == unique > 0, (rows, unique)


def test_a_copy_goes_to_its_originals_partition_and_names_it(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    topic = f"replay-part-{uuid.uuid4().hex[:6]}"
    stream = make_stream(2_000, seed=5)
    # One message of a valid record and a refused one: its copy holds the valid one only.
    kept = {"record_id": "mixed-ok", "gateway_id": "gw-faults", "agency_id": "in-sbi",
            "occurred_at": "2026-01-01T00:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
    mixed = orjson.dumps([kept, {**kept, "record_id": "mixed-bad", "input_tokens": -1}])
    produce(kafka_bootstrap, topic, [*stream.messages, (b"in-sbi", mixed)])
    time.sleep(0.05)
    copies_from = datetime.now(UTC)  # the topic keeps append times: after every original
    done = replay_topic(kafka_bootstrap, topic, topic)
    assert done.messages == len(stream.messages) + 1 and done.copies_skipped == 0
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)  # fmt: skip
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        originals: dict[str, tuple[int, bytes]] = {}
        copies: list[tuple[str, int, bytes]] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for tp, messages in consumer.poll(timeout_ms=1000).items():
                for m in messages:
                    named = dict(m.headers or []).get(COPY_HEADER)
                    if named is None:
                        originals[f"{topic}/{tp.partition}/{m.offset}"] = (tp.partition, m.value)
                    else:
                        copies.append((named.decode(), tp.partition, m.value))
    finally:
        consumer.close()
    assert copies
    assert done.ends == {tp.partition: end for tp, end in ends.items() if end}
    for named, partition, value in copies:
        original_partition, original_value = originals[named]
        assert partition == original_partition
        # A message without refusals is copied as it was; one with them, without them.
        if original_value == mixed:
            assert [r["record_id"] for r in orjson.loads(value)] == ["mixed-ok"]
        else:
            assert value == original_value
    assert [originals[named][1] for named, _, _ in copies].count(mixed) == 1
    # A second replay skips the copies: it re-submits the originals again, no more.
    again = replay_topic(kafka_bootstrap, topic, topic)
    assert again.copies_skipped == len(copies)
    assert again.records == done.records
    # Found in review: copies were skipped whatever was read, so a replay that starts after
    # the originals (or after retention removed them) re-submitted nothing. A copy is skipped
    # only when this replay also reads its original.
    later = replay_topic(kafka_bootstrap, topic, topic, from_time=copies_from)
    # It reads the two replays' copies, and their originals are before its start.
    assert (later.messages, later.copies_skipped) == (2 * len(copies), 0)
    assert later.records == 2 * done.records


def test_dlq_replay_resubmits_what_now_passes(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member],
) -> None:  # fmt: skip
    topic, group = f"live-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    dlq = topic + ".dlq"
    ensure_topics(kafka_bootstrap, topic, dlq)
    now_valid = {"record_id": "dl-1", "gateway_id": "gw-dlq", "agency_id": "in-sbi",
                 "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m",
                 "request_count": 7}  # fmt: skip
    still_bad = {**now_valid, "record_id": "dl-2", "input_tokens": -3}

    def letter(record: dict[str, object], offset: int, field: str = "x") -> bytes:
        return orjson.dumps({"source_topic": topic, "source_partition": 3,
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
    members.append(Member(core, store_settings, kafka_bootstrap, topic, group))
    for _ in range(2):  # safe to repeat: the record lands once
        done = replay_dead_letters(kafka_bootstrap, dlq, topic)
        # dl-1 has two letters (refused twice, say by an older pipeline): re-submitted once,
        # or each run would double the letters of a record the pipeline keeps refusing.
        assert (done.messages, done.records, done.refused) == (5, 1, 2)
        # To the partition of the record's shard, where a copy the gateway sent since would be
        # (the letter names partition 3).
        assert set(done.ends) == {shard_of("gw-dlq", "dl-1", 4) % 4} != {3}
        assert wait_landed(kafka_bootstrap, topic, group, done.ends, timeout_seconds=60) == (
            "landed"
        )
        landed = pool.query_rows(
            "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-dlq'"
        )[0]
        assert (int(landed[0]), int(landed[1])) == (1, 7)


def test_replay_ends_when_the_last_offset_holds_no_message(kafka_bootstrap: str) -> None:
    # Found in review: a topic written by a transactional producer ends with a commit marker,
    # an offset no consumer ever sees; replay waited for a message there forever.
    topic = f"txn-{uuid.uuid4().hex[:6]}"
    live = f"live-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, live, live + ".dlq")
    record = {"record_id": f"txn-{topic}", "gateway_id": "gw-txn", "agency_id": "in-sbi",
              "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=topic)
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, value=orjson.dumps([record]))
    producer.commit_transaction()
    producer.close()
    started = time.monotonic()
    done = replay_topic(kafka_bootstrap, topic, live)
    assert (done.messages, done.records) == (1, 1)
    assert time.monotonic() - started < 60
    # From another topic, the copy is placed by the shard of its record's identity.
    assert done.ends == {shard_of("gw-txn", f"txn-{topic}", 4): 1}


def test_a_missing_topic_is_exit_2_and_a_dlq_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    live = f"live-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TRACKER_DATA_DIR": str(tmp_path), "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACKER_KAFKA_TOPIC": live, "TRACKER_KAFKA_DLQ_TOPIC": live + ".dlq"}  # fmt: skip
    missing = replay_cli(env, "replay", "--topic", f"nothing-{uuid.uuid4().hex[:6]}")
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 2 and "does not exist" in err and "Traceback" not in err, err
    dlq = replay_cli(env, "replay", "--topic", live + ".dlq")
    _, err = dlq.communicate(timeout=120)
    assert dlq.returncode == 2 and "tracker dlq replay" in err, err
    # Found in review: a time before 1970 was a ValueError trace from kafka-python.
    early = replay_cli(env, "replay", "--from-time", "1960-01-01")
    _, err = early.communicate(timeout=120)
    assert early.returncode == 2 and "before 1970" in err and "Traceback" not in err, err
    # Found in review (2026-11-26): a start no message has reached read nothing and ended
    # "read 0 messages" with exit 0, so a mistyped year or offset looked like a replay done.
    late = replay_cli(env, "replay", "--from-time", "2099-01-01")
    _, err = late.communicate(timeout=120)
    assert late.returncode == 2 and "is in the future" in err and "Traceback" not in err, err
    past = replay_cli(env, "replay", "--from-offset", "1000000000000")
    _, err = past.communicate(timeout=120)
    assert past.returncode == 2 and "past the end of every partition" in err, err
    assert "(ends 0: 0, 1: 0, 2: 0, 3: 0)" in err, err
    # At the end itself there is just nothing new: not an error.
    at_end = replay_cli(env, "replay", "--from-offset", "0", "--wait", "0")
    out, err = at_end.communicate(timeout=120)
    assert at_end.returncode == 0 and "read 0 messages" in out, (out, err)


def test_from_another_topic_records_are_copied_by_the_shard_of_their_identity(
    kafka_bootstrap: str,
) -> None:
    """A message read elsewhere may mix agencies, carry no key, and hold one record twice under
    two agencies. Its copies are cut by the shard of each record's identity and keyed by it, as
    the collector sends them, so each record lands where its live copies land (one member)."""
    source, live = f"archive-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, live, live + ".dlq")
    base = {"gateway_id": "gw-mix", "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam",
            "model": "m"}  # fmt: skip
    mixed = [{**base, "record_id": f"mix-{i}", "agency_id": ("in-sbi", "in-pnb")[i % 2]}
             for i in range(40)]  # fmt: skip
    mixed.append({**mixed[0], "agency_id": "in-pnb"})  # mix-0 again, under another agency
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(source, value=orjson.dumps(mixed))
    producer.flush()
    producer.close()
    done = replay_topic(kafka_bootstrap, source, live)
    assert (done.messages, done.records) == (1, 41)
    copies = read_topic(kafka_bootstrap, live)
    assert_sharded(copies, shards=4, partitions=4)
    assert len(copies) == 4  # one message per shard: 40 identities cover all four
    assert sorted(r["record_id"] for read in copies for r in read.records) == sorted(
        r["record_id"] for r in mixed
    )
    (both,) = [read for read in copies if any(r["record_id"] == "mix-0" for r in read.records)]
    assert [r["agency_id"] for r in both.records if r["record_id"] == "mix-0"] == [
        "in-sbi", "in-pnb",
    ]  # fmt: skip


def test_refusals_read_in_another_topic_are_dead_lettered_and_recorded_under_it(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member],
) -> None:  # fmt: skip
    """Found in review: records the contract refuses in another topic (a backup a store is
    rebuilt from, say) were only counted in the replay's output, never dead-lettered nor in
    `usage_rejects`. Now they go to the group with their places in the original, and are
    recorded under it, once however often the replay runs."""
    source, live = f"archive-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    group = f"g-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, live, live + ".dlq")
    base = {"gateway_id": "gw-arch", "agency_id": "in-sbi", "occurred_at": "2026-03-03T03:00:00Z",
            "provider": "sarvam", "model": "m", "request_count": 2}  # fmt: skip
    mixed = [{**base, "record_id": f"ok-{i}"} for i in range(6)]
    mixed[1] = {**mixed[1], "input_tokens": -3}  # refused: negative tokens
    mixed[4] = {k: v for k, v in mixed[4].items() if k != "model"}  # refused: no model
    mixed[5] = {**mixed[5], "input_tokens": 10**30}  # refused: beyond 64 bits, written back
    cut = {**base, "record_id": "cut", "model": "m\ud83d"}  # refused: a lone surrogate
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    # The last one through the standard library: orjson cannot write a number beyond 64 bits.
    for value in (orjson.dumps(mixed[:5]), b"not JSON at all",
                  orjson.dumps([{**base, "record_id": "ok-9"}]), json.dumps([mixed[5], cut]).encode()):  # fmt: skip
        producer.send(source, value=value, partition=0)  # at offsets 0-3
    producer.flush()
    producer.close()
    members.append(Member(core, store_settings, kafka_bootstrap, live, group))
    for _ in range(2):  # safe to repeat: nothing recorded twice
        done = replay_topic(kafka_bootstrap, source, live)
        assert (done.messages, done.records, done.refused) == (4, 4, 5)
        assert wait_landed(kafka_bootstrap, live, group, done.ends, timeout_seconds=60) == "landed"
        landed = pool.query_rows(
            "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-arch'"
        )[0]
        assert (int(landed[0]), int(landed[1])) == (4, 8)
        rows = pool.query_rows(
            "SELECT source_partition, source_offset, record_index, field, gateway_id "
            "FROM usage_rejects WHERE source_topic = {t:String} ORDER BY source_offset, "
            "record_index",
            parameters={"t": source},
        )
        assert [tuple(r[:4]) for r in rows] == [
            (0, 0, 1, "input_tokens"), (0, 0, 4, "model"), (0, 1, -1, "message"),
            (0, 3, 0, "input_tokens"), (0, 3, 1, "model"),
        ], rows  # fmt: skip
        assert [r[4] for r in rows] == ["gw-arch", "gw-arch", "", "gw-arch", ""]
        assert not pool.query_rows(
            "SELECT count() FROM usage_rejects WHERE source_topic = {t:String}",
            parameters={"t": live},
        )[0][0]
    # A dead letter is one JSON object, which read_topic keeps as it parsed it.
    letters = [
        cast(dict[str, Any], read.records) for read in read_topic(kafka_bootstrap, live + ".dlq")
    ]
    # The pipeline dead-letters each refusal it reads; the second run's are the same records.
    assert len(letters) == 10 and {letter["source_topic"] for letter in letters} == {source}
    firsts = [x for x in letters if (x["source_offset"], x["record_index"]) == (0, 1)]
    assert firsts and all(orjson.loads(f["payload"])["record_id"] == "ok-1" for f in firsts)
    # The record with a lone surrogate keeps it in its dead letter, escaped.
    cuts = [x for x in letters if (x["source_offset"], x["record_index"]) == (3, 1)]
    assert len(cuts) == 2 and all(json.loads(c["payload"]) == cut for c in cuts)
    # And `tracker dlq replay` can take them from there: nothing passes yet.
    assert replay_dead_letters(kafka_bootstrap, live + ".dlq", live).records == 0


def test_a_replay_whose_broker_goes_away_stops_with_an_error(
    kafka_bootstrap: str, broker_module: ModuleType, kafka_dir: Path
) -> None:
    """Found in review: with the broker gone mid-replay, the read polled it forever, without a
    word. Now a read that gets nowhere for `idle_seconds` stops with the reason, and the
    replay, run again once the broker is back, finishes."""
    source, live = f"archive-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, live, live + ".dlq")
    record = {"gateway_id": "gw-gone", "agency_id": "in-sbi", "provider": "sarvam", "model": "m",
              "occurred_at": "2026-03-03T03:00:00Z"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(20):
        producer.send(source, value=orjson.dumps([{**record, "record_id": f"gone-{i}"}]))
    producer.flush()
    producer.close()

    def broker_goes(done: int, total: int) -> None:
        if done == 0:  # the ranges are read, nothing yet: the broker goes away
            broker_module.stop(kafka_dir)

    started = time.monotonic()
    try:
        with pytest.raises(ReplayError, match=r"nothing read from .* for 3 s with 20 messages"):
            replay_topic(kafka_bootstrap, source, live, progress=broker_goes, idle_seconds=3)
        assert time.monotonic() - started < 60
    finally:
        assert broker_module.start(kafka_dir) == kafka_bootstrap
    done = replay_topic(kafka_bootstrap, source, live)
    assert (done.messages, done.records) == (20, 20)


def test_waiting_for_the_group_goes_on_through_a_broker_restart(
    kafka_bootstrap: str, broker_module: ModuleType, kafka_dir: Path
) -> None:
    """`wait_landed` asks the group's coordinator for its offsets every interval: with the
    broker restarting under it, it must ask again and report the landing once the group
    commits, not fail (seen failing with the retry narrowed to the group's own errors)."""
    topic, group = f"restart-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for _ in range(5):
        producer.send(topic, value=b"[]", partition=0)
    producer.flush()
    producer.close()
    member = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                           enable_auto_commit=False, session_timeout_ms=30_000)  # fmt: skip
    try:
        # The topic's metadata read before the first poll, as the pipeline's members do
        # (pipeline/consumer.py): joined before it, this member once hung for good in its
        # first poll (kafka-python 3.0.12, "No partition metadata for topic", then a fetch that
        # never returned) and the test ran out its 300 s (2026-11-25, clean-clone CI).
        assert member.partitions_for_topic(topic) == {0}
        while not member.assignment():
            member.poll(timeout_ms=200)
        seen: list[tuple[int, int]] = []
        asked = threading.Event()

        def progress(done: int, total: int) -> None:
            seen.append((done, total))
            asked.set()

        outcome: list[object] = []
        waiting = threading.Thread(target=lambda: outcome.append(wait_landed(
            kafka_bootstrap, topic, group, {0: 5}, timeout_seconds=180, progress=progress,
            interval=0.5,
        )), daemon=True)  # fmt: skip
        waiting.start()
        assert asked.wait(30)
        broker_module.stop(kafka_dir)
        time.sleep(3)  # several of the waiter's asks fail meanwhile
        assert broker_module.start(kafka_dir) == kafka_bootstrap
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + 120
        while True:  # the member finds the restarted coordinator, then commits the 5 messages
            member.poll(timeout_ms=200)
            try:
                member.commit({tp: OffsetAndMetadata(5, None, -1)})
                break
            except KafkaError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        waiting.join(timeout=150)
        assert outcome == ["landed"], seen
        assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    finally:
        member.close(autocommit=False)


def test_dlq_replay_remembers_a_bounded_number_of_identities(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identities `tracker dlq replay` met in a run are kept up to SEEN_LIMIT, not for every
    letter of a topic of any size; past it, a record met again is re-submitted again (the key
    index lands it once)."""
    live = f"live-{uuid.uuid4().hex[:6]}"
    dlq = live + ".dlq"
    ensure_topics(kafka_bootstrap, live, dlq)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    # One partition, in this order: with room for two identities, the third clears the set.
    for offset, i in enumerate((0, 1, 0, 2, 0, 1)):
        record = {"record_id": f"seen-{i}", "gateway_id": "gw-seen", "agency_id": "in-sbi",
                  "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
        letter = {"source_topic": live, "source_partition": 0, "source_offset": offset,
                  "record_index": 0, "gateway_id": "gw-seen", "field": "x", "reason": "older",
                  "payload": orjson.dumps(record).decode()}  # fmt: skip
        producer.send(dlq, value=orjson.dumps(letter), partition=0)
    producer.flush()
    producer.close()
    assert replay_dead_letters(kafka_bootstrap, dlq, live).records == 3
    monkeypatch.setattr(replay_module, "SEEN_LIMIT", 2)
    bounded = replay_dead_letters(kafka_bootstrap, dlq, live)
    # seen-0, seen-1 | seen-0 met | seen-2 clears | seen-0 again | seen-1 clears: five sent.
    assert (bounded.messages, bounded.records) == (6, 5)


def test_a_copy_kafka_refuses_stops_the_replay_naming_its_original(kafka_bootstrap: str) -> None:
    """A copy the live topic does not take (over its max.message.bytes) stops the replay with
    the original's place and Kafka's reason: nothing is skipped without a word."""
    source, live = f"archive-{uuid.uuid4().hex[:6]}", f"small-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(live, 1, 1, topic_configs={"max.message.bytes": "1024"})])
    finally:
        admin.close()
    base = {"gateway_id": "gw-big", "agency_id": "in-sbi", "provider": "sarvam", "model": "m",
            "occurred_at": "2026-03-03T03:00:00Z"}  # fmt: skip
    # Random ids: the copy stays over 1 KiB once compressed.
    records = [{**base, "record_id": uuid.uuid4().hex * 3} for _ in range(60)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(source, value=orjson.dumps(records), partition=0)
    producer.flush()
    producer.close()
    with pytest.raises(
        ReplayError, match=rf"Kafka did not take the copy of {source}/0/0: .*(?i:too ?large)"
    ):
        replay_topic(kafka_bootstrap, source, live, shards=1)


def test_refusals_two_replays_copied_at_once_are_recorded_once(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member],
) -> None:  # fmt: skip
    """Found in review: two replays of another topic run at once put copies of one refused
    record side by side in its shard's partition; landed in one batch, both were recorded
    (the check against stored rows saw neither)."""
    source, live = f"archive-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    group = f"g-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, live, live + ".dlq")
    base = {"gateway_id": "gw-twice", "agency_id": "in-sbi", "occurred_at": "2026-03-03T03:00:00Z",
            "provider": "sarvam", "model": "m"}  # fmt: skip
    records = [{**base, "record_id": "t-0"}, {**base, "record_id": "t-1", "input_tokens": -3}]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(source, value=orjson.dumps(records), partition=0)
    producer.flush()
    producer.close()
    ends: dict[int, int] = {}
    for _ in range(2):  # both before any member reads: their copies land in one batch
        for partition, end in replay_topic(kafka_bootstrap, source, live).ends.items():
            ends[partition] = max(ends.get(partition, 0), end)
    members.append(Member(core, store_settings, kafka_bootstrap, live, group))
    assert wait_landed(kafka_bootstrap, live, group, ends, timeout_seconds=60) == "landed"
    rows = pool.query_rows(
        "SELECT source_offset, record_index, field FROM usage_rejects WHERE source_topic = {t:String}",
        parameters={"t": source},
    )
    assert [tuple(r) for r in rows] == [(0, 1, "input_tokens")]


def test_dlq_replay_resubmits_a_record_whose_earlier_letter_is_still_refused(
    kafka_bootstrap: str,
) -> None:
    """Found in review: the run skipped every letter of a record after its first, so a record
    whose first letter is still refused (a bad field then) and whose later letter passes now
    was never re-submitted; the order of the letters decided it. A letter nested deeper than
    the encoders go was a traceback on every run; it is refused."""
    live = f"live-{uuid.uuid4().hex[:6]}"
    dlq = live + ".dlq"
    ensure_topics(kafka_bootstrap, live, dlq)
    good = {"record_id": "order-1", "gateway_id": "gw-order", "agency_id": "in-sbi",
            "occurred_at": "2026-03-03T03:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
    deep = "[" * 1000 + "]" * 1000
    payloads = [orjson.dumps({**good, "input_tokens": -1}).decode(),
                orjson.dumps(good).decode(), deep]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for offset, payload in enumerate(payloads):
        letter = {"source_topic": live, "source_partition": 0, "source_offset": offset,
                  "record_index": 0, "gateway_id": "gw-order", "field": "x", "reason": "older",
                  "payload": payload}  # fmt: skip
        producer.send(dlq, value=orjson.dumps(letter), partition=0)
    producer.flush()
    producer.close()
    done = replay_dead_letters(kafka_bootstrap, dlq, live)
    assert (done.messages, done.records, done.refused) == (3, 1, 2)
    sent = [rec for read in read_topic(kafka_bootstrap, live) for rec in read.records]
    assert [(r["record_id"], r["input_tokens"]) for r in sent] == [("order-1", 0)]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The topic's partitions, each with its end offset now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: end for tp, end in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def test_a_replay_with_another_partition_count_sends_nothing_and_leaves_the_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Found in review: a replay run with another TRACKER_KAFKA_PARTITIONS than the live topic
    has (the collector's count) added partitions to the live topic and sent copies cut by its
    own count, to other partitions than their records' originals. Both commands now refuse,
    naming both counts, before anything is sent or changed; with the topic's count they run."""
    source = f"archive-{uuid.uuid4().hex[:6]}"
    fewer, more = f"live-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, fewer, fewer + ".dlq", partitions=2)  # a collector's 2
    ensure_topics(kafka_bootstrap, more, more + ".dlq", partitions=6)
    base = {"gateway_id": "gw-count", "agency_id": "in-sbi", "provider": "sarvam", "model": "m",
            "occurred_at": "2026-03-03T03:00:00Z"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(source, value=orjson.dumps([{**base, "record_id": f"n-{i}"} for i in range(8)]))
    producer.flush()
    producer.close()

    def run(live: str, partitions: int, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "TRACKER_DATA_DIR": str(tmp_path),
               "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TRACKER_KAFKA_TOPIC": live,
               "TRACKER_KAFKA_DLQ_TOPIC": live + ".dlq",
               "TRACKER_KAFKA_PARTITIONS": str(partitions)}  # fmt: skip
        return replay_cli(env, *args, "--wait", "0")

    for live, count in ((fewer, 2), (more, 6)):
        for args in (["replay", "--topic", source], ["dlq", "replay"]):
            proc = run(live, 4, *args)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, err
            assert (f"the live topic {live} has {count} partitions but TRACKER_KAFKA_PARTITIONS "
                    "is 4") in err and f"TRACKER_KAFKA_PARTITIONS={count}" in err, err  # fmt: skip
            assert "Traceback" not in err, err
        assert end_offsets(kafka_bootstrap, live) == dict.fromkeys(range(count), 0)
    # Called as a library, too: nothing sent.
    differ = "has 2 partitions but TRACKER_KAFKA_PARTITIONS is 4"
    with pytest.raises(ReplayError, match=differ):
        replay_topic(kafka_bootstrap, source, fewer, shards=4)
    with pytest.raises(ReplayError, match=differ):
        replay_dead_letters(kafka_bootstrap, fewer + ".dlq", fewer, shards=4)
    assert end_offsets(kafka_bootstrap, fewer) == {0: 0, 1: 0}
    # With the live topic's count, the records are cut as the collector cuts them.
    assert "8 records re-submitted" in finished(run(fewer, 2, "replay", "--topic", source))
    assert_sharded(read_topic(kafka_bootstrap, fewer), shards=2, partitions=2)


def land_with_a_bug(
    core: Core, store_settings: CommonSettings, kafka_bootstrap: str, members: list[Member],
    monkeypatch: pytest.MonkeyPatch, topic: str, group: str, gateway: str, message: bytes,
    partition: int,
) -> threading.Event:  # fmt: skip
    """`message` sent to `topic`'s `partition` and read by a member whose processor fails on
    `gateway`'s records while the returned event is set (a bug of this release): dead-lettered
    whole. Clear the event for the fixed release."""
    failing = threading.Event()
    failing.set()
    process = core.processor.process_message
    marker = gateway.encode()

    def with_a_bug(value: bytes, partition: int = -1, offset: int = -1) -> Processed:
        if failing.is_set() and marker in value:
            raise RuntimeError("a bug of this release")
        return process(value, partition, offset)

    monkeypatch.setattr(core.processor, "process_message", with_a_bug)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topic, value=message, partition=partition)
    producer.flush()
    producer.close()
    members.append(Member(core, store_settings, kafka_bootstrap, topic, group))
    wait_caught_up(kafka_bootstrap, topic, group, timeout=120)
    return failing


def test_a_message_dead_lettered_whole_past_64_kib_is_read_again_by_dlq_replay(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found in review: a message the processor failed on was dead-lettered with its first
    64 KiB only, which a collector's 500-record message is past: `tracker dlq replay` read the
    cut JSON, refused it, and its records never came back. The letter now says it was cut, and
    dlq replay reads the whole message again at the letter's place; once retention has deleted
    it there, the replay names the letter and sends nothing for it."""
    topic, group = f"cut-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    dlq = topic + ".dlq"
    ensure_topics(kafka_bootstrap, topic, dlq)
    base = {"gateway_id": "gw-cut", "agency_id": "in-sbi", "occurred_at": "2026-03-03T03:00:00Z",
            "provider": "sarvam", "model": "m", "request_count": 2}  # fmt: skip
    big = orjson.dumps([{**base, "record_id": f"cut-{i:03d}-{'x' * 100}"} for i in range(500)])
    assert len(big) > 64 * 1024
    failing = land_with_a_bug(core, store_settings, kafka_bootstrap, members, monkeypatch,
                              topic, group, "gw-cut", big, partition=1)  # fmt: skip
    (letter,) = [cast(dict[str, Any], read.records) for read in read_topic(kafka_bootstrap, dlq)]
    assert letter["reason"] == "processor error: RuntimeError: a bug of this release"
    place = (letter["source_partition"], letter["source_offset"], letter["record_index"])
    assert place == (1, 0, -1)
    assert len(letter["payload"]) == 64 * 1024 and letter["payload_cut"] is True

    failing.clear()  # the fixed release
    for _ in range(2):  # safe to repeat: the records land once
        done = replay_dead_letters(kafka_bootstrap, dlq, topic)
        assert (done.messages, done.records, done.refused, done.lost) == (1, 500, 0, 0)
        assert wait_landed(kafka_bootstrap, topic, group, done.ends, timeout_seconds=60) == "landed"
        landed = pool.query_rows(
            "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-cut'"
        )[0]
        assert (int(landed[0]), int(landed[1])) == (500, 1000)

    # Retention deletes the original (and the copies sent to its partition since).
    tp = TopicPartition(topic, 1)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.delete_records({tp: end_offsets(kafka_bootstrap, topic)[1]})
    finally:
        admin.close()
    gone = replay_dead_letters(kafka_bootstrap, dlq, topic)
    assert (gone.messages, gone.records, gone.refused, gone.lost, gone.ends) == (1, 0, 0, 1, {})
    (named,) = gone.lost_named
    assert named.startswith(f"{topic}/1/0: deleted by {topic}'s retention"), named


def test_dlq_replay_reads_again_what_a_letter_kept_only_the_start_of(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Letters written before they said whether they were cut are taken for cut when a whole
    message's payload is 64 KiB long; a record past 64 KiB (whitespace its fields lose) is read
    again from its message too. What is read at a letter's place must start as its payload: a
    place that holds another message is named (the CLI says which), and nothing is sent."""
    live = f"live-{uuid.uuid4().hex[:6]}"
    dlq = live + ".dlq"
    ensure_topics(kafka_bootstrap, live, dlq)
    base = {"gateway_id": "gw-old", "agency_id": "in-sbi", "occurred_at": "2026-03-03T03:00:00Z",
            "provider": "sarvam", "model": "m"}  # fmt: skip
    big = orjson.dumps([{**base, "record_id": f"old-{i:03d}-{'x' * 100}"} for i in range(500)])
    padded = {**base, "record_id": "old-padded", "model": "m" + " " * 70_000}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for value in (big, orjson.dumps([{**base, "record_id": "old-ok"}, padded]),
                  orjson.dumps([{**base, "record_id": "other"}])):  # fmt: skip
        producer.send(live, value=value, partition=0)  # at offsets 0-2

    def letter(offset: int, index: int, payload: bytes, **cut: bool) -> bytes:
        return orjson.dumps({"source_topic": live, "source_partition": 0, "source_offset": offset,
                             "record_index": index, "gateway_id": "gw-old", "field": "x",
                             "reason": "refused by an older release",
                             "payload": payload[: 64 * 1024].decode(), **cut})  # fmt: skip

    for value in (letter(0, -1, big),  # an older release's letter: no payload_cut
                  letter(1, 1, orjson.dumps(padded), payload_cut=True),
                  letter(2, -1, big, payload_cut=True)):  # fmt: skip
        producer.send(dlq, value=value, partition=0)
    producer.flush()
    producer.close()
    env = {**os.environ, "TRACKER_DATA_DIR": str(tmp_path), "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACKER_KAFKA_TOPIC": live, "TRACKER_KAFKA_DLQ_TOPIC": dlq}  # fmt: skip
    proc = replay_cli(env, "dlq", "replay", "--wait", "0")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, (out, err)
    assert (f"3 dead letters: 501 records re-submitted to {live}, 0 still refused, 1 not "
            "re-readable") in out, out  # fmt: skip
    assert "not re-submitted, as they keep only the first 64 KiB" in err, err
    assert f"{live}/0/2: the message there is not the one refused" in err, err
    sent = Counter(r["record_id"] for read in read_topic(kafka_bootstrap, live)
                   for r in read.records)  # fmt: skip
    # Each record of the big message and the padded one: the original and one copy.
    assert sent["old-000-" + "x" * 100] == sent["old-padded"] == 2
    assert sent["old-ok"] == sent["other"] == 1
    assert sum(sent.values()) == 503 + 501


def test_dlq_replays_while_the_bug_remains_add_no_refusals_and_resubmit_no_more(
    core: Core, store_settings: CommonSettings, pool: ClientPool, kafka_bootstrap: str,
    members: list[Member], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Found in review (2026-11-26): a dead-letter copy refused again (the fix not deployed
    yet) was recorded where it was read, with a letter of its own place, which the next dlq
    replay re-submitted beside the original's letter: letters, usage_rejects rows and
    re-submissions doubled at every run (1, 5, 13, 29 letters). A dead-letter copy's refusal
    is recorded at its original now, its letter marked as a copy's and not re-submitted: one
    usage_rejects row, the same records re-submitted each run, then landed once when fixed."""
    topic, group = f"redo-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    dlq = topic + ".dlq"
    ensure_topics(kafka_bootstrap, topic, dlq)
    base = {"gateway_id": "gw-redo", "agency_id": "in-sbi", "occurred_at": "2026-03-03T03:00:00Z",
            "provider": "sarvam", "model": "m", "request_count": 3}  # fmt: skip
    message = orjson.dumps([{**base, "record_id": f"redo-{i:03d}"} for i in range(400)])
    failing = land_with_a_bug(core, store_settings, kafka_bootstrap, members, monkeypatch,
                              topic, group, "gw-redo", message, partition=2)  # fmt: skip

    def refusals() -> list[tuple[Any, ...]]:
        return pool.query_rows(
            "SELECT source_partition, source_offset, record_index FROM usage_rejects "
            "WHERE source_topic = {t:String}", parameters={"t": topic},
        )  # fmt: skip

    assert refusals() == [(2, 0, -1)]
    letters = [sum(end_offsets(kafka_bootstrap, dlq).values())]
    assert letters == [1]
    for _ in range(3):  # the bug is still there
        done = replay_dead_letters(kafka_bootstrap, dlq, topic)
        assert (done.records, done.refused, done.lost) == (400, 0, 0)
        # The letters of earlier runs' copies are not re-submitted: the first letter is.
        assert done.copies_skipped == letters[-1] - 1
        assert wait_landed(kafka_bootstrap, topic, group, done.ends, timeout_seconds=60) == "landed"
        assert refusals() == [(2, 0, -1)]
        letters.append(sum(end_offsets(kafka_bootstrap, dlq).values()))
        # At most a letter per copy (400 records in 4 shards) and run, under the original.
        assert letters[-1] - letters[-2] <= 4, letters
    copies = 0
    for read in read_topic(kafka_bootstrap, dlq):
        letter = cast(dict[str, Any], read.records)
        place = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        assert place == (topic, 2, 0) and letter["record_index"] == -1, letter
        copies += letter.get("dead_letter_copy") is True
    assert copies == letters[-1] - 1  # all but the first refusal's
    assert pool.query_rows("SELECT count() FROM usage_raw WHERE gateway_id = 'gw-redo'") == [(0,)]

    failing.clear()  # the fixed release
    done = replay_dead_letters(kafka_bootstrap, dlq, topic)
    assert done.records == 400
    assert wait_landed(kafka_bootstrap, topic, group, done.ends, timeout_seconds=60) == "landed"
    landed = pool.query_rows(
        "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-redo'"
    )[0]
    assert (int(landed[0]), int(landed[1])) == (400, 1200)
    assert refusals() == [(2, 0, -1)]
