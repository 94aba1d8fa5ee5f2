"""A registry swap on another thread between the parts of one row: the row's cost rate, tier,
agency and registry version are all one version's. (Found in review: the rate was read from the
version the processor followed, the tier from the classifier after the swap.)"""

from __future__ import annotations

import threading
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


def test_a_thread_deriving_by_the_old_version_leaves_the_new_versions_cache_alone() -> None:
    # Found in review: request threads of the embedded ingest share one processor. One still
    # classifying by the old view when another followed the swap stored the old tier in the
    # new version's cache, and every later row of that route landed with the old tier and
    # version beside the new rate, until the next registry change.
    old, text = load()
    new = newer(text)
    classifier = Classifier(old)
    processor = Processor(classifier)
    old_view = classifier.pinned()
    inside, go = threading.Event(), threading.Event()
    classify = old_view.classify

    def held(provider: str, region: str | None, host: str | None) -> Classification:
        inside.set()
        go.wait(10)
        return classify(provider, region, host)

    old_view.classify = held  # type: ignore[method-assign, assignment]
    body = {
        "record_id": "r1", "gateway_id": "gw", "agency_id": "in-aiims-delhi",
        "occurred_at": "2026-02-01T00:00:00Z", "provider": "azure_openai", "model": "gpt-4o",
        "region": "centralindia", "cost": "2", "currency": "USD",
    }  # fmt: skip
    late: list[tuple[object, ...]] = []
    thread = threading.Thread(
        target=lambda: late.extend(processor.process_records([parse_record(body)]).rows)
    )
    thread.start()
    assert inside.wait(10)
    classifier.swap(new)
    # Another request follows the swap (another route, so it derives nothing the first does).
    processor.process_records([parse_record({**body, "record_id": "r2", "region": "southindia"})])
    go.set()
    thread.join(10)
    assert late and late[0][COLUMNS.index("registry_version")] == old.version
    (after,) = processor.process_records([parse_record({**body, "record_id": "r3"})]).rows
    assert (after[COLUMNS.index("registry_version")], after[COLUMNS.index("tier")]) == (
        new.version, "offshore")  # fmt: skip
