"""A number JSON cannot carry (`inf`, `nan`, `1e400`) in an imported row is refused naming its
field, never sent as null. (Found in review: the importer's encoder wrote it as null, so the
record landed without its energy while a push of the same record was refused.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from collector.adapters import csv_export, opengatellm
from collector.adapters.common import Context, Rejected, run
from collector.imports import encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NONE = Context(agencies=frozenset({"in-moe", "in-cbse"}))
ONE = Context(default_agency="in-mohfw", agencies=frozenset({"in-mohfw"}))


@pytest.mark.parametrize("written", ["inf", "-inf", "nan", "NaN", "1e400", "Infinity"])
def test_a_csv_energy_json_cannot_carry_is_refused_naming_it(written: str) -> None:
    row = {"record_id": "r", "agency_id": "in-moe", "occurred_at": "2026-07-01T10:00:00Z",
           "provider": "sarvam", "model": "m", "energy_wh": written}  # fmt: skip
    refused = run(csv_export.map_row, row, NONE)
    assert isinstance(refused, Rejected), refused
    assert refused.field == "energy_wh" and "finite" in refused.reason
    kept = run(csv_export.map_row, {**row, "energy_wh": "12.5"}, NONE)
    assert isinstance(kept, dict) and kept["energy_wh"] == 12.5


def test_an_opengatellm_energy_json_cannot_carry_is_refused_naming_it() -> None:
    chat = json.loads((FIXTURES / "opengatellm/usage_rows.json").read_text())[0]
    refused = run(opengatellm.map_row, {**chat, "kwh_min": "nan"}, ONE)
    assert isinstance(refused, Rejected), refused
    assert refused.field == "kwh_min"


def test_the_importer_never_writes_a_number_as_null() -> None:
    for value in (math.inf, -math.inf, math.nan):
        refused = encode({"record_id": "r", "energy_wh": value})
        assert isinstance(refused, Rejected) and refused.field == "energy_wh", refused
    assert encode({"record_id": "r", "energy_wh": 1.5}) == b'{"record_id":"r","energy_wh":1.5}'
