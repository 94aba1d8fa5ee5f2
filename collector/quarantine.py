"""The spool's quarantine, read and re-sent once the cause is fixed (`tracker spool list` and
`tracker spool resend`).

The drain moves a message Kafka refused for good (a record over the topic's max.message.bytes,
or refused as invalid) to `<spool>/quarantine/<name>.value`, byte for byte, with `<name>.json`
saying why (collector.spool.Spool.quarantine). Once the limit is raised or the broker fixed,
`resend` sends each message again under its key, cut in halves while Kafka refuses it for its
size (collector.sink.send_in_parts), and deletes the pair only after Kafka acknowledged every
part. A message still refused is kept, with the reason. Sending again is always safe: the
pipeline lands a record once by its id, however often it is read.

It runs beside the collector: the drain only adds pairs to the folder, and a lock of the
folder's own keeps two resends apart.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.sink import KafkaSink, send_in_parts
from tracker.contract import SHARD_KEY_PREFIX, shard_key, shard_of

# A descriptor is a few hundred bytes; one far larger is not the drain's, and is not read whole.
_MAX_DESCRIPTOR_BYTES = 64 * 1024
_LOCK_NAME = "resend.lock"


class QuarantineError(RuntimeError):
    """The quarantine cannot be read or re-sent as asked (the message says what to do)."""


@dataclass(frozen=True)
class Quarantined:
    """One quarantined message: `<name>.value` and what its `<name>.json` says ({} if the
    descriptor is missing or unreadable: a crash between the two writes leaves that, and the
    spool then quarantines the same message again under another name)."""

    name: str
    value_path: Path
    about: dict[str, Any]
    size: int  # of the value, in bytes, when listed

    @property
    def descriptor_path(self) -> Path:
        return self.value_path.with_suffix(".json")

    @property
    def reason(self) -> str:
        return str(self.about.get("reason", "unknown (no descriptor)"))

    @property
    def records(self) -> int | None:
        records = self.about.get("records")
        return records if isinstance(records, int) else None


@dataclass(frozen=True)
class Outcome:
    """What became of one message: re-sent in `parts` parts (then deleted), or kept, with
    `refused` saying why; `parts` is then how many parts Kafka took before the refusal."""

    message: Quarantined
    parts: int
    refused: str | None = None


def quarantined(folder: Path) -> list[Quarantined]:
    """The quarantined messages in `folder`, oldest first (names start with the time)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.value")):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue  # re-sent and deleted since the folder was read
        found.append(Quarantined(path.stem, path, _descriptor(path.with_suffix(".json")), size))
    return found


def _descriptor(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_DESCRIPTOR_BYTES + 1)
        about = json.loads(data) if len(data) <= _MAX_DESCRIPTOR_BYTES else None
    except (OSError, ValueError):
        return {}
    return about if isinstance(about, dict) else {}


def select(found: list[Quarantined], names: list[str]) -> list[Quarantined]:
    """The messages named (with or without `.value`), all of them if none is named; a name
    not found is an error naming it and what there is."""
    if not names:
        return found
    by_name = {m.name: m for m in found}
    wanted = [n.removesuffix(".value").removesuffix(".json") for n in names]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        there = ", ".join(by_name) or "none"
        raise QuarantineError(f"not in the quarantine: {', '.join(unknown)} (there: {there})")
    return [by_name[n] for n in dict.fromkeys(wanted)]


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Held while re-sending: a second resend of the same folder is refused, not run twice.

    The folder must exist (OSError otherwise): only the drain makes it. Made here, a mistyped
    data directory was created, lock file and all, and reported empty (found in review)."""
    with (folder / _LOCK_NAME).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise QuarantineError(f"another resend of {folder} is running") from exc
        yield


def resend(
    messages: list[Quarantined],
    kafka: KafkaSink,
    *,
    shards: int,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Send each message again, oldest first, and delete each one Kafka took whole. Raises
    DeliveryFailed (collector.sink) when Kafka does not answer for a reason that says nothing
    against the message: it and those after it stay, for a later run."""
    outcomes = []
    for message in messages:
        value = message.value_path.read_bytes()
        parts, refused = send_in_parts(kafka, _key(message, value, shards), value)
        outcome = Outcome(message, parts, refused)
        if refused is None:
            _delete(message)
        outcomes.append(outcome)
        if progress:
            progress(outcome)
    return outcomes


def _key(message: Quarantined, value: bytes, shards: int) -> bytes:
    """The key it was spooled under (its shard: the partition that lands its records), else
    the shard of its first record's identity, as the collector cuts them (one shard a
    message), else shard 0 (a message with no records to read: the pipeline dead-letters
    it)."""
    key = message.about.get("key")
    if isinstance(key, str) and key.encode().startswith(SHARD_KEY_PREFIX):
        return key.encode()
    try:
        first = orjson.loads(value)[0]
        return shard_key(shard_of(str(first["gateway_id"]), str(first["record_id"]), shards))
    except (orjson.JSONDecodeError, TypeError, LookupError):
        return shard_key(0)


def _delete(message: Quarantined) -> None:
    """The value first: a crash before the descriptor goes leaves a descriptor alone, which
    lists nothing and is removed by the next resend (`orphans`)."""
    message.value_path.unlink(missing_ok=True)
    message.descriptor_path.unlink(missing_ok=True)
    _sync(message.value_path.parent)


def orphans(folder: Path) -> list[Path]:
    """Descriptors whose message is gone (re-sent by a run that stopped before deleting them)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.json")) if not p.with_suffix(".value").exists()]


def remove_orphans(folder: Path) -> int:
    found = orphans(folder)
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        _sync(folder)
    return len(found)


def _sync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
