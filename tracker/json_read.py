"""JSON as sent, including numbers orjson will not hold, and arrays with an item that cannot
be encoded again.

orjson refuses a whole document over one number it cannot represent: a float out of double's
range (`1e400`), an integer beyond 64 bits, or a `NaN` / `Infinity` literal. A batch of records
is then lost whole, though only one field of one record is out of bounds, which the contract
refuses on its own (found in review). The standard library's reader takes such numbers (as
`inf`, `nan` or a Python int), so the document is read, and the record carrying the number is
refused with its field and reason while the records beside it land.

A lone surrogate escape (`"\\ud83d"`, a string JavaScript's `JSON.stringify` cut mid-emoji) is
read by the standard library too, but the string it gives cannot be encoded again as UTF-8:
it crashed the dead-letter write of the record carrying it (found in review). So it never
passes on as a string. A caller reading a batch (`items=True`) gets each array item holding
one as an `Unencodable`, refused on its own with the field that holds it; anywhere else the
document is refused, naming that field.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

LONE_SURROGATE = "a lone surrogate escape (\\ud800-\\udfff without its pair) is not a character"


class JSONError(ValueError):
    """Not JSON at all (orjson's reason, which names the position), or a lone surrogate
    outside the items of a batch (naming the field)."""


class Unencodable:
    """An array item with a lone surrogate escape in it (`loads(..., items=True)`). `field`:
    where the first one is, dotted from the item (`metadata.tags.0`); `payload`: the item as
    JSON with every non-ASCII character escaped, which encodes, for a dead letter."""

    __slots__ = ("field", "payload")

    def __init__(self, field: str, payload: str) -> None:
        self.field = field
        self.payload = payload

    reason = LONE_SURROGATE


def loads(data: bytes | str, *, items: bool = False) -> Any:
    """`data` parsed: by orjson, else by the standard library when only a number or a lone
    surrogate stopped it. With `items`, an array's items holding a lone surrogate come back as
    `Unencodable`; any other document holding one is a JSONError.

    The second reader must not accept what orjson rightly refuses for other reasons: bytes that
    are not UTF-8 (the standard library would guess UTF-16)."""
    parsed, slow = _parse(data)
    if slow is None:
        return parsed
    try:  # only on this slow path: orjson refuses every document with a lone surrogate
        where = lone_surrogate_at(parsed)
        if where is None:
            return parsed
        if items and isinstance(parsed, list):
            return [_item(item) for item in parsed]
    except RecursionError:  # as deep as the standard library reads: no deeper here
        raise JSONError(f"nested too deeply to read: {slow}") from slow
    raise JSONError(f"{where or 'the document'}: {LONE_SURROGATE}") from slow


def loads_keeping_surrogates(data: bytes | str) -> tuple[Any, bool]:
    """`data` parsed as `loads` reads it, lone surrogates kept: (the document, whether it holds
    any). For a caller that refuses each place holding one itself, and passes on none."""
    parsed, slow = _parse(data)
    if slow is None:
        return parsed, False
    try:
        return parsed, lone_surrogate_at(parsed) is not None
    except RecursionError:
        raise JSONError(f"nested too deeply to read: {slow}") from slow


# Python refuses to build an int from more digits than this (a guard against quadratic
# conversion), which ended the whole document: one 4,301-digit number lost the good records
# beside it (found in review). Such a number is read as infinity, which the contract refuses
# as not finite, in the one record (or span) holding it.
_MAX_INT_DIGITS = 4300


def _int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def _parse(data: bytes | str) -> tuple[Any, orjson.JSONDecodeError | None]:
    """(document, None) read by orjson, or (document, orjson's refusal) read by the standard
    library after it."""
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            return json.loads(text, parse_int=_int), exc
        except (ValueError, RecursionError):  # JSON and Unicode errors are ValueErrors
            raise JSONError(str(exc)) from exc


def _item(item: Any) -> Any:
    where = lone_surrogate_at(item)
    if where is None:
        return item
    return Unencodable(where or "record", json.dumps(item, ensure_ascii=True, default=str))


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in `value` that does not encode as UTF-8
    ("" for `value` itself), or None. The path names keys that encode; a key that does not is
    named `<key>`."""
    if isinstance(value, str):
        return None if _encodes(value) else path
    if isinstance(value, dict):
        for key, inner in value.items():
            name = key if _encodes(key) else "<key>"
            here = f"{path}.{name}" if path else name
            if name == "<key>":
                return here
            found = lone_surrogate_at(inner, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = lone_surrogate_at(inner, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
