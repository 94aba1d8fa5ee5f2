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

from collections.abc import Sequence


def suppressed(records: Sequence[int], k: int) -> set[int]:
    """Indices of the cells to withhold from a table whose cells have these record counts."""
    primary = {i for i, n in enumerate(records) if 0 < n < k}
    if len(primary) == 1:
        others = [(n, i) for i, n in enumerate(records) if i not in primary and n > 0]
        if others:
            primary.add(min(others)[1])
    return primary


def hidden(records: int, k: int) -> bool:
    """A single published figure (no sibling cells): hidden when built from 1..k-1 records."""
    return 0 < records < k
