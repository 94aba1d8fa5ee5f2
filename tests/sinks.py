"""A collector sink that keeps what it is given: the collector app without Kafka, for tests of
what the routes accept and refuse."""

from __future__ import annotations

from tracker.contract import UsageRecord


class ListSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def deliver(self, records: list[UsageRecord]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass
