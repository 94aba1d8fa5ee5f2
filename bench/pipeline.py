"""Sustained end-to-end throughput: collector HTTP -> Kafka -> pipeline -> ClickHouse (issue #4,
item 9), every stage its own process on this machine.

    python bench/pipeline.py run [--seconds 300] [--connections 4] [--batch 1000]

`run` starts, in a temp dir: the project's Kafka broker (deploy/kafka/broker.py), a collector
(`python -m tracker collector`, with a chdb of its own holding only the gateway it
authenticates, registered first with `python -m tracker gateway add`), a pipeline
(`python -m tracker pipeline`, its own chdb, Prometheus on TRACKER_METRICS_PORT) and a load
generator (`python bench/pipeline.py load`) posting pre-encoded JSON batches of `--batch`
records of one agency each (one gateway per agency is how deployments look) over
`--connections` keep-alive connections. Every 5 s it samples accepted records (the load
generator's count of `accepted` in 2xx answers), landed records and lag (the pipeline's
/metrics), and the resident memory and CPU time of each process (/proc). At the end the load
stops, the pipeline drains to lag 0 and exits, and a fresh interpreter counts what landed in
the pipeline's chdb: it must equal what the collector accepted. Prints one JSON document.

`--server`: the deploy's shape, where the pipeline reaches a ClickHouse server through an
`http://` DSN. No ClickHouse server can be installed here, so the pipeline's engine runs in a
process of its own behind tests/integration/chdb_http.py (the same chdb engine), sampled as
"engine"; the pipeline process then holds no engine. `--members N` (with --server) runs N
pipeline processes in one consumer group on that one store, as the deploy scales out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.integration.chdb_http, for --server
PY = sys.executable
BROKER = ROOT / "deploy" / "kafka" / "broker.py"
SAMPLE_SECONDS = 5.0
ID_MARK = b"QQQQQQQQQQQQ"  # 12 bytes in each record_id, replaced by a batch number per post


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds user+system) of a live process; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(match[1]) / 1024 if match else 0.0), (int(stat[11]) + int(stat[12])) / ticks


# --- load generator (its own process) ------------------------------------------------------


def _templates(agencies: list[str], batch: int, seed: int) -> list[bytes]:
    """One pre-encoded body per agency; record ids carry ID_MARK, replaced per post."""
    from tracker import demo

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    bodies = []
    for agency in agencies:
        routes = rng.sample(demo.ROUTES, 4)
        items = []
        for i in range(batch):
            route = routes[i % len(routes)]
            tokens_in, tokens_out = rng.randint(100, 3000), rng.randint(20, 900)
            item: dict[str, Any] = {
                "record_id": f"{agency}-{ID_MARK.decode()}-{i:05d}",
                "agency_id": agency,
                "occurred_at": (now - timedelta(seconds=rng.randint(0, 86_400))).isoformat(),
                "provider": route.provider, "model": route.model,
                "input_tokens": tokens_in, "output_tokens": tokens_out,
                "cost": f"{(tokens_in + tokens_out) / 1000 * route.price_per_1k_tokens:.6f}",
                "currency": route.currency, "latency_ms": rng.randint(200, 3000),
                "status": "error" if rng.random() < 0.02 else "ok", "use_case": "bench",
            }  # fmt: skip
            if route.region:
                item["region"] = route.region
            if route.host:
                item["endpoint_host"] = route.host
            items.append(item)
        bodies.append(orjson.dumps(items))
    return bodies


def _anon_mb(pid: int) -> float:
    """Private (anonymous) resident memory: RSS minus the file-backed pages, which here are
    mostly the chdb engine's shared library, mapped read-only and shared between processes."""
    try:
        match = re.search(r"RssAnon:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0.0
    return int(match[1]) / 1024 if match else 0.0


def load(
    url: str, key: str, agencies: list[str], batch: int, connections: int, out: Path,
    rate: float = 0.0,
) -> None:  # fmt: skip
    """Post until SIGTERM; write {posted, accepted, failed} to `out` twice a second. With
    `rate` > 0, post n is not sent before start + n * batch / rate: an offered load of `rate`
    records/s (less if the collector cannot keep up)."""
    from urllib.parse import urlsplit

    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port
    templates = _templates(agencies, batch, seed=7)
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"posted": 0, "accepted": 0, "failed": 0, "batches": 0}
    sequence = iter(range(10**12))  # next() on a range iterator is atomic under the GIL
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    began = time.monotonic()

    def worker() -> None:
        conn = HTTPConnection(host, port, timeout=120)
        while not stop.is_set():
            n = next(sequence)
            if rate > 0:
                due = began + n * batch / rate
                if stop.wait(max(0.0, due - time.monotonic())):
                    break
            body = templates[n % len(templates)].replace(ID_MARK, b"%012d" % n)
            try:
                conn.request("POST", "/v1/records", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except OSError:
                conn.close()
                conn = HTTPConnection(host, port, timeout=120)
                with lock:
                    counts["failed"] += batch
                time.sleep(0.5)
                continue
            with lock:
                counts["posted"] += batch
                counts["batches"] += 1
                if response.status == 200:
                    counts["accepted"] += int(orjson.loads(payload)["accepted"])
                else:
                    counts["failed"] += batch
            if response.status >= 500:
                time.sleep(float(response.getheader("Retry-After") or 1))
        conn.close()

    def write() -> None:
        with lock:
            text = json.dumps(counts)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    while not stop.is_set():
        write()
        stop.wait(0.5)
    for t in threads:
        t.join()
    write()


# --- orchestration --------------------------------------------------------------------------


def _metrics(port: int) -> tuple[float, float]:
    """(landed records, lag in messages summed over partitions) from the pipeline's /metrics."""
    conn = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    landed = re.search(r'^tracker_pipeline_records_total\{outcome="landed"\} (\S+)$', text, re.M)
    lags = re.findall(r"^tracker_pipeline_lag\{[^}]*\} (\S+)$", text, re.M)
    return (float(landed[1]) if landed else 0.0), sum(float(x) for x in lags)


def _wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"nothing answered on port {port} after {timeout} s")


def _count_landed(data_dir: Path, dsn: str | None = None) -> dict[str, int]:
    """Counted by a fresh interpreter: chdb lets only one process open a data dir."""
    dsn = dsn or f"chdb://{data_dir / 'chdb'}"
    code = (
        "import json, clickhouse_connect\n"
        f"c = clickhouse_connect.get_client(dsn='{dsn}', database='tracker')\n"
        "r = c.query('SELECT (SELECT count() FROM usage_raw), (SELECT uniqExact(gateway_id, "
        "record_id) FROM usage_raw), (SELECT sum(records) FROM usage_hourly), "
        "(SELECT count() FROM usage_rejects)').result_rows[0]\n"
        "print(json.dumps(dict(zip(['raw', 'raw_unique_keys', 'rollup_records', 'rejects'], "
        "[int(x) for x in r]))))\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tracker.registry import load as load_registry

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    agencies = [a.id for a in load_registry()[0].agencies]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    members = [f"pipeline{i + 1}" if i else "pipeline" for i in range(args.members)]
    names = ["collector", *members, "load"] + (["engine"] if args.server else [])
    logs = {name: (work / f"{name}.log").open("wb") for name in names}
    result: dict[str, Any] = {
        "seconds": args.seconds, "connections": args.connections, "batch_records": args.batch,
        "offered_rate": args.rate or "unlimited", "server": args.server, "members": args.members,
        "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }  # fmt: skip

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    started_broker = subprocess.run(
        [PY, str(BROKER), "start", "--dir", str(work / "kafka")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    bootstrap = started_broker.stdout.strip()
    broker_pid = int((work / "kafka" / "broker.pid").read_text().split()[0])
    log(f"broker {bootstrap} (pid {broker_pid})")
    base = {**os.environ, "PYTHONPATH": str(ROOT), "TRACKER_KAFKA_BOOTSTRAP": bootstrap,
            "TRACKER_LOG_LEVEL": "WARNING"}  # fmt: skip
    try:
        env_c = {**base, "TRACKER_DATA_DIR": str(work / "collector"), **dict(args.collector_env)}
        added = subprocess.run(
            [PY, "-m", "tracker", "gateway", "add", "bench-gw",
             *[x for a in agencies for x in ("--agency", a)]],
            env=env_c, capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        key = re.search(r"key \(shown once[^)]*\): (\S+)", added)[1]  # type: ignore[index]
        cport = _free_port()
        mports = {name: _free_port() for name in members}
        procs["collector"] = subprocess.Popen(
            [PY, "-m", "tracker", "collector", "--port", str(cport)],
            env=env_c, cwd=ROOT, stdout=logs["collector"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        env_p = {**base, "TRACKER_DATA_DIR": str(work / "pipeline"), **dict(args.pipeline_env)}
        if args.server:
            from tests.integration import chdb_http

            (work / "pipeline").mkdir(exist_ok=True)
            procs["engine"], dsn = chdb_http.start(str((work / "pipeline" / "chdb").resolve()))
            env_p["TRACKER_CLICKHOUSE_DSN"] = dsn
            # The deploy's one-off migrate job: members starting together must not race it.
            subprocess.run([PY, "-m", "tracker", "migrate"], env=env_p, cwd=ROOT, check=True,
                           stdout=logs["engine"], stderr=subprocess.STDOUT)  # fmt: skip
        for name in members:
            procs[name] = subprocess.Popen(
                [PY, "-m", "tracker", "pipeline"],
                env={**env_p, "TRACKER_METRICS_PORT": str(mports[name])},
                cwd=ROOT, stdout=logs[name], stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_http(cport, "/healthz", 120, procs["collector"])
        for name in members:
            _wait_http(mports[name], "/metrics", 120, procs[name])
        log(
            f"collector :{cport} (pid {procs['collector'].pid}), pipelines "
            + ", ".join(f"{n} :{mports[n]} (pid {procs[n].pid})" for n in members)
        )

        def metrics() -> tuple[float, float]:
            """(landed, lag) summed over the members: each reports its own partitions."""
            got = [_metrics(port) for port in mports.values()]
            return sum(g[0] for g in got), sum(g[1] for g in got)

        counts_file = work / "load.json"
        procs["load"] = subprocess.Popen(
            [PY, __file__, "load", "--url", f"http://127.0.0.1:{cport}", "--key", key,
             "--batch", str(args.batch), "--connections", str(args.connections),
             "--rate", str(args.rate),
             "--out", str(counts_file), "--agencies", ",".join(agencies)],
            env=base, cwd=ROOT, stdout=logs["load"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        pids = {**{name: procs[name].pid for name in members},
                "collector": procs["collector"].pid, "load": procs["load"].pid,
                "broker": broker_pid}  # fmt: skip
        if "engine" in procs:
            pids["engine"] = procs["engine"].pid
        cpu0 = {name: _proc(pid)[1] for name, pid in pids.items()}

        def accepted() -> int:
            try:
                return int(json.loads(counts_file.read_text())["accepted"])
            except (OSError, ValueError, KeyError):
                return 0

        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        prev = (started, 0, 0.0)
        while time.monotonic() - started < args.seconds:
            time.sleep(SAMPLE_SECONDS)
            now, acc = time.monotonic(), accepted()
            landed, lag = metrics()
            rss = {name: round(_proc(pid)[0]) for name, pid in pids.items()}
            anon = round(_anon_mb(pids["pipeline"]))
            dt = now - prev[0]
            sample = {
                "t": round(now - started), "accepted_per_s": round((acc - prev[1]) / dt),
                "landed_per_s": round((landed - prev[2]) / dt), "backlog_records": acc - landed,
                "lag_messages": lag, "rss_mb": rss, "pipeline_anon_mb": anon,
            }  # fmt: skip
            samples.append(sample)
            log(json.dumps(sample))
            prev = (now, acc, landed)
        elapsed = time.monotonic() - started
        cpu_s = {name: _proc(pid)[1] - cpu0[name] for name, pid in pids.items()}
        cpu = {name: round(seconds / elapsed, 2) for name, seconds in cpu_s.items()}
        window = {"accepted": accepted(), "landed": metrics()[0]}
        # Records per CPU-second of each stage: what a run on a shared machine can still say
        # about cores needed, when the stage got only a slice of the CPUs.
        efficiency = {
            "pipeline": round(window["landed"] / max(sum(cpu_s[n] for n in members), 1e-9)),
            **(
                {"engine": round(window["landed"] / max(cpu_s["engine"], 1e-9))}
                if "engine" in cpu_s
                else {}
            ),
            "collector": round(window["accepted"] / max(cpu_s["collector"], 1e-9)),
            "broker": round(window["accepted"] / max(cpu_s["broker"], 1e-9)),
        }
        procs["load"].send_signal(signal.SIGTERM)
        procs["load"].wait(60)
        total = json.loads(counts_file.read_text())
        log(f"load stopped: {total}")

        drain_started = time.monotonic()
        landed, lag = metrics()
        while (landed < total["accepted"] or lag > 0) and time.monotonic() - drain_started < 600:
            time.sleep(1)
            landed, lag = metrics()
        drain = time.monotonic() - drain_started
        for name in members:
            procs[name].send_signal(signal.SIGTERM)
        for name in members:
            procs[name].wait(120)
        procs["collector"].send_signal(signal.SIGTERM)
        procs["collector"].wait(60)
        steady = samples[1:] or samples  # the first window includes start-up
        result.update({
            "elapsed_s": round(elapsed, 1),
            "load": total,
            "accepted_per_s_mean": round(total["accepted"] / elapsed),
            "landed_per_s_steady_mean": round(
                sum(s["landed_per_s"] for s in steady) / len(steady)),
            "landed_per_s_steady_min": min(s["landed_per_s"] for s in steady),
            "max_lag_messages": max(s["lag_messages"] for s in samples),
            "max_backlog_records": max(s["backlog_records"] for s in samples),
            "max_rss_mb": {n: max(s["rss_mb"][n] for s in samples) for n in pids},
            "max_pipeline_anon_mb": max(s["pipeline_anon_mb"] for s in samples),
            "cpu_cores_used": cpu,
            "records_per_cpu_second": efficiency,
            "in_window": window,
            "drain_seconds": round(drain, 1),
            "landed_metric_at_end": landed,
            "uptime_after": subprocess.run(["uptime"], capture_output=True,
                                           text=True).stdout.strip(),
        })  # fmt: skip
        result["verify"] = _count_landed(work / "pipeline", env_p.get("TRACKER_CLICKHOUSE_DSN"))
        result["verify"]["accepted"] = total["accepted"]
        result["verify"]["equal"] = (
            result["verify"]["raw"] == total["accepted"] == result["verify"]["rollup_records"]
        )
        result["samples"] = samples
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        subprocess.run([PY, str(BROKER), "stop", "--dir", str(work / "kafka")], check=False)
        for f in logs.values():
            f.close()
        result["work_dir"] = str(work)
    return result


def _env_pairs(values: list[str]) -> list[tuple[str, str]]:
    return [tuple(v.split("=", 1)) for v in values]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--batch", type=int, default=1000, help="records per HTTP post")
    p.add_argument("--rate", type=float, default=0, help="offered records/s (0: as fast as "
                   "the collector answers)")  # fmt: skip
    p.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    p.add_argument(
        "--pipeline-env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment of the pipeline, e.g. TRACKER_BATCH_MAX_ROWS=100000",
    )
    p.add_argument("--collector-env", action="append", default=[], metavar="K=V")  # fmt: skip
    p.add_argument(
        "--server",
        action="store_true",
        help="the pipeline reaches its engine through an http:// DSN (see above)",
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="pipeline processes in the group (more than 1 needs --server)",
    )
    g = sub.add_parser("load")
    g.add_argument("--url", required=True)
    g.add_argument("--key", required=True)
    g.add_argument("--agencies", required=True)
    g.add_argument("--batch", type=int, default=1000)
    g.add_argument("--rate", type=float, default=0)
    g.add_argument("--connections", type=int, default=4)
    g.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "load":
        load(args.url, args.key, args.agencies.split(","), args.batch, args.connections, args.out,
             args.rate)  # fmt: skip
        return
    if args.members < 1 or (args.members > 1 and not args.server):
        parser.error("--members must be at least 1, and more than 1 needs --server")
    args.pipeline_env = _env_pairs(args.pipeline_env)
    args.collector_env = _env_pairs(args.collector_env)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
