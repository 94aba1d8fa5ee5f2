"""JSON as sent, including numbers orjson will not hold.

orjson refuses a whole document over one number it cannot represent: a float out of double's
range (`1e400`), an integer beyond 64 bits, or a `NaN` / `Infinity` literal. A batch of records
is then lost whole, though only one field of one record is out of bounds, which the contract
refuses on its own (found in review). The standard library's reader takes such numbers (as
`inf`, `nan` or a Python int), so the document is read, and the record carrying the number is
refused with its field and reason while the records beside it land.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class JSONError(ValueError):
    """Not JSON at all (orjson's reason, which names the position)."""


def loads(data: bytes | str) -> Any:
    """`data` parsed: by orjson, else by the standard library when only a number stopped it.

    The second reader must not accept what orjson rightly refuses for other reasons: bytes that
    are not UTF-8 (the standard library would guess UTF-16), or a lone surrogate escape
    (`"\\ud800"`), which cannot be encoded again and crashed the dead-letter write of the
    record carrying it (found in review)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            parsed = json.loads(text)
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")  # no lone surrogate in it
        except (ValueError, RecursionError):  # JSON and Unicode errors are ValueErrors
            raise JSONError(str(exc)) from exc
        return parsed
