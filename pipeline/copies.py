"""What a copy re-submitted by `tracker replay` or `tracker dlq replay` says of its original.

Every copy carries `tracker-copy-of: topic/partition/offset`, the message it was made from. A
replay from another topic also re-submits the records the contract refuses there, so that the
group dead-letters and records them like any refusal (before, they were only counted in the
command's output, and a store rebuilt by replays never got its `usage_rejects` back). Those
copies also carry `tracker-copy-indexes`, the refused records' places in the original message,
and the pipeline records each refusal under the original's topic, partition, offset and index:
what an auditor looks up, and what makes a repeated replay add no second row
(`Writer.write_rejections` skips a source message already recorded).

A copy `tracker dlq replay` makes also carries `tracker-copy-via: dead-letter`: its records were
refused where it names (most often in the live topic itself), so a refusal of one again is
recorded there too. A live-topic copy of `tracker replay` is re-encoded from records that
passed, and a refusal of one is recorded where it was read. Recorded where read, a dead-letter
copy refused again (a fix not made yet) got a letter of its own place, which the next dlq replay
re-submitted beside the original's: the letters and usage_rejects rows doubled at each run
(found in review, 2026-11-26).

The headers are the topic's text: they are parsed strictly and bounded, and one that does not
parse leaves the message its own source. They move only where a refusal is recorded, never
what lands: a forged one (the topic's writers are the collector and these commands) could file
a refusal under another place, and keep that place's own refusals out as "already recorded".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

COPY_HEADER = "tracker-copy-of"
INDEXES_HEADER = "tracker-copy-indexes"
VIA_HEADER = "tracker-copy-via"
VIA_DEAD_LETTER = b"dead-letter"
# A header is the topic's text, not the replay's word: bounded before it is read. 500 records
# a message at most are re-submitted (replay.RECORDS_PER_MESSAGE), each index a few digits.
_MAX_HEADER_BYTES = 8192
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name
_NUMBER = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() admits '²'
# usage_rejects keeps a partition and a record index as Int32: a larger one would fail the
# insert, which is retried without end (found in review: one forged header stalled a member).
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Original:
    topic: str
    partition: int
    offset: int
    indexes: tuple[int, ...] | None = None  # the copy's record i was the original's indexes[i]
    via_dead_letter: bool = False  # made by `tracker dlq replay` from a letter of the original

    def index_of(self, index: int) -> int:
        """The original's index of the copy's record `index` (-1, the whole message, stays)."""
        if self.indexes is not None and 0 <= index < len(self.indexes):
            return self.indexes[index]
        return index

    def places(self, indexes: list[int]) -> bool:
        """Whether the indexes header places each of these records of the copy (a header
        listing fewer does not describe this copy: it is then its own source)."""
        return self.indexes is None or all(i < len(self.indexes) for i in indexes)


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name and isinstance(value, bytes) and len(value) <= _MAX_HEADER_BYTES:
            return value
    return None


def original(headers: list[tuple[str, Any]] | None) -> Original | None:
    """The original a copy names, or None (not a copy, or a header that does not parse: then
    the message is its own source, as any other)."""
    named = _header(headers, COPY_HEADER)
    if named is None:
        return None
    topic, _, place = named.decode(errors="replace").partition("/")
    partition, _, offset = place.partition("/")
    numbers = _NUMBER.fullmatch(partition) and _NUMBER.fullmatch(offset)
    if not (TOPIC_NAME.fullmatch(topic) and numbers):
        return None
    if int(partition) > _INT32_MAX:
        return None
    indexes: tuple[int, ...] | None = None
    listed = _header(headers, INDEXES_HEADER)
    if listed is not None:
        parts = listed.decode(errors="replace").split(",")
        if not all(_NUMBER.fullmatch(p) and int(p) <= _INT32_MAX for p in parts):
            return None
        indexes = tuple(int(p) for p in parts)
    via = _header(headers, VIA_HEADER) == VIA_DEAD_LETTER
    return Original(topic, int(partition), int(offset), indexes, via)


def headers_for(
    name: str, indexes: list[int] | None = None, *, via_dead_letter: bool = False
) -> list[tuple[str, bytes]]:
    """A copy's headers: its original's name, for records of it their indexes there, and
    whether the copy was made from its dead letters."""
    out = [(COPY_HEADER, name.encode())]
    if indexes is not None:
        out.append((INDEXES_HEADER, ",".join(map(str, indexes)).encode()))
    if via_dead_letter:
        out.append((VIA_HEADER, VIA_DEAD_LETTER))
    return out
