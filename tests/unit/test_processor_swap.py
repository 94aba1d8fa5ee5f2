"""A registry swap on another thread between the parts of one row: the row's cost rate, tier,
agency and registry version are all one version's. (Found in review: the rate was read from the
version the processor followed, the tier from the classifier after the swap.)"""

from __future__ import annotations

from decimal import Decimal

import yaml

from pipeline.processor import COLUMNS, Processor
from tracker.classify import Classification, Classifier
from tracker.contract import parse_record
from tracker.registry import Agency, Registry, load, parse


def newer(text: str) -> Registry:
    """Another version: the dollar at 90 rupees, Azure Central India abroad, AIIMS in finance."""
    data = yaml.safe_load(text)
    data["fx_to_reporting"]["USD"] = 90
    for f in data["facilities"]:
        if f["id"] == "azure-centralindia":
            f["country"] = "SG"
    for a in data["agencies"]:
        if a["id"] == "in-aiims-delhi":
            a["sector"] = "finance"
    return parse(yaml.safe_dump(data, sort_keys=False), "newer.yaml")


class SwappedMidRow(Classifier):
    """Swapped to `then` just before its second look-up of any kind, as a watcher thread may
    swap it between two reads the processor makes for one row."""

    def __init__(self, registry: Registry, then: Registry) -> None:
        super().__init__(registry)
        self.then: Registry | None = then
        self.lookups = 0

    def _looked_up(self) -> None:
        self.lookups += 1
        if self.lookups == 2 and self.then is not None:
            self.swap(self.then)

    @property
    def registry(self) -> Registry:
        self._looked_up()
        return super().registry

    def pinned(self) -> Classifier:
        self._looked_up()
        return super().pinned()

    def classify(self, provider: str, region: str | None, host: str | None) -> Classification:
        self._looked_up()
        return super().classify(provider, region, host)

    def agency(self, agency_id: str) -> Agency | None:
        self._looked_up()
        return super().agency(agency_id)


def test_a_swap_mid_row_gives_the_row_one_version() -> None:
    old, text = load()
    new = newer(text)
    assert new.version != old.version
    processor = Processor(SwappedMidRow(old, new))
    body = {
        "record_id": "r1", "gateway_id": "gw", "agency_id": "in-aiims-delhi",
        "occurred_at": "2026-02-01T00:00:00Z", "provider": "azure_openai", "model": "gpt-4o",
        "region": "centralindia", "cost": "2", "currency": "USD",
    }  # fmt: skip
    first, second = processor.process_records([parse_record(body), parse_record(body)]).rows

    def parts(row: tuple[object, ...]) -> tuple[object, ...]:
        names = ("registry_version", "tier", "sector", "cost_reporting")
        return tuple(row[COLUMNS.index(n)] for n in names)

    # The row being made when the swap came is the old version's throughout; the next, the
    # new version's throughout.
    assert parts(first) == (old.version, "onshore", "health", Decimal(2) * 84)
    assert parts(second) == (new.version, "offshore", "finance", Decimal(2) * 90)
