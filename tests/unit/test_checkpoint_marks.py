"""A checkpoint whose numbers are of the right type but no file's (a length past the head read,
a negative offset) is refused as damaged, which the importer reports with exit 2. (Found in
review: 2**62 as head_len was a MemoryError, -3 as offset an OSError, each a traceback.)"""

from __future__ import annotations

import pytest

from collector.imports import HEAD_BYTES, _mark

GOOD = {"device": 2049, "inode": 131, "head_len": 120, "head_sha256": "a" * 64, "offset": 120,
        "line": 3, "tail_sha256": None}  # fmt: skip


def test_a_checkpoint_of_a_file_is_read() -> None:
    assert _mark(GOOD).offset == 120
    assert _mark({**GOOD, "head_len": HEAD_BYTES}).head_len == HEAD_BYTES


@pytest.mark.parametrize(
    "patch",
    [
        {"head_len": 2**62},
        {"head_len": HEAD_BYTES + 1},
        {"head_len": -1},
        {"offset": -3},
        {"line": -1},
        {"inode": -5},
    ],
)
def test_a_checkpoint_no_file_could_have_is_damaged(patch: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="not a checkpoint"):
        _mark({**GOOD, **patch})
