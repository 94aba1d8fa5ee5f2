from __future__ import annotations

import gc

from pipeline.gc_pacing import CollectionPacer


def test_automatic_collection_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with CollectionPacer():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled_after() -> None:
    gc.disable()
    try:
        with CollectionPacer():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_young_after_a_landing_or_a_quiet_spell_and_full_on_schedule() -> None:
    with CollectionPacer(young_every=5.0, full_every=60.0) as pacer:
        start = pacer._last_full
        pacer.collect(landed=False, now=start + 1)
        assert pacer.collections == {"young": 0, "full": 0}
        pacer.collect(landed=True, now=start + 2)
        assert pacer.collections == {"young": 1, "full": 0}
        pacer.collect(landed=False, now=start + 6)  # 4 s after the last: not yet
        assert pacer.collections == {"young": 1, "full": 0}
        pacer.collect(landed=False, now=start + 7.5)  # 5.5 s without a landing
        assert pacer.collections == {"young": 2, "full": 0}
        pacer.collect(landed=True, now=start + 60)
        assert pacer.collections == {"young": 2, "full": 1}


def test_cycles_made_while_paced_are_freed_by_its_collections() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    with CollectionPacer(young_every=0.0, full_every=3600.0) as pacer:
        gc.collect()
        before = sum(1 for o in gc.get_objects() if isinstance(o, Node))
        for _ in range(1000):
            Node()
        made = sum(1 for o in gc.get_objects() if isinstance(o, Node))
        assert made - before == 1000  # nothing collected them automatically
        pacer.collect(landed=True)
        assert sum(1 for o in gc.get_objects() if isinstance(o, Node)) == before
