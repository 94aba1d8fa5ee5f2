"""Small-cell suppression for public answers.

A public figure built from fewer than `k` records could be one small agency's individual usage,
so it is withheld. Withholding one cell of a table is not enough when the table's total is
published too (the national figure is): the hidden cell would be the total minus the others.
So when exactly one cell of a table is hidden, the next smallest is hidden with it (secondary
suppression), and no hidden cell can be recovered by subtraction within that table.

Not covered (docs/api.md): differencing across separately filtered queries. The public API
offers filters, and two public answers can in principle be subtracted; the registry is public,
so which agencies form a sector is known. The defence there is the record threshold on every
cell of every answer, not secrecy of the layout.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def suppressed(records: Sequence[int], k: int, withheld: Collection[int] = ()) -> set[int]:
    """Indices of the cells to withhold from a table whose cells have these record counts.

    `withheld`: cells the answer leaves out anyway (e.g. past a caller's `limit`). They are
    hidden cells like the others: the table's total minus what is shown is their sum too, so a
    small cell left out alone is recovered exactly as a small cell hidden alone would be."""
    hide = {i for i, n in enumerate(records) if 0 < n < k} | set(withheld)
    if len(hide) == 1 and 0 < records[next(iter(hide))] < k:
        others = [(n, i) for i, n in enumerate(records) if i not in hide and n > 0]
        if others:
            hide.add(min(others)[1])
    return hide


def suppressed_nested(
    records: Sequence[int], groups: Sequence[str], k: int, hidden_groups: Collection[str] = ()
) -> set[int]:
    """Cells of a table nested in groups whose totals are published too (providers within
    origins): each group is a table of its own, or a group's total minus its shown cells would
    give a cell hidden alone in it. A group hidden in its own table (`hidden_groups`) keeps at
    least one cell hidden: were all of its cells shown, their sum would give its total back,
    and with it the group that total was hidden to protect."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    hide: set[int] = set()
    for g, idx in members.items():
        inner = {idx[j] for j in suppressed([records[i] for i in idx], k)}
        if g in hidden_groups and not inner:
            inner = {min(idx, key=lambda i: (records[i], i))}
        hide |= inner
    return hide


def hidden(records: int, k: int) -> bool:
    """A single published figure (no sibling cells): hidden when built from 1..k-1 records."""
    return 0 < records < k
