"""Two `tracker pipeline` processes in one consumer group landing into one store, as they do
with a ClickHouse server (here the engine behind tests/integration/chdb_http.py): one is killed
with SIGKILL mid-stream, the other takes its partitions over. Every count must equal the
ground truth. This is where the races between members meet for real: a member landing records
of a partition it just lost, a member's start-up or rebalance repair meeting the other's live
batch, two key checks at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from tests.integration.faults import (
    COUNT_SQL,
    MONTHS_SQL,
    LagProbe,
    kill_left,
    make_stream,
    produce,
    truth_rows,
    wait_caught_up,
)
from tests.integration.ports import free_port, wait_http
from tests.integration.stores import server_settings
from tests.integration.test_end_to_end import AGENCIES, dataset, expected
from tracker.cli.wiring import open_core
from tracker.gateways import add
from tracker.settings import CommonSettings
from tracker.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
ASSIGNED = re.compile(r"assigned \[[^\]]")  # a non-empty assignment


def assigned(log: Path) -> bool:
    return bool(ASSIGNED.search(log.read_text(errors="replace")))


def test_two_processes_on_one_store_one_killed_mid_stream(
    kafka_bootstrap: str, server_dsn: str, tmp_path: Path
) -> None:
    topic, group = f"shared-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    database = f"t_shared_{uuid.uuid4().hex[:8]}"
    settings = server_settings(
        CommonSettings(data_dir=tmp_path / "unused", clickhouse_database=database), server_dsn
    )
    # The deploy's one-off `tracker migrate` job, before any pipeline starts.
    pool = open_core(settings).pool
    ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=4)
    stream = make_stream(60_000, seed=11)
    half = len(stream.messages) // 2
    env = {
        **os.environ, "TRACKER_CLICKHOUSE_DSN": server_dsn, "TRACKER_CLICKHOUSE_DATABASE": database,
        "TRACKER_DATA_DIR": str(tmp_path / "unused"), "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRACKER_KAFKA_TOPIC": topic, "TRACKER_KAFKA_DLQ_TOPIC": topic + ".dlq",
        "TRACKER_CONSUMER_GROUP": group, "TRACKER_BATCH_MAX_ROWS": "500",
        "TRACKER_BATCH_MAX_SECONDS": "0.1", "TRACKER_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "TRACKER_LOG_LEVEL": "INFO",
    }  # fmt: skip
    logs = [tmp_path / "a.log", tmp_path / "b.log"]

    def launch(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as err:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "tracker", "pipeline"], env=env,
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip

    procs = [launch(log) for log in logs]
    probe = LagProbe(kafka_bootstrap, topic, group)
    try:
        # Both members hold partitions before the first record arrives (AssignmentWatch
        # rejoins an empty-handed member within 20 s).
        deadline = time.monotonic() + 150
        while not all(assigned(log) for log in logs):
            assert all(p.poll() is None for p in procs), "a pipeline exited on its own"
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
        produce(kafka_bootstrap, topic, stream.messages[:half])
        start_lag = probe.lag()
        deadline = time.monotonic() + 120
        while probe.lag() > start_lag * 0.7:  # both landing, well before the end
            assert time.monotonic() < deadline, "the pipelines made no progress"
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        produce(kafka_bootstrap, topic, stream.messages[half:])
        try:
            wait_caught_up(kafka_bootstrap, topic, group, timeout=150)
        except AssertionError as exc:
            # Where the survivor is stuck: `tracker` writes every thread's stack on SIGUSR1.
            procs[1].send_signal(signal.SIGUSR1)
            time.sleep(2)
            raise AssertionError(f"{exc}\n{logs[1].read_text(errors='replace')[-8000:]}") from exc
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(timeout=60) == 0
    finally:
        probe.close()
        kill_left(procs)
    survivor = logs[1].read_text(errors="replace")
    # The survivor was given the dead member's partitions: all four.
    assert re.search(r"assigned \[(?:[^\]]*partition=\d[^\]]*){4}\]", survivor), survivor[-3000:]
    result = pool.get().query(COUNT_SQL)
    figures = {
        k: int(v or 0) for k, v in zip(result.column_names, result.result_rows[0], strict=True)
    }
    months = [[int(x) for x in row] for row in pool.get().query(MONTHS_SQL).result_rows]
    assert figures == truth_rows(stream), json.dumps(months)
    assert all(len(set(row[1:])) == 1 for row in months), months  # raw = hourly = daily
    pool.get().command(f"DROP DATABASE IF EXISTS `{database}`")


def test_the_deploy_shape_collector_pipeline_and_api_as_processes(
    kafka_bootstrap: str, server_dsn: str, tmp_path: Path
) -> None:
    """`tracker collector`, `tracker pipeline` and `tracker api`, each its own process on one
    store, as deploy/docker-compose.yml runs them: a known dataset posted to the collector (10%
    of it resent) reads back from the API's headline with every figure equal to sums computed
    here from the dataset and tiers written down by hand (test_end_to_end.py's)."""
    topic, group = f"deploy-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    database = f"t_deploy_{uuid.uuid4().hex[:8]}"
    settings = server_settings(
        CommonSettings(data_dir=tmp_path / "unused", clickhouse_database=database), server_dsn
    )
    core = open_core(settings)  # the deploy's one-off migrate job
    _, key = add(core.pool.get(), core.registry, "gw-deploy", AGENCIES)
    ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=4)
    cport, aport = free_port(), free_port()
    env = {
        **os.environ, "TRACKER_CLICKHOUSE_DSN": server_dsn, "TRACKER_CLICKHOUSE_DATABASE": database,
        "TRACKER_DATA_DIR": str(tmp_path / "unused"), "TRACKER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRACKER_KAFKA_TOPIC": topic, "TRACKER_KAFKA_DLQ_TOPIC": topic + ".dlq",
        "TRACKER_CONSUMER_GROUP": group, "TRACKER_BATCH_MAX_SECONDS": "0.3",
        "TRACKER_KAFKA_RECORDS_PER_MESSAGE": "100", "TRACKER_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    commands = {
        "collector": ["collector", "--port", str(cport)],
        "pipeline": ["pipeline"],
        "api": ["api", "--port", str(aport)],
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "tracker", *args], env=env, cwd=ROOT)
        for args in commands.values()
    ]
    try:
        wait_http(f"http://127.0.0.1:{cport}/healthz", procs[0])
        wait_http(f"http://127.0.0.1:{aport}/v1/health", procs[2])
        records = dataset(2_500)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        for batch in [records[i : i + 500] for i in range(0, len(records), 500)] + [records[::10]]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{cport}/v1/records", data=orjson.dumps(batch), headers=auth
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert json.loads(answer.read())["accepted"] == len(batch)
        deadline = time.monotonic() + 120
        while core.pool.query_rows("SELECT count() FROM usage_raw")[0][0] < len(records):
            assert time.monotonic() < deadline, "the pipeline did not land the dataset"
            time.sleep(0.3)
        wait_caught_up(kafka_bootstrap, topic, group)  # the resent 10% read too
        assert core.pool.query_rows("SELECT count() FROM usage_raw")[0][0] == len(records)
        window = "from=2026-04-01T00:00:00Z&to=2026-05-01T00:00:00Z"
        for basis in ("requests", "tokens", "cost"):
            url = f"http://127.0.0.1:{aport}/v1/share?{window}&basis={basis}"
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = json.loads(answer.read())
            truth = expected(records, set(AGENCIES))[basis]
            for tier in ("sovereign", "onshore", "offshore", "unknown"):
                assert body["totals"][tier] == pytest.approx(truth[tier], rel=1e-9), (basis, tier)
            assert body["domestic_share"] == pytest.approx(
                (truth["sovereign"] + truth["onshore"]) / sum(truth.values())
            )
            assert body["records"] == len(records)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        # The pipeline exits 0 after its last commit; the collector and the API after uvicorn's
        # graceful shutdown and their own cleanup (they died by the signal uvicorn raises again,
        # exit 143, before tracker.cli._serve noted it).
        assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0]
    finally:
        kill_left(procs)
    core.pool.get().command(f"DROP DATABASE IF EXISTS `{database}`")
