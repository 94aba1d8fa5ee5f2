"""The consumer loop (`tracker pipeline`): Kafka `usage.v1` -> processor -> writer -> commit.

Offsets are committed only after ClickHouse returned from the insert, so a crash anywhere before
that redelivers the batch, and the writer's idempotent landing makes redelivery harmless.
Invalid records go to the dead-letter topic and the `usage_rejects` table before the commit;
a ClickHouse failure stops progress (retried with backoff) and never dead-letters. A stop asked
for while ClickHouse is away ends the wait: the batch in hand is left uncommitted, as a crash
would leave it, and read again at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_never, wait_exponential

from pipeline.copies import Original, original
from pipeline.gc_pacing import CollectionPacer
from pipeline.metrics import PipelineMetrics
from pipeline.processor import CLIP_BYTES, COLUMNS, Processed, Processor, Rejection, clip
from pipeline.writer import REPAIR_LOOKBACK_NS, Writer

log = logging.getLogger(__name__)


_SOURCE_PARTITION = COLUMNS.index("source_partition")


# How long the lag figures of an outage wait for the broker: they are only figures, and the
# retry loop that asks for them must not stall on a broker that is away too. After one call
# times out, no other is made for that failure (a stop waited ~20 s for them otherwise).
_BROKER_ASK_MS = 2_000


class Stopped(Exception):
    """A stop was asked for while a write was waiting to be retried (ClickHouse or, for dead
    letters, Kafka away). Nothing of the batch in hand is committed."""


@dataclass
class Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    # Each refusal with the partition and offset it was read at, and for a replay's copy of
    # records refused elsewhere, the original it names (pipeline.copies), under which it is
    # recorded.
    rejections: list[tuple[Rejection, int, int, Original | None]] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read
    started: float = field(default_factory=time.monotonic)
    counts: dict[TopicPartition, int] = field(default_factory=dict)  # messages per partition

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def empty(self) -> bool:
        return not self.offsets

    def starts(self) -> dict[TopicPartition, int]:
        """Where the batch began, per partition: its messages are not landed until it is."""
        return {tp: off - self.counts.get(tp, 0) for tp, off in self.offsets.items()}

    def keep_only(self, held: set[TopicPartition]) -> set[TopicPartition]:
        """Drop what came from partitions not in `held`; returns the partitions dropped."""
        gone = {tp for tp in self.offsets if tp not in held}
        if gone:
            numbers = {tp.partition for tp in gone}  # one topic: a row carries its partition
            self.rows = [r for r in self.rows if r[_SOURCE_PARTITION] not in numbers]
            self.rejections = [x for x in self.rejections if x[1] not in numbers]
            for tp in gone:
                del self.offsets[tp]
                self.counts.pop(tp, None)
        return gone


@dataclass
class Stats:
    messages: int = 0
    rows_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    rejoins: int = 0
    partitions: int = 0  # held now


class AssignmentWatch:
    """Says when a member that has held no partition for too long should rejoin its group.

    kafka-python's group leader assigns from its own metadata, and a leader that lacked the
    topic's partitions at that moment assigns nothing to anyone. Usually the next metadata
    refresh notices and the group rebalances, but a CI run after a kill -9 sat with nothing
    assigned for 240 s with refreshes every 5 s, and the rebalance such a leader starts can
    leave it out of the group for good (PipelineConsumer._subscribe). A member that stays
    unassigned rejoins, after `first_after` seconds, then twice as long each time up to
    `longest`. The backoff keeps this cheap when being unassigned is legitimate: more members
    than partitions."""

    def __init__(self, first_after: float = 20.0, longest: float = 300.0) -> None:
        self.first_after = first_after
        self.longest = longest
        self._after = first_after
        self._since: float | None = None

    def observe(self, assigned: bool, now: float) -> bool:
        """Whether to rejoin now, given whether the member holds any partition at `now`."""
        if assigned:
            self._since, self._after = None, self.first_after
            return False
        if self._since is None:
            self._since = now
            return False
        if now - self._since < self._after:
            return False
        self._since, self._after = now, min(self._after * 2, self.longest)
        return True


class PipelineConsumer:
    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        dlq_topic: str,
        group_id: str,
        processor: Processor,
        writer: Writer,
        batch_max_rows: int = 50_000,
        batch_max_seconds: float = 1.0,
        metrics: PipelineMetrics | None = None,
        session_timeout_ms: int = 10_000,
        assignment_watch: AssignmentWatch | None = None,
    ) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.processor = processor
        self.writer = writer
        self.batch_max_rows = batch_max_rows
        self.batch_max_seconds = batch_max_seconds
        self.stats = Stats()
        self.metrics = metrics or PipelineMetrics()
        self.stopping = threading.Event()
        self._halted = False
        self._rebalanced = threading.Event()
        self._batch = Batch()
        # Offsets of landed batches whose commit met a rebalance: committed with the next
        # commit, for the partitions this member still holds then.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Memory: what is fetched but not yet landed is held here. A message is ~200 KB
            # (500 records); 200 of them are two default batches, enough to keep the writer
            # busy, and the fetch caps keep a backlog from being pulled in all at once.
            max_poll_records=200,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A ClickHouse outage stalls the loop while writes are retried; stay in the group
            # for ten minutes of it before the batch is handed to another member.
            max_poll_interval_ms=600_000,
            # How long a crashed member holds its partitions before the group reassigns them.
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(500, session_timeout_ms // 4),
            client_id="tracker-pipeline",
            # A leader that assigned from metadata lacking the topic's partitions usually
            # notices at its next refresh: 5 s instead of the default 5 minutes. When it does
            # not, AssignmentWatch makes the member rejoin.
            metadata_max_age_ms=5_000,
        )
        self._dlq = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True
        )
        outer = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
            # kafka-python runs these on its network thread, where no blocking consumer call
            # (commit) may be made: they only raise flags that the loop acts on after poll().
            def on_partitions_revoked(self, revoked: Any) -> None:
                outer._rebalanced.set()
                outer._held(0)

            def on_partitions_assigned(self, assigned: Any) -> None:
                outer._rebalanced.set()
                outer._held(len(assigned))
                log.info("assigned %s", sorted(str(tp) for tp in assigned))

        # The topic exists with its partitions before this (tracker.topics.ensure_topics).
        self._listener = _Listener()
        self._watch = assignment_watch or AssignmentWatch()
        self._subscribe()

    def _subscribe(self) -> None:
        """Subscribe, then read the topic's partitions before the first poll joins the group.

        Without the read, the first poll sent JoinGroup before the consumer's first metadata
        answer, and a leader elected then assigned from metadata without the topic: nothing to
        anyone. Its next refresh made it start a rebalance that, in kafka-python 3.0.12, it never
        finished: its own assignment, made while the join was in flight, cleared the only reason
        it had to rejoin, so later polls stopped awaiting the join, the member sent no
        heartbeat and was dropped from the group, and it held nothing until AssignmentWatch made
        it rejoin (reproduced in 4 of 35 starts of two members on a new topic; 0 of 40 with the
        read; the CI failures of the rebalance fault test). A read that fails leaves that
        recovery to AssignmentWatch."""
        self._consumer.subscribe([self.topic], listener=self._listener)
        try:
            self._consumer.partitions_for_topic(self.topic)
        except KafkaError as exc:
            log.warning("cannot read %s's partitions before joining (%s)", self.topic, exc)

    def run(self) -> None:
        with CollectionPacer() as pacer:
            self._run(pacer)

    def _run(self, pacer: CollectionPacer) -> None:
        backoff = 0.5
        landed_before = 0
        try:
            while not self.stopping.is_set():
                # At the top of every turn, the turns that `continue` included.
                pacer.collect(landed=self.stats.batches != landed_before)
                landed_before = self.stats.batches
                try:
                    polled = self._consumer.poll(timeout_ms=200)
                except KafkaError as exc:
                    # The broker or the group's coordinator is unreachable (a restart, a
                    # network cut): kafka-python raises out of poll(). Keep the batch in hand
                    # and the membership, and try again; the writer is not involved.
                    log.warning("Kafka unreachable (%s); retrying in %.1f s", exc, backoff)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.5
                if self._rebalanced.is_set():
                    self._after_rebalance()
                if self._watch.observe(bool(self._consumer.assignment()), time.monotonic()):
                    self._rejoin()
                for tp, messages in polled.items():
                    for message in messages:
                        self._add(tp, message.offset, message.value, message.headers)
                        # Row bound per message, not per poll: a poll may return thousands.
                        if len(self._batch.rows) >= self.batch_max_rows and not self._halted:
                            self.flush()
                            # Collected now, before the rest of the poll is added: a young
                            # collection scans every row alive, and at the top of the next
                            # turn that was up to a poll's worth (~10% of a member's CPU).
                            pacer.collect(landed=True)
                            landed_before = self.stats.batches
                if self._due() and not self._halted:
                    self.flush()
            if not self._halted:
                self.flush()
        except Stopped:
            # Waiting out the outage would hold a SIGTERM for as long as it lasts (found in
            # review); leaving uncommitted is safe: the writer lands redelivered records once,
            # and a batch half-landed is finished by the next start's repair.
            self._halted = True
            log.warning(
                "stopped while a write was failing: the records in hand were not committed "
                "and are read again at the next start"
            )
        finally:
            self._consumer.close(autocommit=False)
            self._dlq.close(timeout=10)

    def _after_rebalance(self) -> None:
        """Land the part of the batch in hand that came from partitions this member still holds
        (their position runs on, so dropping it would lose it), with any offsets a rebalance
        deferred. The rest is dropped, uncommitted: another member now owns those partitions
        and reads them again from the last commit. Landing it here too would race that member's
        landing of the same records, and across processes the two key checks could both pass.
        Then finish any batch a dead member left half-landed, so the key check sees those
        records before they are read again."""
        self._rebalanced.clear()
        self.metrics.lag.clear()  # no stale figure for a partition another member now holds
        if not self._halted:
            gone = self._batch.keep_only(self._consumer.assignment())
            if gone:
                log.info(
                    "left the batch in hand's records of %s to their new owner",
                    sorted(str(tp) for tp in gone),
                )
            self.flush()
            if self._uncommitted:
                self._commit({})
        # Retried like a landing: an outage met at a rebalance waits for ClickHouse instead of
        # ending the process.
        self._retrying(self._repair_failed)(self.writer.repair, lookback_ns=REPAIR_LOOKBACK_NS)

    def _rejoin(self) -> None:
        """Leave the group and join it again (AssignmentWatch), if the topic has partitions."""
        try:
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
        except KafkaError as exc:  # the broker is away: poll() reports it and retries
            log.warning("cannot read %s's partitions (%s); not rejoining yet", self.topic, exc)
            return
        if not partitions:
            return
        log.warning(
            "no partition of %s (%d partitions) assigned to this member for a while; "
            "rejoining the group", self.topic, len(partitions),
        )  # fmt: skip
        self._consumer.unsubscribe()
        self._subscribe()
        self.stats.rejoins += 1
        self.metrics.rejoins.inc()

    def _held(self, partitions: int) -> None:
        self.stats.partitions = partitions
        self.metrics.partitions.set(partitions)

    def stop(self) -> None:
        """Finish the batch in hand (land, then commit) and leave the group."""
        self.stopping.set()

    def halt(self) -> None:
        """Leave at once, dropping the batch in hand uncommitted: what a crash looks like to
        the consumer group (its partitions are re-read by another member from the last commit).
        """
        self._halted = True
        self.stopping.set()

    def _add(
        self, tp: TopicPartition, offset: int, value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:  # fmt: skip
        try:
            processed = self.processor.process_message(value or b"", tp.partition, offset)
        except Exception as exc:  # a poison message must never stop its partition
            log.exception("processor failed on %s@%d", tp, offset)
            reason = f"processor error: {type(exc).__name__}: {exc}"
            whole = value or b""
            # Dead-lettered whole: a collector's 500-record message is past CLIP_BYTES, and
            # its letter says so, for `tracker dlq replay` to re-read it from here.
            refused = Rejection(-1, "", "message", reason, clip(whole), len(whole) > CLIP_BYTES)
            processed = Processed(rejections=[refused])
        self._batch.rows.extend(processed.rows)
        if processed.rejections:
            named = original(headers)
            # A replay's copy from the live topic was re-encoded from records that passed: a
            # refusal of one is this release's own, recorded where it was read. A dead-letter
            # copy's records were refused at the original: recorded there again (pipeline.copies).
            if named is not None and (
                (named.topic == self.topic and not named.via_dead_letter)
                or not named.places([r.record_index for r in processed.rejections])
            ):
                named = None
            self._batch.rejections.extend(
                (r, tp.partition, offset, named) for r in processed.rejections
            )
        self._batch.offsets[tp] = offset + 1
        self._batch.counts[tp] = self._batch.counts.get(tp, 0) + 1

    def _due(self) -> bool:
        batch = self._batch
        if batch.empty():
            return False
        return (
            len(batch.rows) >= self.batch_max_rows
            or time.monotonic() - batch.started >= self.batch_max_seconds
        )

    def flush(self) -> None:
        batch, self._batch = self._batch, Batch()
        if batch.empty():
            return
        retry = self._retrying(lambda state: self._write_failed(state, batch))
        started = time.monotonic()
        result = retry(self.writer.write, batch.rows)
        letters = self._record_rejections(batch.rejections, retry)
        # ClickHouse's time only: the dead letters' sends to Kafka below are not (found in
        # review: a broker slow to take them showed as slow ClickHouse writes).
        self.metrics.write_seconds.observe(time.monotonic() - started)
        self._send_dead_letters(letters, batch)
        self._commit(batch.offsets)
        m = self.metrics
        m.messages.inc(batch.messages)
        m.records.labels("landed").inc(result.inserted)
        m.records.labels("duplicate").inc(result.duplicates)
        # Records, not refusals: a record with three bad fields has three rejections.
        refused = len({(p, o, r.record_index) for r, p, o, _ in batch.rejections})
        m.records.labels("rejected").inc(refused)
        m.batches.inc()
        m.batch_rows.observe(len(batch.rows))
        self._update_lag(batch.offsets)
        self.stats.messages += batch.messages
        self.stats.rows_written += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += refused
        self.stats.batches += 1
        # The retry above (tenacity) sits in a reference cycle and its callback holds `batch`:
        # without this the landed rows lived on until the next cyclic collection, which then
        # had to free them all (bench/RESULTS.md, 2026-11-26).
        batch.rows.clear()

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit after landing, with any offsets left over from a commit that met a rebalance.

        While the broker is away the commit is retried. While the group rebalances it is not:
        the rebalance completes only inside poll(), so waiting here can hold the whole group
        (the rejoin fault test stalled 90-120 s this way in several runs). Those offsets are
        kept and committed with the next commit if this member still holds the partitions; if
        another member holds them it re-reads from the last commit and drops what landed here
        as duplicates."""
        pending = dict(self._uncommitted)
        for tp, off in offsets.items():
            pending[tp] = max(off, pending.get(tp, off))
        # Only partitions held now: the broker takes a commit for any partition from a current
        # member, and one owned by another member is its to commit.
        held = self._consumer.assignment()
        pending = {tp: off for tp, off in pending.items() if tp in held}
        self._uncommitted = {}
        if not pending:
            return
        deadline = time.monotonic() + 120
        delay = 0.5
        while True:
            try:
                self._consumer.commit(
                    {tp: OffsetAndMetadata(off, None, -1) for tp, off in pending.items()}
                )
                return
            except (CommitFailedError, RebalanceInProgressError) as exc:
                log.info("offset commit deferred by a rebalance (%s)", type(exc).__name__)
                self._uncommitted = pending
                return
            except KafkaError as exc:
                if time.monotonic() > deadline or self.stopping.is_set():
                    log.warning("offsets not committed (%s); the batch will be re-read", exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 10)

    def _retrying(self, on_failure: Callable[[RetryCallState], None]) -> Retrying:
        """ClickHouse writes, retried with backoff until they succeed or a stop is asked for."""
        return Retrying(
            retry=retry_if_exception_type((ClickHouseError, OSError)),
            wait=wait_exponential(multiplier=0.5, max=30),
            stop=stop_never,
            sleep=self._pause,
            before_sleep=on_failure,
            reraise=True,
        )

    def _pause(self, seconds: float) -> None:
        """The wait between two attempts, cut short by stop() or halt()."""
        if self.stopping.wait(seconds):
            raise Stopped

    def _repair_failed(self, state: RetryCallState) -> None:
        self.metrics.write_failures.inc()
        error = state.outcome.exception() if state.outcome else None
        log.warning("repair after a rebalance failed, retrying (attempt %d): %s",
                    state.attempt_number, error)  # fmt: skip

    def _write_failed(self, state: RetryCallState, batch: Batch) -> None:
        self.metrics.write_failures.inc()
        self._refresh_lag(batch)
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "ClickHouse write failed, retrying (attempt %d): %s", state.attempt_number, error
        )

    def _refresh_lag(self, batch: Batch) -> None:
        # The lag is otherwise set after a landing: during an outage it would go on showing
        # the lag from before it (found in review), for every held partition, not only those
        # in the batch in hand (a fault test caught the gauge at half the group's lag so).
        # Against the partitions' ends asked of the broker: this member fetches nothing
        # meanwhile, so its own idea of the end is old.
        if not self.stopping.is_set():  # leaving: no figure is worth waiting for
            held = list(self._consumer.assignment())
            unlanded, broker_answers = self._unlanded_from(held, batch)
            self._update_lag(unlanded, self._ends(held) if broker_answers else {})

    def _unlanded_from(
        self, held: list[TopicPartition], batch: Batch
    ) -> tuple[dict[TopicPartition, int], bool]:
        """Where each held partition's messages not yet landed begin: the batch in hand's start,
        else the group's committed offset (or a landed one whose commit a rebalance deferred),
        else the partition's first offset (nothing committed yet: read from the earliest).
        With whether the broker answered: once it does not, the rest keep their figures."""
        starts = batch.starts()
        found: dict[TopicPartition, int] = {tp: starts[tp] for tp in held if tp in starts}
        for tp in held:
            if tp in starts:
                continue
            if self.stopping.is_set():
                return found, False
            try:
                committed = self._consumer.committed(tp, timeout_ms=_BROKER_ASK_MS)
                if committed is None:
                    first = self._consumer.beginning_offsets([tp], timeout_ms=_BROKER_ASK_MS)
                    committed = first.get(tp)
            except KafkaError:  # the broker is away too: the other figures stay as they were
                return found, False
            if committed is not None:
                found[tp] = max(committed, self._uncommitted.get(tp, committed))
        return found, not self.stopping.is_set()

    def _ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            ends: dict[TopicPartition, int] = self._consumer.end_offsets(
                partitions, timeout_ms=_BROKER_ASK_MS
            )
            return ends
        except KafkaError:  # the broker is away too: the last known ends will do
            return {}

    def _update_lag(
        self, offsets: dict[TopicPartition, int], ends: dict[TopicPartition, int] | None = None
    ) -> None:
        held = self._consumer.assignment()
        for tp, position in offsets.items():
            if tp not in held:  # landed after a rebalance moved it; its new owner reports it
                continue
            end = (ends or {}).get(tp) or self._consumer.highwater(tp)
            if end is not None:
                self.metrics.lag.labels(str(tp.partition)).set(max(0, end - position))

    def _record_rejections(
        self, rejections: list[tuple[Rejection, int, int, Original | None]], retry: Retrying
    ) -> list[bytes]:
        """The batch's refusals into usage_rejects; their dead letters' bodies."""
        if not rejections:
            return []
        by_source: dict[tuple[str, int, int], list[Rejection]] = {}
        # A record refused elsewhere may come in copies from two replays run at once, read in
        # one batch: its refusals are taken from the first copy read (found in review: the
        # insert's check against stored rows let both in).
        first_copy: dict[tuple[str, int, int, int], tuple[int, int]] = {}
        # Refusals of copies `tracker dlq replay` made: their records' first letters are still
        # in the dead-letter topic, and the replay re-submits from those. These letters say so
        # and are not re-submitted again: their payload is the copy (a message refused whole
        # holds a part of the original, at the copy's indexes), and re-submitting them too
        # doubled the re-submissions at every run while a bug remained (found in review).
        again: set[tuple[str, int, int, int]] = set()
        for rejection, partition, offset, named in rejections:
            if named is None:
                by_source.setdefault((self.topic, partition, offset), []).append(rejection)
                continue
            source = (named.topic, named.partition, named.offset)
            index = named.index_of(rejection.record_index)
            if first_copy.setdefault((*source, index), (partition, offset)) != (partition, offset):
                continue
            if named.via_dead_letter:
                again.add((*source, index))
            by_source.setdefault(source, []).append(replace(rejection, record_index=index))
        retry(self.writer.write_rejections, by_source)
        bodies: list[bytes] = []
        for (topic, partition, offset), items in by_source.items():
            for r in items:
                body = {
                    "source_topic": topic,
                    "source_partition": partition,
                    "source_offset": offset,
                    "record_index": r.record_index,
                    "gateway_id": r.gateway_id,
                    "field": r.field,
                    "reason": r.reason,
                    "payload": r.payload,
                    # The payload is the start only: `tracker dlq replay` re-reads the message
                    # at the source place above (a letter without this was written before it
                    # was added).
                    "payload_cut": r.cut,
                }
                if (topic, partition, offset, r.record_index) in again:
                    body["dead_letter_copy"] = True
                bodies.append(orjson.dumps(body))
        return bodies

    def _send_dead_letters(self, bodies: list[bytes], batch: Batch) -> None:
        """Dead letters are already in usage_rejects; the topic copy feeds `tracker dlq replay`
        and is retried until the broker takes it (the commit waits for it). Each failure is
        logged and counted, and the lag refreshed, as for a ClickHouse write: the partition
        stalled here without a word, its lag gauge frozen (found in review). Only the letters
        not taken are sent again (every letter of the batch was, each time)."""
        if not bodies:
            return
        pending = list(bodies)  # emptied of each letter the broker takes
        for attempt in Retrying(
            retry=retry_if_exception_type(KafkaError),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_never,
            sleep=self._pause,
            before_sleep=lambda state: self._dead_letters_failed(state, batch, len(pending)),
            reraise=True,
        ):
            with attempt:
                failed: list[bytes] = []
                error: KafkaError | None = None
                sends = []
                for body in pending:
                    try:  # send() itself may refuse (no metadata yet, a full buffer)
                        sends.append((body, self._dlq.send(self.dlq_topic, value=body)))
                    except KafkaError as exc:
                        failed.append(body)
                        error = exc
                for body, future in sends:
                    try:
                        future.get(timeout=30)
                    except KafkaError as exc:
                        failed.append(body)
                        error = exc
                pending[:] = failed
                if error is not None:
                    raise error

    def _dead_letters_failed(self, state: RetryCallState, batch: Batch, unsent: int) -> None:
        self.metrics.dead_letter_failures.inc()
        self._refresh_lag(batch)
        error = state.outcome.exception() if state.outcome else None
        log.warning("%d dead letters not taken by %s, retrying (attempt %d): %s",
                    unsent, self.dlq_topic, state.attempt_number, error)  # fmt: skip
