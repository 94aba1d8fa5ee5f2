"""The composition root: the one place in tracker/ that builds the services and wires them.

Everything here is constructed at call time from a settings object, never at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from kafka.errors import KafkaError
from prometheus_client import start_http_server
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.consumer import PipelineConsumer
from pipeline.metrics import PipelineMetrics
from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import registry_store
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord
from tracker.gateways import GatewayAuth
from tracker.migrate import migrate
from tracker.registry import Registry
from tracker.registry_store import RegistryWatcher
from tracker.settings import (
    ApiSettings,
    CollectorSettings,
    CommonSettings,
    EmbeddedSettings,
    PipelineSettings,
    SettingError,
)
from tracker.topics import ensure_configured

if TYPE_CHECKING:
    from fastapi import FastAPI

    from collector.sink import SpoolingSink

# The API and collector modules (FastAPI, and pyarrow for exports: ~45 MB of RSS) are imported
# by the functions that build them, so `tracker pipeline` does not carry them.

log = logging.getLogger("tracker")


@dataclass
class Core:
    """What every process opens first: storage (migrated) and the classifying registry."""

    pool: ClientPool
    registry: Registry
    processor: Processor


def open_core(settings: CommonSettings, *, watch: bool = False) -> Core:
    pool = ClientPool(settings)
    client = pool.get()
    migrate(client)
    # The version in force in ClickHouse (the file only seeds an empty ledger), followed live.
    # bootstrap records the version's text when it first activates it.
    registry, _ = registry_store.bootstrap(client, settings.registry_path)
    # Finish any batch a crash interrupted before this process lands anything new.
    Writer(client).repair()
    classifier = Classifier(registry)
    if watch:
        RegistryWatcher(pool.get, [classifier]).start()
    return Core(pool, registry, Processor(classifier))


class DirectSink:
    """Embedded hand-off: classify and land in ClickHouse before the HTTP answer, so the
    embedded default gives the same "2xx means stored" promise as Kafka with acks=all."""

    def __init__(self, pool: ClientPool, processor: Processor) -> None:
        self._processor = processor
        # One writer for every delivery, as the pipeline has one: a batch a failed delivery
        # left half-landed is finished by the next delivery (the gateway's retry) before its
        # key check. A writer per delivery forgot it, and the retry landed its records again
        # or called them duplicates while the rollups lacked them (found in review). The
        # writer's lock makes deliveries land one at a time, so one client serves them all.
        self._writer = Writer(pool.get())

    def deliver(self, records: list[UsageRecord]) -> None:
        from collector.sink import DeliveryFailed

        rows = self._processor.process_records(records).rows
        try:
            self._writer.write(rows)
        except (ClickHouseError, OSError) as exc:
            # Not stored: a 503 with Retry-After, which gateways and exporters retry (found in
            # review: a full disk answered 500, which they drop, with a traceback per request).
            # The writer finishes a half-landed batch before the retry's key check.
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            log.warning("the store refused a delivery of %d records: %s", len(rows), reason)
            raise DeliveryFailed(f"the store could not take the batch ({reason})") from exc

    def close(self) -> None:
        return None


def embedded_app(settings: EmbeddedSettings, core: Core) -> FastAPI:
    from api.app import create_app as create_api_app
    from collector.bodies import LargeBodyGate
    from collector.ingest import ingest_router
    from collector.routes_sources import source_routers

    # The settings checked at start (EmbeddedSettings holds the API's): create_app would
    # otherwise read them again here, after the store was opened and the demo seeded.
    app = create_api_app(core.pool, settings)
    app.state.gateway_auth = GatewayAuth(core.pool.get())
    app.state.max_body_bytes = settings.max_body_bytes  # signature checks read under this limit
    app.add_middleware(LargeBodyGate)
    sink = DirectSink(core.pool, core.processor)
    app.include_router(
        ingest_router(
            sink,
            max_body_bytes=settings.max_body_bytes,
            max_batch_records=settings.max_batch_records,
        )
    )
    for router in source_routers(
        sink, max_body_bytes=settings.max_body_bytes, max_batch_records=settings.max_batch_records
    ):
        app.include_router(router)
    return app


def collector_app(settings: CollectorSettings, client: Client) -> tuple[FastAPI, SpoolingSink]:
    from collector.app import create_app as create_collector_app
    from collector.sink import KafkaSink, SpoolingSink
    from collector.spool import Spool

    try:
        # Tried for as long as one send may wait, not kafka-python's 30 s: with Kafka down the
        # collector is up sooner, spooling what it accepts (found: 30 s before the first answer).
        ensure_configured(settings, connect_seconds=settings.kafka_timeout_seconds)
    except KafkaError as exc:  # start anyway: records spool until Kafka is back
        log.warning("Kafka unavailable at start (%s); accepting into the spool", exc)
    kafka = KafkaSink(
        settings.kafka_bootstrap,
        settings.kafka_topic,
        records_per_message=settings.kafka_records_per_message,
        shards=settings.kafka_partitions,
        timeout_seconds=settings.kafka_timeout_seconds,
        compression=settings.kafka_compression,
    )
    sink = SpoolingSink(kafka, Spool(settings.data_dir / "spool", settings.spool_max_bytes))
    app = create_collector_app(
        sink,
        GatewayAuth(client),
        max_body_bytes=settings.max_body_bytes,
        max_batch_records=settings.max_batch_records,
    )
    return app, sink


def api_app(settings: ApiSettings) -> FastAPI:
    from api.app import create_app as create_api_app

    return create_api_app(ClientPool(settings), settings)


def serve_metrics(settings: PipelineSettings, metrics: PipelineMetrics) -> None:
    """/metrics on its own port (0: none)."""
    if not settings.metrics_port:
        return
    try:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
        )
    except OSError as exc:  # the port taken, the host unknown: a setting to correct
        raise SettingError(
            f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: "
            f"{exc.strerror or exc}; set TRACKER_METRICS_PORT/TRACKER_METRICS_HOST"
        ) from exc


def run_pipeline(settings: PipelineSettings, core: Core) -> PipelineConsumer:
    ensure_configured(settings)
    metrics = PipelineMetrics()
    serve_metrics(settings, metrics)
    consumer = PipelineConsumer(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.kafka_topic,
        dlq_topic=settings.kafka_dlq_topic,
        group_id=settings.consumer_group,
        processor=core.processor,
        writer=Writer(core.pool.get()),
        batch_max_rows=settings.batch_max_rows,
        batch_max_seconds=settings.batch_max_seconds,
        metrics=metrics,
        session_timeout_ms=settings.consumer_session_timeout_ms,
    )
    return consumer


def seed(core: Core, records: Iterable[UsageRecord], total: int | None, batch: int = 20_000) -> int:
    """Land records through the same processor and writer as live traffic, with progress."""
    writer = Writer(core.pool.get())
    landed = 0
    pending: list[UsageRecord] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("seeding demo usage", total=total)
        for record in records:
            pending.append(record)
            if len(pending) >= batch:
                landed += writer.write(core.processor.process_records(pending).rows).inserted
                progress.advance(task, len(pending))
                pending = []
        if pending:
            landed += writer.write(core.processor.process_records(pending).rows).inserted
            progress.advance(task, len(pending))
    return landed
