"""Scale-out wiring with a real broker: collector (HTTP) -> Kafka usage.v1 -> pipeline consumer
-> chdb -> API. Every figure of /v1/share is checked against sums computed here, from the
dataset itself and tiers written down by hand, independently of the classifier and the SQL."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from tests.integration.faults import assert_sharded, read_topic
from tests.integration.ports import free_port
from tracker.cli.wiring import Core, collector_app, open_core, run_pipeline
from tracker.gateways import add
from tracker.settings import CollectorSettings, CommonSettings, PipelineSettings

# (provider, region, endpoint_host, tier as a person reading the registry would say)
ROUTES = [
    ("sarvam", None, None, "sovereign"),
    ("e2e_cloud", "mumbai", None, "sovereign"),
    ("azure_openai", "southindia", None, "onshore"),
    ("aws", None, "bedrock-runtime.ap-south-1.amazonaws.com", "onshore"),
    ("openai", None, "api.openai.com", "offshore"),
    ("google_vertex", "europe-west4", None, "offshore"),
    ("azure_openai", None, None, "unknown"),
    ("my_own_gpu_box", None, "10.0.0.5", "unknown"),
]
AGENCIES = ["in-aiims-delhi", "in-sbi", "in-iitm"]
FX = {"USD": Decimal(84), "INR": Decimal(1), "EUR": Decimal(91)}


def dataset(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        provider, region, host, _ = ROUTES[i % len(ROUTES)]
        rec: dict[str, Any] = {
            "record_id": f"k{i}", "agency_id": AGENCIES[i % 3],
            "occurred_at": f"2026-04-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "provider": provider, "model": "m", "request_count": rng.randint(1, 50),
            "input_tokens": rng.randint(0, 5000), "output_tokens": rng.randint(0, 2000),
            "cost": str(Decimal(rng.randint(0, 10_000)) / 1000),
            "currency": rng.choice(["USD", "INR", "EUR"]),
        }  # fmt: skip
        if region:
            rec["region"] = region
        if host:
            rec["endpoint_host"] = host
        out.append(rec)
    return out


def expected(records: list[dict[str, Any]], agencies: set[str]) -> dict[str, dict[str, float]]:
    tier_of = {(p, r, h): t for p, r, h, t in ROUTES}
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for rec in records:
        if rec["agency_id"] not in agencies:
            continue
        tier = tier_of[(rec["provider"], rec.get("region"), rec.get("endpoint_host"))]
        sums["requests"][tier] += float(rec["request_count"])
        sums["tokens"][tier] += float(rec["input_tokens"]) + float(rec["output_tokens"])
        sums["cost"][tier] += float(Decimal(str(rec["cost"])) * FX[str(rec["currency"])])
    return sums


@pytest.fixture(scope="module")
def wired(
    settings: CommonSettings, pool: object, kafka_bootstrap: str
) -> Iterator[tuple[TestClient, TestClient, Core, str, str, int]]:
    topic = f"usage.v1.{uuid.uuid4().hex[:6]}"
    common: dict[str, Any] = {"data_dir": settings.data_dir, "clickhouse_database": settings.clickhouse_database,
              "kafka_bootstrap": kafka_bootstrap, "kafka_topic": topic,
              "kafka_dlq_topic": topic + ".dlq"}  # fmt: skip
    core = open_core(settings)
    _, key = add(core.pool.get(), core.registry, "gw-e2e", AGENCIES)
    app, sink = collector_app(
        CollectorSettings(**common, kafka_records_per_message=100), core.pool.get()
    )
    port = free_port()  # for the pipeline's /metrics
    consumer = run_pipeline(
        PipelineSettings(
            **common, consumer_group=f"g-{topic}", batch_max_seconds=0.3, metrics_port=port
        ),
        core,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        with TestClient(app) as collector, TestClient(create_app(core.pool)) as api:
            yield collector, api, core, key, topic, port
    finally:
        consumer.stop()
        thread.join(timeout=30)
        sink.close()


def wait_for(core: Core, count: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while True:
        landed = int(core.pool.query_rows("SELECT count() FROM usage_raw")[0][0])
        if landed >= count or time.monotonic() >= deadline:
            return landed
        time.sleep(0.2)


def test_known_dataset_through_kafka_matches_independent_sums(
    wired: tuple[TestClient, TestClient, Core, str, str, int], kafka_bootstrap: str
) -> None:
    collector, api, core, key, topic, _ = wired
    records = dataset(2_500)
    auth = {"Authorization": f"Bearer {key}"}
    for start in range(0, len(records), 500):
        r = collector.post(
            "/v1/records", content=orjson.dumps(records[start : start + 500]), headers=auth
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 500, r.json()["errors"][:3]
    # A gateway retry of 10% of the data must not count again.
    resent = records[::10]
    assert (
        collector.post("/v1/records", content=orjson.dumps(resent), headers=auth).status_code == 200
    )
    # Nor a resend naming another agency (a gateway's correction, say): a record's identity is
    # (gateway_id, record_id), and its copies share a shard, so one member lands them in order
    # and the first sent counts (keyed by agency, two members could land both at once).
    moved = [{**r, "agency_id": AGENCIES[(AGENCIES.index(r["agency_id"]) + 1) % 3]}
             for r in records[::25]]  # fmt: skip
    r = collector.post("/v1/records", content=orjson.dumps(moved), headers=auth)
    assert r.status_code == 200 and r.json()["accepted"] == len(moved), r.text

    assert wait_for(core, len(records)) == len(records)
    time.sleep(1.0)  # let any duplicate that would wrongly land arrive before counting
    assert wait_for(core, len(records), timeout=0) == len(records)

    # Messages are keyed by the shard of their records' identity, in its partition.
    messages = read_topic(kafka_bootstrap, topic)
    assert_sharded(messages, shards=4, partitions=4)
    assert len({read.partition for read in messages}) == 4  # spread over every partition

    window = {"from": "2026-04-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"}
    for agencies in (set(AGENCIES), {"in-sbi"}):
        truth = expected(records, agencies)
        for basis in ("requests", "tokens", "cost"):
            params: dict[str, object] = {**window, "basis": basis}
            if agencies != set(AGENCIES):
                params["agency"] = sorted(agencies)
            body = api.get("/v1/share", params=params).json()
            t = truth[basis]
            total = sum(t.values())
            for tier in ("sovereign", "onshore", "offshore", "unknown"):
                assert body["totals"][tier] == pytest.approx(t[tier], rel=1e-9), (basis, tier)
            assert body["totals"]["total"] == pytest.approx(total, rel=1e-9)
            assert body["domestic_share"] == pytest.approx((t["sovereign"] + t["onshore"]) / total)
            assert body["sovereign_share"] == pytest.approx(t["sovereign"] / total)
            assert body["unknown_share"] == pytest.approx(t["unknown"] / total)
            assert body["records"] == sum(1 for r in records if r["agency_id"] in agencies)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_metrics_count_what_the_pipeline_did(
    wired: tuple[TestClient, TestClient, Core, str, str, int], kafka_bootstrap: str
) -> None:
    """Lag, throughput by outcome, batch sizes, rejects and write latency, scraped over HTTP
    from the pipeline's /metrics and compared with what the topic and the tables hold. Runs
    after the dataset test in the same module: its records, its 10% resent, and one malformed
    message sent here straight to the topic."""
    _, _, core, _, topic, port = wired
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    poison = producer.send(topic, key=b"in-sbi", value=b"{not json").get(timeout=30)
    producer.close()
    deadline = time.monotonic() + 60
    while core.pool.query_rows("SELECT count() FROM usage_rejects")[0][0] < 1:
        assert time.monotonic() < deadline, "the malformed message was never rejected"
        time.sleep(0.2)
    time.sleep(1.0)  # the batch's metrics are set right after its rejects land
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)  # fmt: skip
    in_topic = sum(1 for _ in consumer)
    consumer.close()
    landed = int(core.pool.query_rows("SELECT count() FROM usage_raw")[0][0])
    m = scrape(port)
    # The dead letter names its source, and so does the auditors' table; the partition went on.
    dlq = KafkaConsumer(topic + ".dlq", bootstrap_servers=kafka_bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=3000)  # fmt: skip
    letters = [orjson.loads(message.value) for message in dlq]
    dlq.close()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        topic, poison.partition, poison.offset,
    )  # fmt: skip
    assert letter["record_index"] == -1 and letter["reason"] and letter["payload"] == "{not json"
    assert core.pool.query_rows(
        "SELECT source_partition, source_offset, reason FROM usage_rejects"
    ) == [(poison.partition, poison.offset, letter["reason"])]

    def one(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert landed == 2_500
    assert one("tracker_pipeline_messages_total") == in_topic
    assert one("tracker_pipeline_records_total", outcome="landed") == landed
    # the resent 10% and the 4% resent under another agency
    assert one("tracker_pipeline_records_total", outcome="duplicate") == 250 + 100
    assert one("tracker_pipeline_records_total", outcome="rejected") == 1
    batches = one("tracker_pipeline_batches_total")
    assert batches >= 2
    assert one("tracker_pipeline_batch_rows_count") == batches
    assert one("tracker_pipeline_batch_rows_sum") == landed + 350  # before the duplicate drop
    assert one("tracker_pipeline_write_seconds_count") == batches
    assert 0 < one("tracker_pipeline_write_seconds_sum") < 60 * batches
    lags = [v for (name, _), v in m.items() if name == "tracker_pipeline_lag"]
    assert lags and all(v == 0 for v in lags)  # caught up on every partition it reports
    assert one("tracker_pipeline_assigned_partitions") == 4
    assert one("tracker_pipeline_rejoins_total") == 0
    assert one("tracker_pipeline_write_failures_total") == 0
