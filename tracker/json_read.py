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


class TooIntricate(ValueError):
    """A large body whose items hold more nested containers than `array_longer_than` steps
    through (MOST_STEPS): refused (413) rather than counted for seconds."""


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


# What the count of a large array's items reads where items are counted: a whole string
# (escapes included; a quote left open matches alone), a bracket or brace, a comma. Numbers,
# literals and whitespace are passed over.
_STRING: Final = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_STRUCTURE: Final = re.compile(_STRING + rb'|"|[\[\]{},]')
# Inside an item only its brackets matter, to find where it ends: one match passes over
# everything else in C, strings, and containers holding containers at most two deep (a
# record's values, an OTLP attribute and its value). Found in review: reading every string and
# comma of an item in Python took seconds for bodies within the limit (at 16 MiB: one record
# holding 5M empty strings 2.7 s, now 0.16 s; an OTLP export with 200,000 resource attributes
# 0.9 s, now 0.14 s). Possessive quantifiers: what a match took is never read again by
# backtracking. A container holding deeper ones fails its alternative after reading up to
# them and is stepped into (a step); its start is read again from there, so each byte is read
# a bounded number of times (once for each of the three levels the match takes in).
_PLAIN: Final = rb'[^\[\]{}"]*+'


def _containers(inside: bytes) -> bytes:
    """An array or an object whose content is `inside`."""
    return rb"\[" + inside + rb"\]|\{" + inside + rb"\}"


def _content(containers: bytes) -> bytes:
    """Plain text, strings and `containers`, in any order."""
    return _PLAIN + rb"(?:(?:" + _STRING + rb"|" + containers + rb")" + _PLAIN + rb")*+"


_FLAT: Final = _PLAIN + rb"(?:" + _STRING + _PLAIN + rb")*+"  # no container inside
_TWO_DEEP: Final = _content(_containers(_content(_containers(_FLAT))))
_INSIDE: Final = re.compile(
    rb'(?:[^\[\]{}"]++|' + _STRING + rb"|" + _containers(_TWO_DEEP) + rb")*+"
)
# Deeper than either parser reads (orjson: 1,024; the standard library: its recursion limit,
# 1,000): such a body is refused by the parse, at that depth, before anything after it is
# built, so the count stops there rather than pay a step a bracket (8M nested brackets:
# 3.7 s; now 1 ms).
_DEEPEST: Final = 2_048
# Past this many steps a body is refused (TooIntricate), not counted on. Measured: a batch of
# records takes 3 steps a record (30,000 for 10,000); an OTLP export of 10,000 spans with 8
# events each, each event's attribute an array value, 680,000 for 11 MiB (~1M at 16 MiB).
# The most a body can ask for, small containers three deep repeated (`[[[[]]]]`, 2 steps
# each 9 bytes), took 2.2 s at 16 MiB and is refused after 1.1 s.
MOST_STEPS: Final = 2_000_000
_BOM: Final = b"\xef\xbb\xbf"
_SPACE: Final = re.compile(rb"[ \t\n\r]*")
_COMMA, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT, _QUOTE = b',[{]}"'


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

    False when `body` is neither, or within the limit, or nested past _DEEPEST; the callers'
    own parse then names what is wrong with a body that is no JSON (a string left open ends
    the count: False). TooIntricate past MOST_STEPS steps."""
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
    pos = at + 1
    steps = 0
    while items <= limit:
        steps += 1
        if steps > MOST_STEPS:
            raise TooIntricate(
                f"JSON body too intricate to count: over {MOST_STEPS} nested containers and "
                "separators to step through; send smaller batches"
            )
        if len(stack) > counted:  # inside an item: on to its next bracket
            pos = _INSIDE.match(body, pos).end()  # type: ignore[union-attr]
            mark = body[pos] if pos < len(body) else None
            end = pos + 1
            if mark == _QUOTE:  # a string left open: no JSON from here
                return False
        else:
            token = _STRUCTURE.search(body, pos)
            if token is None:
                return False
            mark, end = body[token.start()], token.end()
            if mark == _QUOTE and end - token.start() == 1:
                return False
        pos = end
        if mark is None:
            return False
        if mark == _COMMA:
            items += len(stack) == counted and stack[-1] == _OPEN_ARRAY
        elif mark in (_OPEN_ARRAY, _OPEN_OBJECT):
            stack.append(mark)
            if len(stack) > _DEEPEST:
                return False
            items += counted == 2 and len(stack) == 2 and mark == _OPEN_ARRAY  # its first item
        elif mark in (_CLOSE_ARRAY, _CLOSE_OBJECT):
            stack.pop()
            if not stack:
                return False  # the body's end
    return True
