"""Collector throughput: records per second from HTTP batches to Kafka acknowledgement, for ONE
collector process on this machine (issue #3, item 9).

    python bench/collector.py run [--seconds 60] [--clients 8] [--batch 1000] [--dir DIR]

`run` starts, in a temp dir (or --dir): the project's Kafka broker (deploy/kafka/broker.py,
imported by path), then `serve` in a child process: the collector app as `tracker collector`
builds it (tracker.cli.wiring.collector_app, KafkaSink with acks=all behind the spool) under
uvicorn on 127.0.0.1, with a chdb of its own (migrated, one gateway registered) for gateway
authentication. The load generator is a third process (`load`): `--clients` threads, each with
a keep-alive connection, posting pre-encoded JSON batches of `--batch` records of one agency
to /v1/records for `--seconds`. A 2xx answer means Kafka acknowledged every record (the
collector answers only after the producer's futures resolved), so records/s accepted is the
HTTP -> Kafka-ack rate. Reported: records/s, requests/s, p50/p95/p99 request latency, the
collector's CPU seconds per second (from /proc), and the check that the topic holds exactly
accepted / records-per-message messages (end offsets), each full (sampled and decoded).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATABASE = "bench_collector"


def _broker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kafka_broker", ROOT / "deploy/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settings(data_dir: Path, bootstrap: str, topic: str) -> Any:
    from tracker.settings import CollectorSettings

    return CollectorSettings(
        data_dir=data_dir,
        clickhouse_database=DATABASE,
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
        kafka_dlq_topic=topic + ".dlq",
    )


# -- serve: the collector process ----------------------------------------------------------------


def serve(data_dir: Path, bootstrap: str, topic: str, port: int, gc_freeze: bool = True) -> None:
    import gc

    import uvicorn

    from tracker import registry as registry_mod
    from tracker.cli.wiring import collector_app
    from tracker.clickhouse import ClientPool
    from tracker.gateways import add
    from tracker.migrate import migrate

    settings = _settings(data_dir, bootstrap, topic)
    pool = ClientPool(settings)
    client = pool.get()
    migrate(client)
    registry, _ = registry_mod.load(settings.registry_path)
    agencies = sorted(a.id for a in registry.agencies)
    _, key = add(client, registry, f"bench-{uuid.uuid4().hex[:6]}", agencies)
    (data_dir / "gateway.json").write_text(json.dumps({"key": key, "agencies": agencies}))
    app, sink = collector_app(settings, client)
    if not gc_freeze:  # A/B: undo collector.app's gc.freeze()
        gc.unfreeze()
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        sink.close()


# -- load: the load generator process ------------------------------------------------------------

PROVIDERS = [("sarvam", "sarvam-m", "api.sarvam.ai", None),
             ("azure_openai", "gpt-4o", "moh-prod.openai.azure.com", "centralindia"),
             ("aws_bedrock", "claude-sonnet-4", "bedrock-runtime.ap-south-1.amazonaws.com",
              "ap-south-1"),
             ("krutrim", "krutrim-2", "cloud.olakrutrim.com", None)]  # fmt: skip


def make_batches(agencies: list[str], batch: int, count: int) -> list[bytes]:
    """`count` pre-encoded bodies of `batch` records, each of one agency (one gateway per
    agency is how deployments look), with every field a gateway usually fills."""
    bodies = []
    for b in range(count):
        agency = agencies[b % len(agencies)]
        records = []
        for i in range(batch):
            provider, model, host, region = PROVIDERS[(b + i) % len(PROVIDERS)]
            n = b * batch + i
            record: dict[str, Any] = {
                "record_id": f"chatcmpl-bench-{n:012d}",
                "agency_id": agency,
                "occurred_at": f"2026-11-23T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:"
                f"{n % 60:02d}.{n % 1000:03d}Z",
                "provider": provider,
                "model": model,
                "operation": "chat" if i % 10 else "embeddings",
                "endpoint_host": host,
                "request_count": 1,
                "input_tokens": 200 + n % 900,
                "output_tokens": 40 + n % 300,
                "cost": f"{(n % 1000) / 100000:.5f}",
                "currency": "INR",
                "latency_ms": 300 + n % 2000,
                "status": "error" if n % 50 == 0 else "ok",
                "use_case": ("health", "tax", "education", "legal")[n % 4],
            }
            if region:
                record["region"] = region
            records.append(record)
        bodies.append(orjson.dumps(records))
    return bodies


def load(port: int, key: str, agencies: list[str], seconds: float, clients: int,
         batch: int) -> dict[str, Any]:  # fmt: skip
    bodies = make_batches(agencies, batch, 64)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"accepted": 0, "requests_2xx": 0, "non_2xx": 0, "errors": 0}
    statuses: dict[int, int] = {}

    def post(conn: HTTPConnection, body: bytes) -> tuple[int, int]:
        conn.request("POST", "/v1/records", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        accepted = orjson.loads(data).get("accepted", 0) if response.status < 300 else 0
        return response.status, int(accepted)

    # Warm up (first requests authenticate against chdb, open producer connections), then go.
    warm = HTTPConnection("127.0.0.1", port, timeout=60)
    warm_accepted = sum(post(warm, bodies[i])[1] for i in range(4))
    warm.close()
    start = time.perf_counter()
    deadline = start + seconds

    def worker(index: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        accepted = ok = bad = errors = 0
        n = index
        while time.perf_counter() < deadline:
            body = bodies[n % len(bodies)]
            n += clients
            t = time.perf_counter()
            try:
                status, count = post(conn, body)
            except OSError:
                errors += 1
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append((time.perf_counter() - t) * 1000)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                ok += 1
                accepted += count
            else:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            totals["accepted"] += accepted
            totals["requests_2xx"] += ok
            totals["non_2xx"] += bad
            totals["errors"] += errors

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "seconds": round(elapsed, 2),
        "clients": clients,
        "batch_records": batch,
        "body_bytes": len(bodies[0]),
        "records_accepted": totals["accepted"],
        "records_per_s": round(totals["accepted"] / elapsed),
        "requests_per_s": round(totals["requests_2xx"] / elapsed, 1),
        "latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)},
        "non_2xx": totals["non_2xx"],
        "connection_errors": totals["errors"],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "warmup_records_accepted": warm_accepted,
    }


# -- run: the orchestrator ---------------------------------------------------------------------


def _topic_messages(bootstrap: str, topic: str) -> tuple[int, list[int]]:
    """Messages in the topic (end - beginning offsets), and the record count of the last
    message of each non-empty partition (decoded)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        begin, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        total = sum(end[tp] - begin[tp] for tp in parts)
        sizes = []
        for tp in parts:
            if end[tp] > begin[tp]:
                consumer.assign([tp])
                consumer.seek(tp, end[tp] - 1)
                for _ in range(20):
                    polled = consumer.poll(timeout_ms=500, max_records=1).get(tp)
                    if polled:
                        sizes.append(len(orjson.loads(polled[0].value)))
                        break
        return total, sizes
    finally:
        consumer.close()


def _load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _profile_summary(raw: Path, top: int = 15) -> dict[str, Any]:
    """Inclusive share of GIL-holding samples per frame, from `py-spy record -f raw`."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ours = {f: n for f, n in inclusive.items() if "collector/" in f or "contract.py" in f
            or "kafka/producer" in f or "h11_impl" in f}  # fmt: skip
    ranked = sorted(ours.items(), key=lambda kv: -kv[1])[:top]
    return {"gil_samples": total,
            "inclusive_pct": {f: round(100 * n / max(total, 1), 1) for f, n in ranked}}  # fmt: skip


def run(
    seconds: float,
    clients: int,
    batch: int,
    base: Path | None,
    profile: bool = False,
    gc_freeze: bool = True,
) -> dict[str, Any]:
    from tracker.settings import KafkaSettings

    per_message = KafkaSettings().kafka_records_per_message
    broker = _broker()
    work = Path(tempfile.mkdtemp(prefix="bench-collector-", dir=base))
    kafka_dir, data_dir = work / "kafka", work / "collector"
    data_dir.mkdir(parents=True)
    bootstrap = str(broker.start(kafka_dir))
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    result: dict[str, Any] = {"load_avg_before": _load_avg(), "gc_freeze": gc_freeze}
    server = subprocess.Popen([sys.executable, __file__, "serve", "--dir", str(data_dir),
                               "--bootstrap", bootstrap, "--topic", topic,
                               "--port", str(port),
                               *([] if gc_freeze else ["--no-gc-freeze"])])  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError("the collector exited at start")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the collector did not start") from None
                time.sleep(0.2)
        gateway = json.loads((data_dir / "gateway.json").read_text())
        cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
        spy = None
        if profile:  # py-spy (installed globally): only the thread holding the GIL
            spy_seconds = str(int(min(seconds * 0.8, 60)))
            spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "--gil", "-r",
                                    "200", "-d", spy_seconds, "-f", "raw", "-o",
                                    str(work / "py-spy.txt")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        loader = subprocess.run(
            [sys.executable, __file__, "load", "--port", str(port), "--seconds", str(seconds),
             "--clients", str(clients), "--batch", str(batch)],
            input=json.dumps(gateway), capture_output=True, text=True, check=True,
        )  # fmt: skip
        cpu1, t1 = _cpu_seconds(server.pid), time.monotonic()
        result.update(json.loads(loader.stdout))
        if spy is not None:
            spy.wait(120)
            result["profile"] = _profile_summary(work / "py-spy.txt")
        result["collector_cpu_per_s"] = round((cpu1 - cpu0) / (t1 - t0), 2)
        result["records_per_collector_cpu_s"] = round(
            result["records_accepted"] / max(cpu1 - cpu0, 1e-9)
        )
        result["load_avg_after"] = _load_avg()
        accepted = result["records_accepted"] + result["warmup_records_accepted"]
        # Everything was acknowledged before its 2xx; a spooled batch (Kafka slow) would
        # reach the topic a little later, so allow the drain a moment.
        expected_messages = -(-batch // per_message) * (accepted // batch)
        for _ in range(60):
            messages, sizes = _topic_messages(bootstrap, topic)
            if messages >= expected_messages:
                break
            time.sleep(1)
        spool = data_dir / "spool"
        result["check"] = {
            "records_accepted_incl_warmup": accepted,
            "records_per_message": per_message,
            "topic_messages": messages,
            "expected_messages": expected_messages,
            "last_message_sizes": sizes,
            # Segments are written only when Kafka did not acknowledge in time.
            "spool_segment_bytes": sum(p.stat().st_size for p in spool.glob("seg-*.log")),
            "ok": messages == expected_messages
            and batch % per_message == 0
            and all(s == per_message for s in sizes),
        }
    finally:
        server.terminate()
        server.wait(60)
        broker.stop(kafka_dir)
    result["work_dir"] = str(work)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="broker + collector + load; prints JSON")
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument("--clients", type=int, default=8)
    r.add_argument("--batch", type=int, default=1000)
    r.add_argument("--dir", type=Path, default=None, help="parent of the temp work dir")
    r.add_argument("--profile", action="store_true", help="py-spy the collector meanwhile")
    s = sub.add_parser("serve", help="(internal) the collector process")
    for p in (r, s):
        p.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                       help="A/B: undo the collector's gc.freeze() at start")  # fmt: skip
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--bootstrap", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--port", type=int, required=True)
    ld = sub.add_parser("load", help="(internal) the load generator; gateway JSON on stdin")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--seconds", type=float, required=True)
    ld.add_argument("--clients", type=int, required=True)
    ld.add_argument("--batch", type=int, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.dir, args.bootstrap, args.topic, args.port, args.gc_freeze)
    elif args.command == "load":
        gateway = json.loads(sys.stdin.read())
        print(json.dumps(load(args.port, gateway["key"], gateway["agencies"], args.seconds,
                              args.clients, args.batch)))  # fmt: skip
    else:
        result = run(args.seconds, args.clients, args.batch, args.dir, args.profile, args.gc_freeze)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
