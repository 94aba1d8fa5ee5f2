"""Prometheus metrics of the pipeline (exported on TRACKER_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("tracker_pipeline_messages", "Kafka messages consumed", registry=r)
        self.records = Counter(
            "tracker_pipeline_records", "Records by outcome", ["outcome"], registry=r
        )
        self.batches = Counter("tracker_pipeline_batches", "Batches landed", registry=r)
        self.batch_rows = Histogram(
            "tracker_pipeline_batch_rows",
            "Rows per landed batch",
            buckets=(10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
            registry=r,
        )
        self.write_seconds = Histogram(
            "tracker_pipeline_write_seconds",
            "Time to land a batch in ClickHouse (all steps, retries included)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.write_failures = Counter(
            "tracker_pipeline_write_failures", "ClickHouse write attempts that failed", registry=r
        )
        self.dead_letter_failures = Counter(
            "tracker_pipeline_dead_letter_failures",
            "Attempts to send a batch's dead letters to the dead-letter topic that failed "
            "(progress waits for them, as for a ClickHouse write)",
            registry=r,
        )
        self.rejoins = Counter(
            "tracker_pipeline_rejoins",
            "Times this member left and rejoined its group after holding no partition for a while",
            registry=r,
        )
        self.partitions = Gauge(
            "tracker_pipeline_assigned_partitions",
            "Partitions this member holds now (0 while unassigned or rebalancing)",
            registry=r,
        )
        self.lag = Gauge(
            "tracker_pipeline_lag", "Messages behind the end of the partition", ["partition"],
            registry=r,
        )  # fmt: skip
