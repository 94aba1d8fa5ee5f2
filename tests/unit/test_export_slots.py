"""Export slots are taken in route threads and released on the event loop: under a lock."""

from __future__ import annotations

import sys
import threading

import pytest
from fastapi import HTTPException

from api.routes.usage import ExportSlots


def test_slots_taken_and_released_from_many_threads_at_once_end_empty() -> None:
    """Found in review: unlocked, a release racing a take left a slot held for good (the key
    locked out after two such) or raised KeyError, which skipped stopping the export's
    thread (898 KeyErrors in 10 s at a 1 us switch interval)."""
    slots = ExportSlots(at_once=6, per_key=2)
    errors: list[BaseException] = []

    def churn(key: str) -> None:
        for _ in range(3_000):
            try:
                release = slots.take(key)
            except HTTPException as exc:
                assert exc.status_code in (429, 503)
                continue
            except BaseException as exc:  # what the test counts
                errors.append(exc)
                continue
            held = slots.by_key.get(key, 0)
            if held > 2:
                errors.append(AssertionError(f"{held} slots of {key}"))
            try:
                release()
                release()  # once only
            except BaseException as exc:
                errors.append(exc)

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=churn, args=(k,)) for k in ("a", "a", "b", "b", "a")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(before)
    assert errors == [] and slots.by_key == {}
    # And the bounds still hold: a key's third at once, the total's seventh.
    held = [slots.take("k"), slots.take("k")]
    with pytest.raises(HTTPException) as per_key:
        slots.take("k")
    assert per_key.value.status_code == 429
    held += [slots.take(f"k{i}") for i in range(4)]
    with pytest.raises(HTTPException) as total:
        slots.take("other")
    assert total.value.status_code == 503
    for release in held:
        release()
    assert slots.by_key == {}
