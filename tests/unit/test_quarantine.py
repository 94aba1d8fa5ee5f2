"""Reading the spool's quarantine: the messages in time order with what their descriptors say,
the names a resend is given, its lock, and the key a message goes under (no broker: the
re-sending itself is tested against one in tests/integration/test_spool_resend.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from collector.quarantine import (
    QuarantineError,
    _key,
    locked,
    orphans,
    quarantined,
    remove_orphans,
    select,
)
from collector.spool import Spool
from tracker.contract import shard_key, shard_of


def quarantine_two(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"shard:3", b'[{"record_id":"a"}]'), (b"shard:1", b"not json")])
    for segment, offset, key, value in list(spool.entries()):
        spool.quarantine(segment, offset, key, value, {"reason": f"refused {key!r}", "records": 1})
    return spool


def test_quarantined_messages_are_listed_oldest_first_with_their_descriptors(
    tmp_path: Path,
) -> None:
    spool = quarantine_two(tmp_path)
    found = quarantined(spool.quarantine_dir)
    assert [m.value_path.read_bytes() for m in found] == [b'[{"record_id":"a"}]', b"not json"]
    assert [m.about["key"] for m in found] == ["shard:3", "shard:1"]
    assert [m.reason for m in found] == ["refused b'shard:3'", "refused b'shard:1'"]
    assert found[0].records == 1
    # A descriptor lost (a crash between the two writes) or unreadable: listed, reason unknown.
    found[1].descriptor_path.write_text("{half")
    found[0].descriptor_path.unlink()
    again = quarantined(spool.quarantine_dir)
    assert [(m.about, m.reason, m.records) for m in again] == [
        ({}, "unknown (no descriptor)", None)
    ] * 2
    assert quarantined(tmp_path / "nowhere") == []


def test_select_takes_names_with_or_without_suffix_and_refuses_unknown_ones(
    tmp_path: Path,
) -> None:
    found = quarantined(quarantine_two(tmp_path).quarantine_dir)
    first, second = found[0].name, found[1].name
    assert select(found, []) == found
    assert select(found, [f"{second}.value", first, second]) == [found[1], found[0]]
    with pytest.raises(QuarantineError, match=f"not in the quarantine: nope \\(there: {first}, "):
        select(found, ["nope", first])


def test_a_second_resend_of_one_folder_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "quarantine").mkdir()  # the drain makes it; a resend never does
    with (
        locked(tmp_path / "quarantine"),
        pytest.raises(QuarantineError, match=r"another resend of .* is running"),
        locked(tmp_path / "quarantine"),
    ):
        pass
    with locked(tmp_path / "quarantine"):  # released: a later run may go
        pass
    assert quarantined(tmp_path / "quarantine") == []  # the lock file is no message


def test_descriptors_whose_message_is_gone_are_removed(tmp_path: Path) -> None:
    spool = quarantine_two(tmp_path)
    first = quarantined(spool.quarantine_dir)[0]
    first.value_path.unlink()
    assert orphans(spool.quarantine_dir) == [first.descriptor_path]
    assert remove_orphans(spool.quarantine_dir) == 1
    assert not first.descriptor_path.exists()
    assert len(quarantined(spool.quarantine_dir)) == 1 and orphans(spool.quarantine_dir) == []


def test_a_message_goes_under_its_spooled_key_else_the_shard_of_its_first_record(
    tmp_path: Path,
) -> None:
    found = quarantined(quarantine_two(tmp_path).quarantine_dir)
    assert _key(found[0], b"[]", 4) == b"shard:3"
    without = replace(found[0], about={"key": "in-sbi"})
    records = orjson.dumps([{"gateway_id": "gw", "record_id": "r9"}, {"record_id": "x"}])
    assert _key(without, records, 4) == shard_key(shard_of("gw", "r9", 4))
    for unreadable in (b"not json", b"[]", b'{"a": 1}', b"[1]", b'[{"record_id": "r"}]'):
        assert _key(without, unreadable, 4) == b"shard:0"
