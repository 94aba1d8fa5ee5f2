"""Re-reading the stream: `tracker replay` (a topic from an offset or a time) and
`tracker dlq replay` (dead letters re-submitted after a fix).

Neither lands anything itself: both re-submit what they read to the live topic, and the
pipeline's consumer group lands it like any record delivered twice. The writer's exactly-once
rests on one lander per partition at a time (it checks the key index, then inserts), which the
group guarantees and nothing outside it can: two replays that landed directly at the same time
counted 18,721 of 20,000 records twice (found in review). A copy of a live-topic message goes
to its original's partition, and records from elsewhere (another topic, dead letters) to the
partition of their identity's shard, as the collector sends them; so a record and its copies are
landed by one member, one after the other, and the key index drops whatever landed before.

So both are safe to repeat and to run at the same time as each other and the pipeline. Copies
carry a header naming their original (pipeline.copies); a replay skips the copies whose original
it also reads, so repeated replays of the live topic do not re-submit copies of copies. Records
the contract refuses in the live topic or the dead letters are not re-submitted: they were
refused, dead-lettered and recorded when first read. Those refused in another topic never were:
they are re-submitted with their places in the original, and the group dead-letters and
records them under it (in usage_rejects once, however often the replay runs; the dead-letter
topic gets a letter at each run, as for any message read twice). Dead letters' copies are
recorded under their original in the same way when the group refuses them again, so repeating
a dlq replay before the fix re-submits the same records each time (pipeline.copies).
Re-submitting needs no store, so these commands run beside an embedded pipeline that holds its
data directory.

Both cut records by TRACKER_KAFKA_PARTITIONS as the collector does, so both refuse to send
anything when the live topic has another number of partitions (found in review: a replay with
another count added partitions to the live topic and sent copies where no original of theirs
was). A dead letter keeps at most the first 64 KiB of what was refused (processor.CLIP_BYTES),
and says when it was cut: `tracker dlq replay` then reads the whole again at the letter's place
(found in review: a message dead-lettered whole for a processor error could not be brought back),
and names the letters whose original retention has deleted since.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError, RetriableError, UnknownTopicOrPartitionError, for_code
from kafka.structs import TopicPartition

from pipeline.copies import TOPIC_NAME, headers_for
from pipeline.copies import original as original_of
from pipeline.processor import (
    CLIP_BYTES,
    UNENCODABLE,
    Rejection,
    clip,
    read_message,
    record_payload,
)
from tracker import json_read
from tracker.contract import (
    UsageRecord,
    by_shard,
    cut_by_shard,
    encode_batch,
    shard_key,
    shard_of,
)
from tracker.topics import producer

Progress = Callable[[int, int], None]  # (done so far, total)
# Records per re-submitted message (the collector's default).
RECORDS_PER_MESSAGE = 500
_SEND_TIMEOUT_SECONDS = 60.0
# A read that gets no message and no further for this long stops with an error: the broker went
# away mid-replay, and polling it forever hung the command without a word (found in review).
IDLE_SECONDS = 120.0
# Identities `tracker dlq replay` remembers in a run (~200 bytes each): past this the set starts
# again, and a record met again is re-submitted again, which the key index lands once.
SEEN_LIMIT = 1_000_000
# Cut letters whose original could not be read again that a result names (it counts them all).
LOST_NAMED = 10


class ReplayError(RuntimeError):
    """The replay could not finish (the topic is missing, Kafka refused a copy)."""


@dataclass
class ReplayResult:
    messages: int = 0  # read
    copies_skipped: int = 0  # copies of messages this replay reads too
    records: int = 0  # re-submitted
    # Records the contract refuses: from another topic, re-submitted for the group to dead-letter
    # and record; from the live topic or the dead letters, not again.
    refused: int = 0
    # Per partition of the live topic: the offset after the last copy sent there. The group
    # has landed every copy once its committed offsets reach these.
    ends: dict[int, int] = field(default_factory=dict)
    # Dead letters cut to their first 64 KiB whose original could not be read again (deleted
    # by retention, say): not re-submitted. The first LOST_NAMED, as "place: why".
    lost: int = 0
    lost_named: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _ranges(
    consumer: KafkaConsumer, topic: str, from_offset: int | None, from_time: datetime | None
) -> dict[TopicPartition, tuple[int, int]]:
    """[start, end) per partition; `end` is fixed when the replay starts."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ReplayError(f"topic {topic!r} does not exist")
    parts = [TopicPartition(topic, p) for p in sorted(partitions)]
    ends = consumer.end_offsets(parts)
    begins = consumer.beginning_offsets(parts)
    starts = dict(begins)
    if from_time is not None:
        if from_time.timestamp() < 0:
            raise ReplayError(f"--from-time {from_time.isoformat()}: before 1970, when Kafka's "
                              "clock starts; give a later time or --from-offset")  # fmt: skip
        # A start in the future reads nothing, and the command said "read 0 messages" with exit
        # 0: a mistyped year looked like a replay done (found in review).
        if from_time > datetime.now(UTC):
            raise ReplayError(f"--from-time {from_time.isoformat()} is in the future: nothing "
                              f"in {topic} was appended after it yet")  # fmt: skip
        found = consumer.offsets_for_times({tp: int(from_time.timestamp() * 1000) for tp in parts})
        starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in parts}
    elif from_offset is not None:
        if parts and all(from_offset > ends[tp] for tp in parts):
            # Likewise an offset no partition has reached (found in review): a mistyped one.
            named = ", ".join(f"{tp.partition}: {ends[tp]}" for tp in parts[:16])
            more = f" and {len(parts) - 16} more" if len(parts) > 16 else ""
            raise ReplayError(
                f"--from-offset {from_offset} is past the end of every partition of {topic} "
                f"(ends {named}{more}): no message has that offset yet"
            )
        starts = {tp: max(begins[tp], min(from_offset, ends[tp])) for tp in parts}
    return {tp: (starts[tp], ends[tp]) for tp in parts if starts[tp] < ends[tp]}


def _read(
    bootstrap: str,
    topic: str,
    from_offset: int | None,
    from_time: datetime | None,
    on_batch: Callable[[list[_Read]], None],
    progress: Progress | None,
    batch_messages: int = 500,
    on_ranges: Callable[[dict[int, tuple[int, int]]], None] | None = None,
    idle_seconds: float = IDLE_SECONDS,
) -> int:
    # earliest: a start that retention deleted meanwhile reads what is left, never jumps to
    # the end (which would skip it all and still report success).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             group_id=None, client_id="tracker-replay",
                             auto_offset_reset="earliest")  # fmt: skip
    try:
        ranges = _ranges(consumer, topic, from_offset, from_time)
        if on_ranges:
            on_ranges({tp.partition: span for tp, span in ranges.items()})
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
        moved = time.monotonic()
        while remaining:
            before = {tp: consumer.position(tp) for tp in remaining}
            polled = consumer.poll(timeout_ms=1000, max_records=batch_messages)
            batch: list[_Read] = []
            for tp, messages in polled.items():
                end = remaining.get(tp, (0, 0))[1]
                batch.extend(
                    _Read(tp.partition, m.offset, m.key, m.value or b"", list(m.headers or []))
                    for m in messages
                    if m.offset < end
                )
            # Done by position, not by the last message's offset: the offset before the end
            # may hold no message (a transaction marker, a compacted record), and waiting for
            # one hung the replay (found in review).
            for tp in list(remaining):
                if consumer.position(tp) >= remaining[tp][1]:
                    remaining.pop(tp)
                    consumer.pause(tp)
            if batch or any(consumer.position(tp) != at for tp, at in before.items()):
                moved = time.monotonic()
            elif time.monotonic() - moved > idle_seconds:
                left = sum(end - consumer.position(tp) for tp, (_, end) in remaining.items())
                raise ReplayError(
                    f"nothing read from {topic} for {idle_seconds:.0f} s with {left} messages "
                    f"left ({done} re-submitted): is Kafka at {bootstrap} reachable? Copies "
                    "sent so far are acknowledged; running the replay again is safe"
                )
            if batch:
                on_batch(batch)
                # Re-submitting (sends, acknowledgements) is not the read standing still.
                moved = time.monotonic()
                done += len(batch)
                if progress:
                    progress(done, total)
        return done
    finally:
        consumer.close(autocommit=False)


def partitions_differ(topic: str, partitions: int, shards: int) -> str:
    return (f"the live topic {topic} has {partitions} partitions but TRACKER_KAFKA_PARTITIONS is "
            f"{shards}: records are cut into as many shards as the topic has partitions, and "
            f"copies cut into {shards} would go to other partitions than their records' originals "
            f"(then two pipeline members can land one record). Run it with "
            f"TRACKER_KAFKA_PARTITIONS={partitions}, the count the collector and the pipeline must "
            "have too (docs/deploy.md); nothing was sent and the topic is unchanged")  # fmt: skip


def live_partitions(bootstrap: str, topic: str) -> int | None:
    """How many partitions `topic` has now (None: it does not exist), from the broker's
    metadata, asked so that the broker does not create the topic for being named."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="tracker-replay")
    try:
        for described in admin.describe_topics([topic]):
            if described.get("name") != topic:
                continue
            code = described.get("error_code") or 0
            if code == UnknownTopicOrPartitionError.errno:
                return None
            if code:
                raise ReplayError(f"Kafka could not describe {topic}: "
                                  f"{for_code(code).__name__}; try again")  # fmt: skip
            return len(described.get("partitions") or [])
        return None
    finally:
        admin.close()


def check_partitions(bootstrap: str, topic: str, shards: int) -> int | None:
    """The live topic's partitions (None: not created yet); a ReplayError when they are not
    `shards`. Run before anything that creates or grows the topic (topics.ensure_topics adds
    partitions up to its count): a replay must not change how the collector's records are
    spread, only follow it."""
    partitions = live_partitions(bootstrap, topic)
    if partitions is not None and partitions != shards:
        raise ReplayError(partitions_differ(topic, partitions, shards))
    return partitions


class _Resubmitter:
    """Sends copies to the live topic and waits for every acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, result: ReplayResult, shards: int) -> None:
        self.topic, self.result = topic, result
        self._producer = producer(bootstrap, client_id="tracker-replay",
                                  timeout_seconds=_SEND_TIMEOUT_SECONDS)  # fmt: skip
        self.partitions = len(self._producer.partitions_for(topic))
        if self.partitions != shards:  # before any copy: see check_partitions
            self._producer.close(timeout=10)
            raise ReplayError(partitions_differ(topic, self.partitions, shards))
        self._pending: list[tuple[str, Any]] = []

    def send(
        self, partition: int | None, key: bytes | None, value: bytes, original: str,
        indexes: list[int] | None = None, *, via_dead_letter: bool = False,
    ) -> None:  # fmt: skip
        if partition is not None and partition >= self.partitions:
            partition = None  # the live topic has fewer partitions: its partitioner decides
        try:
            self._pending.append((original, self._producer.send(
                self.topic, key=key, value=value, partition=partition,
                headers=headers_for(original, indexes, via_dead_letter=via_dead_letter),
            )))  # fmt: skip
        except KafkaError as exc:  # refused before sending (too large, say): name the message
            raise ReplayError(f"the copy of {original} was not sent: {type(exc).__name__}: "
                              f"{exc}") from exc  # fmt: skip

    def flush(self) -> None:
        """Every copy sent so far acknowledged (acks=all), its partition's end noted."""
        pending, self._pending = self._pending, []
        for original, future in pending:
            try:
                meta = future.get(timeout=_SEND_TIMEOUT_SECONDS)
            except KafkaError as exc:
                raise ReplayError(f"Kafka did not take the copy of {original}: "
                                  f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
            ends = self.result.ends
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

    def close(self) -> None:
        self._producer.close(timeout=10)


def replay_topic(
    bootstrap: str,
    topic: str,
    live_topic: str,
    *,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    shards: int = 4,
    progress: Progress | None = None,
    idle_seconds: float = IDLE_SECONDS,
) -> ReplayResult:
    """Re-submit `topic`'s messages in [start, its end now) to `live_topic`; records from
    another topic are cut into `shards` shards by identity, as the collector does."""
    result = ReplayResult()
    out = _Resubmitter(bootstrap, live_topic, result, shards)

    spans: dict[int, tuple[int, int]] = {}

    def read_again(read: _Read) -> bool:
        """Whether `read` is a copy whose original this replay reads too (then it is skipped:
        the original gives the same records). A copy whose original is elsewhere (another
        topic, a dead letter, expired, before this replay's start) may be all that is left."""
        named = original_of(read.headers)
        if named is None or named.topic != topic:
            return False
        start, end = spans.get(named.partition, (0, 0))
        return start <= named.offset < end

    def resubmit(batch: list[_Read]) -> None:
        for read in batch:
            if read_again(read):
                result.copies_skipped += 1
                continue
            records, refused = read_message(read.value)
            result.refused += len({r.record_index for r in refused})
            original = f"{topic}/{read.partition}/{read.offset}"
            if refused and topic != live_topic:
                _resubmit_refused(out, read, refused, original, shards)
            if not records:
                continue
            result.records += len(records)
            if topic == live_topic:
                # Its original's partition: the member that lands that partition lands the
                # copy, after or before the original, never at the same time.
                if not refused:  # as it was, byte for byte
                    out.send(read.partition, read.key, read.value, original)
                    continue
                for start in range(0, len(records), RECORDS_PER_MESSAGE):
                    chunk = records[start : start + RECORDS_PER_MESSAGE]
                    out.send(read.partition, read.key, encode_batch(chunk), original)
                continue
            # From another topic: one message per shard of the records' identities, keyed by
            # it as the collector keys its messages, so each record goes where its live copies
            # go, whatever agency it names.
            for shard, chunk in by_shard(records, shards, RECORDS_PER_MESSAGE):
                out.send(None, shard_key(shard), encode_batch(chunk), original)
        out.flush()

    try:
        result.messages = _read(bootstrap, topic, from_offset, from_time, resubmit, progress,
                                on_ranges=spans.update, idle_seconds=idle_seconds)  # fmt: skip
    finally:
        out.close()
    return result


def _resubmit_refused(
    out: _Resubmitter, read: _Read, refused: list[Rejection], original: str, shards: int
) -> None:
    """Re-submit the records of `read` that the contract refuses, for the group to refuse
    again and record under `original` (pipeline.copies). An unreadable
    message goes as it was; refused records go as JSON arrays, by the shard of the identity they
    name (a newer release may accept one: it then lands where its other copies land), with
    their indexes in the original."""
    indexes = sorted({r.record_index for r in refused})
    if indexes == [-1]:  # the message as a whole: not JSON, say
        out.send(None, shard_key(0), read.value, original)
        return
    items = json_read.loads(read.value, items=True)  # read_message read it: it parses
    items = items if isinstance(items, list) else [items]
    named = [items[i] if isinstance(items[i], dict) else {} for i in indexes]
    keys = [shard_of(str(n.get("gateway_id", "")), str(n.get("record_id", "")), shards)
            for n in named]  # fmt: skip
    for shard, chunk in cut_by_shard(indexes, keys, RECORDS_PER_MESSAGE):
        # The standard library's writer: it writes back what json_read read (an integer beyond
        # 64 bits, `Infinity`), which the pipeline's reader takes again. An item with a lone
        # surrogate goes as its escaped JSON (json_read.Unencodable), refused again alone.
        value = ("[" + ",".join(_json_of(items[i]) for i in chunk) + "]").encode()
        out.send(None, shard_key(shard), value, original, chunk)


def _json_of(item: Any) -> str:
    if isinstance(item, json_read.Unencodable):
        return item.payload
    try:
        return json.dumps(item, ensure_ascii=False)
    except RecursionError:
        # Nested deeper than the writer goes: sent as a string, which is refused again alone
        # with its index (found in review: a traceback on every replay).
        return json.dumps(UNENCODABLE)


def replay_dead_letters(
    bootstrap: str,
    dlq_topic: str,
    live_topic: str,
    *,
    from_offset: int | None = None,
    shards: int = 4,
    progress: Progress | None = None,
    idle_seconds: float = IDLE_SECONDS,
) -> ReplayResult:
    """Each dead letter's payload is read again by today's contract: what now passes is
    re-submitted (and lands once, however often this runs); what still fails stays in the DLQ
    topic. A registry fix needs no re-submission: refusals are the contract's alone."""
    result = ReplayResult()
    out = _Resubmitter(bootstrap, live_topic, result, shards)
    originals = _Originals(bootstrap, idle_seconds)
    # A record refused for three fields has three letters with one payload, and a copy the
    # pipeline refused again (an older release still running, say) has a letter of its own: the
    # record is re-submitted and counted once a run, or each run would double the letters. The
    # identities seen are kept for the run, up to SEEN_LIMIT (dead letters are the exception).
    # A record re-submitted once is not again (its letters, one per refused field, are many);
    # a letter still refused is skipped only when the same letter comes again, so a later
    # letter of the record, which passes now, is not lost behind an earlier one still refused
    # (found in review: which came first decided whether the record came back).
    passed: set[tuple[str, ...]] = set()
    refused_seen: set[tuple[str, ...]] = set()

    def lost(place: str, why: str) -> None:
        result.lost += 1
        if len(result.lost_named) < LOST_NAMED:
            result.lost_named.append(f"{place}: {why}")

    def resubmit(batch: list[_Read]) -> None:
        # Per original (where the letter came from): a copy's header names exactly where its
        # records were refused. The copies go to their identity's shard, not to the letter's
        # partition: the refused record never landed, and a valid copy a gateway sent since is
        # in its shard's partition, whose member must be the one to land both.
        # With each record its index in the original, which the copy's headers list: a refusal
        # of the copy is recorded at the original's place and index (pipeline.copies).
        passing: dict[str, list[tuple[int, UsageRecord]]] = defaultdict(list)
        for read in batch:
            try:
                letter = orjson.loads(read.value)
                payload = str(letter["payload"]).encode()
                source = str(letter.get("source_topic", ""))
                partition, offset = int(letter["source_partition"]), int(letter["source_offset"])
                index = int(letter.get("record_index", -1))
                cut = letter.get("payload_cut")
                again = letter.get("dead_letter_copy") is True
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                result.refused += 1
                continue
            if again:
                # A copy an earlier run re-submitted, refused again: its records' first letter
                # is what a run re-submits (consumer._record_rejections).
                result.copies_skipped += 1
                continue
            if not isinstance(cut, bool):
                # Written before letters said so: a whole message's payload this long was
                # almost surely cut. Harmless if not: what is read at its place is taken only
                # if it starts as the payload, i.e. it is the same message.
                cut = index == -1 and len(payload) >= CLIP_BYTES
            identity = _identity(payload) or (source, str(partition), str(offset), str(index))
            letter_key = (*identity, hashlib.blake2b(payload, digest_size=16).hexdigest())
            if identity in passed or letter_key in refused_seen:
                continue
            if len(passed) + len(refused_seen) >= SEEN_LIMIT:
                passed.clear()
                refused_seen.clear()
            if cut:
                place = f"{source}/{partition}/{offset}"
                whole = originals.refused_again(source, partition, offset, index, payload)
                if isinstance(whole, str):  # why it cannot be
                    refused_seen.add(letter_key)  # its other letters are not counted again
                    lost(place, whole)
                    continue
                payload = whole
            records, refused = read_message(payload)
            if records:
                passed.add(identity)
            else:
                refused_seen.add(letter_key)
            refused_at = {r.record_index for r in refused}
            result.refused += len(refused_at)
            passing[f"{source}/{partition}/{offset}"].extend(
                zip(_indexes_of(index, len(records), refused_at), records, strict=True)
            )
        for original, placed in passing.items():
            result.records += len(placed)
            keys = [shard_of(r.gateway_id, r.record_id, shards) for _, r in placed]
            for shard, chunk in cut_by_shard(placed, keys, RECORDS_PER_MESSAGE):
                out.send(None, shard_key(shard), encode_batch([r for _, r in chunk]), original,
                         [i for i, _ in chunk], via_dead_letter=True)  # fmt: skip
        out.flush()

    try:
        result.messages = _read(bootstrap, dlq_topic, from_offset, None, resubmit, progress,
                                idle_seconds=idle_seconds)  # fmt: skip
    finally:
        originals.close()
        out.close()
    return result


class _Originals:
    """What cut dead letters refused, read again at their places (few: a consumer made when
    the first is met)."""

    def __init__(self, bootstrap: str, idle_seconds: float) -> None:
        self._bootstrap, self._idle_seconds = bootstrap, idle_seconds
        self._consumer: KafkaConsumer | None = None

    def refused_again(
        self, topic: str, partition: int, offset: int, index: int, payload: bytes
    ) -> bytes | str:
        """The message a letter refused whole (`index` -1), or its record `index` as JSON,
        read at topic/partition/offset; or why it cannot be. What is read there must start
        as the letter's payload: a topic deleted and created again holds other messages at
        the same places, and the letter of a replay's copy from another topic names the copy's
        original there, which is another message."""
        value = self._message(topic, partition, offset)
        if isinstance(value, str):
            return value
        if index < 0:
            found = value
            written = clip(value)
        else:
            try:
                items = json_read.loads(value, items=True)
            except json_read.JSONError:
                return "the message there is not the one refused (it is not JSON)"
            items = items if isinstance(items, list) else [items]
            if index >= len(items):
                return f"the message there has no record {index}"
            item = items[index]
            found = _json_of(item).encode()
            written = (clip(item.payload.encode()) if isinstance(item, json_read.Unencodable)
                       else record_payload(item)[0])  # fmt: skip
        if written.encode() != payload:
            # Or a replay's copy of records from another topic was refused: its letter names
            # their original there, a message of its own (replaying that topic re-reads it).
            return (f"the message there is not the one refused (replay {topic} if the letter "
                    "is of a copy from it; else the topic was created again)")  # fmt: skip
        return found

    def _message(self, topic: str, partition: int, offset: int) -> bytes | str:
        # The letter is the dead-letter topic's text: its place is checked before it is asked for.
        if not TOPIC_NAME.fullmatch(topic):
            return "the letter names no topic"
        if self._consumer is None:
            # Not creating a topic by asking for it (a broker may): a missing one is news.
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._bootstrap.split(","), enable_auto_commit=False,
                group_id=None, client_id="tracker-replay", auto_offset_reset="earliest",
                allow_auto_create_topics=False,
            )  # fmt: skip
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(topic)
        if not partitions or partition not in partitions:
            return f"{topic} has no partition {partition} (deleted?)"
        tp = TopicPartition(topic, partition)
        begins, ends = consumer.beginning_offsets([tp]), consumer.end_offsets([tp])
        if offset < begins[tp]:
            return (f"deleted by {topic}'s retention (partition {partition} starts at offset "
                    f"{begins[tp]} now)")  # fmt: skip
        if offset >= ends[tp]:
            return f"{topic}/{partition} ends before it (at {ends[tp]}): created again?"
        consumer.assign([tp])
        consumer.seek(tp, offset)
        moved = time.monotonic()
        while time.monotonic() - moved <= self._idle_seconds:
            for message in consumer.poll(timeout_ms=1000, max_records=1).get(tp, []):
                if message.offset == offset:
                    return bytes(message.value or b"")
                return "deleted by retention while it was read"
            if consumer.position(tp) > offset:  # no message there (a transaction's marker)
                return "no message at that offset"
        raise ReplayError(
            f"nothing read from {topic}/{partition} for {self._idle_seconds:.0f} s at offset "
            f"{offset}: is Kafka at {self._bootstrap} reachable? Copies sent so far are "
            "acknowledged; running the replay again is safe"
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)


def _indexes_of(letter_index: int, passed: int, refused: set[int]) -> list[int]:
    """The original's indexes of the records that passed, in order: a letter of one record
    holds record `letter_index`; a letter of a whole message (-1) holds them all, each either
    passed (in order) or refused (read_message)."""
    if letter_index >= 0:
        return [letter_index] * passed  # one record, or none
    taken = [i for i in range(passed + len(refused - {-1})) if i not in refused]
    return taken[:passed]


def _identity(payload: bytes) -> tuple[str, ...] | None:
    """A dead letter's record as (gateway_id, record_id), if its payload names one."""
    try:
        item = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(item, dict):
        gateway, record = item.get("gateway_id"), item.get("record_id")
        if isinstance(gateway, str) and isinstance(record, str):
            return ("record", gateway, record)
    return None


Outcome = Literal["landed", "no members", "timed out"]


def wait_landed(
    bootstrap: str,
    topic: str,
    group: str,
    ends: dict[int, int],
    *,
    timeout_seconds: float,
    progress: Progress | None = None,
    interval: float = 1.0,
) -> Outcome:
    """Until `group`'s committed offsets on `topic` reach `ends` (every copy landed or found
    landed already), the group has no member left to land them, or the time is up."""
    if not ends:
        return "landed"
    parts = [TopicPartition(topic, p) for p in sorted(ends)]
    deadline = time.monotonic() + timeout_seconds
    total: int | None = None
    admin: KafkaAdminClient | None = None
    try:
        while True:
            try:
                # A new client after a failure: a client keeps the group's coordinator it
                # found first, which a restarted or re-elected broker may no longer be.
                admin = admin or KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                                                  client_id="tracker-replay")  # fmt: skip
                committed = admin.list_group_offsets({group: parts}).get(group, {})
                members = _has_members(admin, group)
            except RetriableError as exc:  # the broker restarting, the coordinator moving
                if admin is not None:
                    admin.close()
                    admin = None
                if time.monotonic() >= deadline:
                    raise ReplayError(f"Kafka did not answer for group {group!r}: {exc}") from exc
                time.sleep(interval)
                continue
            done = {tp.partition: meta.offset for tp, meta in committed.items()
                    if meta is not None and meta.offset >= 0}  # fmt: skip
            remaining = sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
            total = remaining if total is None else total
            if progress:
                progress(total - min(remaining, total), total)
            if remaining == 0:
                return "landed"
            if not members:
                return "no members"
            if time.monotonic() >= deadline:
                return "timed out"
            time.sleep(interval)
    finally:
        if admin is not None:
            admin.close()


def _has_members(admin: KafkaAdminClient, group: str) -> bool:
    described = admin.describe_groups([group]).get(group) or {}
    if described.get("error"):  # reported in the answer, not raised: ask again
        raise _GroupUnreadable(str(described["error"]))
    return bool(described.get("members"))


class _GroupUnreadable(RetriableError):  # type: ignore[misc]
    """describe_groups answered with an error for the group (a coordinator loading, say)."""
