"""The batch in hand after a rebalance: only what came from partitions still held is landed."""

from __future__ import annotations

from kafka.structs import TopicPartition

from pipeline.consumer import Batch
from pipeline.processor import COLUMNS, Rejection

TOPIC = "usage.v1"


def row(partition: int, offset: int) -> tuple[object, ...]:
    values: list[object] = [f"r{partition}-{offset}"] * len(COLUMNS)
    values[COLUMNS.index("source_partition")] = partition
    values[COLUMNS.index("source_offset")] = offset
    return tuple(values)


def test_records_of_partitions_no_longer_held_are_left_to_their_new_owner() -> None:
    batch = Batch()
    for partition, offsets in ((0, range(10, 13)), (1, range(40, 42)), (2, range(7, 8))):
        tp = TopicPartition(TOPIC, partition)
        for offset in offsets:
            batch.rows.append(row(partition, offset))
            batch.offsets[tp] = offset + 1
            batch.counts[tp] = batch.counts.get(tp, 0) + 1
    assert batch.starts() == {TopicPartition(TOPIC, 0): 10, TopicPartition(TOPIC, 1): 40,
                              TopicPartition(TOPIC, 2): 7}  # fmt: skip
    batch.rejections.append((Rejection(0, "gw", "model", "required", "{}"), 1, 41, None))
    batch.rejections.append((Rejection(-1, "", "message", "not JSON", "x"), 2, 7, None))
    assert batch.messages == 6

    gone = batch.keep_only({TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)})

    assert gone == {TopicPartition(TOPIC, 1)}
    assert [(r[COLUMNS.index("source_partition")], r[COLUMNS.index("source_offset")])
            for r in batch.rows] == [(0, 10), (0, 11), (0, 12), (2, 7)]  # fmt: skip
    assert [(p, o) for _, p, o, _ in batch.rejections] == [(2, 7)]
    assert batch.offsets == {TopicPartition(TOPIC, 0): 13, TopicPartition(TOPIC, 2): 8}
    assert batch.messages == 4
    assert batch.keep_only({TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)}) == set()
    assert batch.keep_only(set()) == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)}
    assert batch.empty() and batch.rows == [] and batch.rejections == []
