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
import re
from typing import Any, Final

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


# What the count of a large array's items reads: a whole string (escapes included; a quote
# left open matches alone), a bracket or brace, a comma. Numbers, literals and whitespace are
# passed over.
_STRUCTURE: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]')
_BOM: Final = b"\xef\xbb\xbf"
_SPACE: Final = re.compile(rb"[ \t\n\r]*")
_COMMA, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b",[{]}"


def array_longer_than(body: bytes, limit: int, *, in_object: bool = False) -> bool:
    """Whether `body` is a JSON array of more than `limit` items (with `in_object`: an object
    whose arrays, the values of its own keys, hold more than `limit` items together, an empty
    one counted as one), found without parsing it: a scan of its strings, brackets and commas,
    with the containers open kept as a stack (nothing recursive, no number converted, nothing
    built), which stops at item `limit + 1`. A parser builds every item first: a 16 MiB array
    of 5.6M `{}` took ~470 MB in orjson, ~800 MB in pydantic's core, before its count could
    refuse it. Found in review: an earlier count read items with the standard library, and
    gave up, so the full parse ran, when an early item was nested ~1,000 deep or held an
    integer of over 4,300 digits.

    False when `body` is neither, or within the limit; the callers' own parse then names what
    is wrong with a body that is no JSON (a string left open ends the count: False)."""
    at = _SPACE.match(body, len(_BOM) if body.startswith(_BOM) else 0).end()  # type: ignore[union-attr]
    opener = body[at : at + 1]
    if opener == b"[":
        counted = 1  # items of the array at this depth
        first = _SPACE.match(body, at + 1).end()  # type: ignore[union-attr]
        if body[first : first + 1] in (b"]", b""):
            return False
        items = 1
    elif opener == b"{" and in_object:
        counted, items = 2, 0  # items of the arrays that are the object's values
    else:
        return False
    stack = [body[at]]
    for token in _STRUCTURE.finditer(body, at + 1):
        if items > limit:
            return True
        mark = body[token.start()]
        if mark == _COMMA:
            items += len(stack) == counted and stack[-1] == _OPEN_ARRAY
        elif mark in (_OPEN_ARRAY, _OPEN_OBJECT):
            stack.append(mark)
            items += counted == 2 and len(stack) == 2 and mark == _OPEN_ARRAY  # its first item
        elif mark in (_CLOSE_ARRAY, _CLOSE_OBJECT):
            stack.pop()
            if not stack:
                return False  # the body's end
        elif token.end() - token.start() == 1:  # a quote left open: no JSON from here
            return False
    return items > limit
