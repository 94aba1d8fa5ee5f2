"""Re-reading the stream: `tracker replay` (a topic from an offset or a time) and
`tracker dlq replay` (dead letters re-submitted after a fix).

Both read outside the consumer group (no offsets are committed, live processing is untouched)
and land through the same processor and idempotent writer as live traffic, so running them any
number of times changes nothing that has already landed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from pipeline.processor import Processor, Rejection
from pipeline.writer import Writer

Progress = Callable[[int, int], None]  # (messages done so far, total messages)


@dataclass
class ReplayResult:
    messages: int = 0
    landed: int = 0
    duplicates: int = 0
    rejected: int = 0


def _ranges(
    consumer: KafkaConsumer, topic: str, from_offset: int | None, from_time: datetime | None
) -> dict[TopicPartition, tuple[int, int]]:
    """[start, end) per partition; `end` is fixed when the replay starts."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ValueError(f"topic {topic!r} does not exist")
    parts = [TopicPartition(topic, p) for p in sorted(partitions)]
    ends = consumer.end_offsets(parts)
    begins = consumer.beginning_offsets(parts)
    starts = dict(begins)
    if from_time is not None:
        found = consumer.offsets_for_times({tp: int(from_time.timestamp() * 1000) for tp in parts})
        starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in parts}
    elif from_offset is not None:
        starts = {tp: max(begins[tp], min(from_offset, ends[tp])) for tp in parts}
    return {tp: (starts[tp], ends[tp]) for tp in parts if starts[tp] < ends[tp]}


def _read(
    bootstrap: str,
    topic: str,
    from_offset: int | None,
    from_time: datetime | None,
    on_batch: Callable[[list[tuple[int, int, bytes]]], None],
    progress: Progress | None,
    batch_messages: int = 500,
) -> int:
    # earliest: a start that retention deleted meanwhile reads what is left, never jumps to
    # the end (which would skip it all and still report success).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             group_id=None, client_id="tracker-replay",
                             auto_offset_reset="earliest")  # fmt: skip
    try:
        ranges = _ranges(consumer, topic, from_offset, from_time)
        total = sum(end - start for start, end in ranges.values())
        if progress:
            progress(0, total)
        if not ranges:
            return 0
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        remaining = dict(ranges)
        done = 0
        while remaining:
            polled = consumer.poll(timeout_ms=1000, max_records=batch_messages)
            batch: list[tuple[int, int, bytes]] = []
            for tp, messages in polled.items():
                end = remaining.get(tp, (0, 0))[1]
                for m in messages:
                    if m.offset < end:
                        batch.append((tp.partition, m.offset, m.value or b""))
            # Done by position, not by the last message's offset: the offset before the end
            # may hold no message (a transaction marker, a compacted record), and waiting for
            # one hung the replay (found in review).
            for tp in list(remaining):
                if consumer.position(tp) >= remaining[tp][1]:
                    remaining.pop(tp)
                    consumer.pause(tp)
            if batch:
                on_batch(batch)
                done += len(batch)
                if progress:
                    progress(done, total)
        return done
    finally:
        consumer.close(autocommit=False)


def replay_topic(
    bootstrap: str,
    topic: str,
    processor: Processor,
    writer: Writer,
    *,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    result = ReplayResult()

    def land(batch: list[tuple[int, int, bytes]]) -> None:
        rows = []
        refused: dict[tuple[int, int], list[Rejection]] = {}
        for partition, offset, value in batch:
            processed = processor.process_message(value, partition, offset)
            rows.extend(processed.rows)
            refused[partition, offset] = processed.rejections
            result.rejected += len({r.record_index for r in processed.rejections})
        writer.write_rejections(topic, refused)
        written = writer.write(rows)
        result.landed += written.inserted
        result.duplicates += written.duplicates

    result.messages = _read(bootstrap, topic, from_offset, from_time, land, progress)
    return result


def replay_dead_letters(
    bootstrap: str,
    dlq_topic: str,
    processor: Processor,
    writer: Writer,
    *,
    from_offset: int | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Each dead letter's payload is processed again by today's code and registry: what now
    passes lands (once, however often this runs); what still fails stays in the DLQ topic."""
    result = ReplayResult()
    # A record refused for three fields has three letters with one payload: it is processed
    # and counted once. The keys seen are kept for the run (dead letters are the exception).
    seen: set[tuple[str, int, int, int]] = set()

    def land(batch: list[tuple[int, int, bytes]]) -> None:
        rows = []
        for _, _, value in batch:
            try:
                letter = orjson.loads(value)
                payload = str(letter["payload"]).encode()
                partition, offset = int(letter["source_partition"]), int(letter["source_offset"])
                key = (str(letter.get("source_topic", "")), partition, offset,
                       int(letter.get("record_index", -1)))  # fmt: skip
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                result.rejected += 1
                continue
            if key in seen:
                continue
            seen.add(key)
            processed = processor.process_message(payload, partition, offset)
            rows.extend(processed.rows)
            result.rejected += len({r.record_index for r in processed.rejections})
        written = writer.write(rows)
        result.landed += written.inserted
        result.duplicates += written.duplicates

    result.messages = _read(bootstrap, dlq_topic, from_offset, None, land, progress)
    return result
