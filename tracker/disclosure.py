"""Small-cell suppression for public answers.

A public figure built from fewer than `k` records could be one small agency's individual usage,
so it is withheld. Withholding one cell of a table is not enough when the table's total is
published too (the national figure is): the hidden cells together are the total minus the
others. So while the hidden cells of a table hold fewer than `k` records together, the next
smallest shown cell is hidden with them (secondary suppression): what subtraction gives back
within the table is never a figure of fewer than `k` records. (Until 2026-11-25 this was done
only for a single hidden cell; two small cells hidden together were given back as one small
sum, found in review.)

Not covered (docs/api.md): differencing across separately filtered queries. The public API
offers filters, and two public answers can in principle be subtracted; the registry is public,
so which agencies form a sector is known. The defence there is the record threshold on every
cell of every answer, not secrecy of the layout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

T = TypeVar("T")


def suppressed(records: Sequence[int], k: int, withheld: Collection[int] = ()) -> set[int]:
    """Indices of the cells to withhold from a table whose cells have these record counts.

    `withheld`: cells the answer leaves out anyway (e.g. past a caller's `limit`). They are
    hidden cells like the others: the table's total minus what is shown is their sum too, so a
    small cell left out alone is recovered exactly as a small cell hidden alone would be."""
    hide = {i for i, n in enumerate(records) if 0 < n < k} | set(withheld)
    together = sum(records[i] for i in hide)
    while 0 < together < k:
        others = [(n, i) for i, n in enumerate(records) if i not in hide and n > 0]
        if not others:
            break
        n, i = min(others)
        hide.add(i)
        together += n
    return hide


def suppressed_nested(
    records: Sequence[int],
    groups: Sequence[str],
    k: int,
    hidden_groups: Collection[str] = (),
    withheld: Collection[int] = (),
) -> set[int]:
    """Cells of a table nested in groups whose totals are published too (providers within
    origins): each group is a table of its own, or a group's total minus its shown cells would
    give a cell hidden alone in it. A group hidden in its own table (`hidden_groups`) keeps at
    least one cell hidden: were all of its cells shown, their sum would give its total back,
    and with it the group that total was hidden to protect. `withheld`: cells left out anyway,
    as in `suppressed`."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    hide: set[int] = set()
    for g, idx in members.items():
        out = [j for j, i in enumerate(idx) if i in withheld]
        inner = {idx[j] for j in suppressed([records[i] for i in idx], k, out)}
        if g in hidden_groups and not inner:
            inner = {min(idx, key=lambda i: (records[i], i))}
        hide |= inner
    return hide


def unranked(cells: Sequence[T], withheld: Callable[[T], bool], key: Callable[[T], str]) -> list[T]:
    """A table ranked by value with its withheld cells moved last, in order of key: left in
    place, the shown cells either side bound a withheld one's value (found in review: one
    record of 99 requests between cells of 100 and 98)."""
    return [c for c in cells if not withheld(c)] + sorted(
        (c for c in cells if withheld(c)), key=key
    )


def hidden(records: int, k: int) -> bool:
    """A single published figure (no sibling cells): hidden when built from 1..k-1 records."""
    return 0 < records < k
