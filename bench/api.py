"""Read-API benchmark: headline latency and throughput, a filtered one-day auditor page, and the
server's memory while it streams a large export.

    python bench/api.py run --rows 100000000 [--dir bench/out/chdb-100m]

Three processes, because chdb allows one process per data directory: `generate` lands synthetic
records (SQL INSERT ... SELECT from numbers(), spread evenly over two years ending now, every
registered agency and the demo's provider routes with their real classification) and builds the
hourly rollup with the writer's own rollup SQL; `serve` runs the API under uvicorn; `run` does
both and measures from outside with ApacheBench (`ab`, apt package apache2-utils) and httpx,
sampling the server's resident memory from /proc. Results are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MONTH = timedelta(days=31)


def _settings_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "TRACKER_DATA_DIR": str(data_dir), "TRACKER_CLICKHOUSE_DATABASE": "bench"}


def generate(data_dir: Path, rows: int) -> None:
    from tracker import demo, rollups
    from tracker.access import Role, add_key
    from tracker.classify import Classifier
    from tracker.clickhouse import ClientPool
    from tracker.migrate import migrate
    from tracker.registry import load, record_version
    from tracker.settings import CommonSettings

    settings = CommonSettings(data_dir=data_dir, clickhouse_database="bench")
    client = ClientPool(settings).get()
    migrate(client)
    registry, text = load()
    record_version(client, registry, text, author="bench", reason="bench")
    have = int(client.query("SELECT count() FROM usage_raw").result_rows[0][0])
    if have >= rows:
        print(f"generate: {have} rows already present", flush=True)
    else:
        classifier = Classifier(registry)
        routes = []
        for r in demo.ROUTES:
            c = classifier.classify(r.provider, r.region, r.host)
            routes.append((r.provider, r.model, r.host or "", r.region or "", c.tier.value,
                           c.facility_id, c.facility_country, c.operator, c.rule, r.currency,
                           float(r.latency_ms), r.wh_per_1k_tokens or 0.0))  # fmt: skip
        agencies = [(a.id, a.sector, a.channel) for a in registry.agencies]
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=730)
        span_ms = int((end - start).total_seconds() * 1000)
        chunk = 5_000_000
        t0 = time.monotonic()
        for offset in range(have, rows, chunk):
            n = min(chunk, rows - offset)
            # number -> time rises with number (records arrive in time order); agency and route
            # are hashed so every hour holds every agency and most routes.
            client.command(
                f"""
INSERT INTO usage_raw (record_id, gateway_id, agency_id, occurred_at, provider, model, operation,
    endpoint_host, region, request_count, input_tokens, output_tokens, cost, currency,
    cost_reporting, cost_converted, latency_ms, status, energy_wh, use_case, schema_version, tier,
    facility_id, facility_country, operator, sector, channel, classification_rule,
    registry_version, source_partition, source_offset, batch_id)
SELECT
    concat('b', toString(n)), concat('gw-', ag.1), ag.1,
    toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')
        + toIntervalMillisecond(intDiv(n * {span_ms}, {rows})),
    rt.1, rt.2, 'chat', rt.3, rt.4, 1 + n % 5, 200 + n % 700, 50 + n % 300,
    toDecimal128((250 + n % 1000) / 100000, 9), rt.10,
    toDecimal128((250 + n % 1000) / 100000 * if(rt.10 = 'INR', 1, 84), 9), 1,
    toUInt32(rt.11 * (0.7 + (cityHash64(n, 3) % 600) / 1000)),
    if(cityHash64(n, 4) % 50 = 0, 'error', 'ok'),
    if(rt.12 > 0, rt.12 * (250 + n % 1000) / 1000, NULL), ag.2, 1, rt.5, rt.6, rt.7, rt.8,
    ag.2, ag.3, rt.9, '{registry.version}', -1, -1, intDiv(n, 100000) + 1
FROM (
    SELECT number + {offset} AS n,
        {agencies!r}[1 + cityHash64(number + {offset}, 1) % {len(agencies)}] AS ag,
        {routes!r}[1 + cityHash64(number + {offset}, 2) % {len(routes)}] AS rt
    FROM numbers({n})
)""",
                settings={"max_insert_threads": 2},
            )
            print(f"generate: {offset + n} rows ({time.monotonic() - t0:.0f} s)", flush=True)
        # The writer's own rollup statements, over a month of raw rows at a time.
        where = "WHERE batch_id = {b:UInt64}"
        for table, rollup in (("usage_hourly", rollups.HOURLY_FROM_BATCH),
                              ("usage_daily", rollups.DAILY_FROM_BATCH)):  # fmt: skip
            assert where in rollup, "the writer's rollup SQL changed shape; update the bench"
            client.command(f"TRUNCATE TABLE {table}")
            month = start.replace(day=1)
            while month < end + timedelta(hours=1):
                nxt = (month + MONTH).replace(day=1)
                client.command(rollup.replace(
                    where,
                    f"WHERE occurred_at >= '{month:%Y-%m-%d}' AND occurred_at < '{nxt:%Y-%m-%d}'",
                ))  # fmt: skip
                month = nxt
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        print(f"generate: rollup built ({time.monotonic() - t0:.0f} s)", flush=True)
    keyfile = data_dir / "auditor.key"
    if not keyfile.exists():
        name = f"bench-{int(time.time())}"
        keyfile.write_text(add_key(client, registry, name, Role.auditor)[1])
    stats = client.query(
        "SELECT (SELECT count() FROM usage_raw), (SELECT count() FROM usage_hourly), "
        "(SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'bench' AND active)"
    ).result_rows[0]
    print(json.dumps({"raw_rows": stats[0], "rollup_rows": stats[1], "bytes": stats[2]}))


def serve(data_dir: Path, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from tracker.clickhouse import ClientPool
    from tracker.settings import ApiSettings

    settings = ApiSettings(data_dir=data_dir, clickhouse_database="bench")
    uvicorn.run(create_app(ClientPool(settings), settings), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory; field RssAnon: the private part, without the file-backed pages (here
    mostly the chdb engine's shared library, mapped read-only and shared between processes)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(field + r":\s+(\d+) kB", text)
    return int(match[1]) / 1024 if match else 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ab(url: str, n: int, c: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["ab", "-q", "-k", "-n", str(n), "-c", str(c)]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out)[1])  # type: ignore[index]
    failed = int(re.search(r"Failed requests:\s+(\d+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    p95 = re.search(r"\n\s+95%\s+(\d+)", out)
    return {"requests_per_s": rps, "failed": failed, "non_2xx": int(non2xx[1]) if non2xx else 0,
            "p95_ms": float(p95[1]) if p95 else -1}  # fmt: skip


def run(
    data_dir: Path, rows: int, export_rows: int, cache_seconds: float, public_cache: bool
) -> dict[str, Any]:
    import httpx

    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, __file__, "generate", "--dir", str(data_dir), "--rows",
                    str(rows)], check=True, env=_settings_env(data_dir))  # fmt: skip
    key = (data_dir / "auditor.key").read_text().strip()
    port = _free_port()
    env = {**_settings_env(data_dir), "TRACKER_RATE_LIMIT_PUBLIC_PER_MINUTE": "100000000",
           "TRACKER_RATE_LIMIT_KEY_PER_MINUTE": "100000000",
           "TRACKER_PUBLIC_CACHE_SECONDS": str(cache_seconds),
           "TRACKER_PUBLIC_CACHE": str(public_cache).lower()}  # fmt: skip
    server = subprocess.Popen([sys.executable, __file__, "serve", "--dir", str(data_dir),
                               "--port", str(port)], env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"rows": rows, "public_cache_seconds": cache_seconds,
                              "public_cache": public_cache}  # fmt: skip
    try:
        with httpx.Client(base_url=base, timeout=600) as http:
            for _ in range(600):
                try:
                    if http.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            result["rss_idle_mb"] = _rss_mb(server.pid)
            result["rss_anon_idle_mb"] = _rss_mb(server.pid, "RssAnon")

            def timed(
                path: str, params: dict[str, Any], headers: dict[str, str], n: int
            ) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    r = http.get(path, params=params, headers=headers)
                    out.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
                return out

            timed("/v1/share", {}, {}, 20)  # warm caches
            uncached = {"basis": "requests"}  # the headline as the page asks for it
            lat = timed("/v1/share", uncached, {}, 300)
            result["headline_ms"] = {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95)}
            auth = {"Authorization": f"Bearer {key}"}
            day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            page_lat = []
            for i in range(1, 61):
                d = day - timedelta(days=i * 11)
                params = {"from": d.isoformat(), "to": (d + timedelta(days=1)).isoformat(),
                          "tier": "offshore", "status": "ok", "limit": 1000}  # fmt: skip
                page_lat += timed("/v1/usage", params, auth, 1)
            result["auditor_page_ms"] = {"p50": _pct(page_lat, 0.5), "p95": _pct(page_lat, 0.95)}
            result["headline_ab"] = _ab(base + "/v1/share", 5000, 16, {})

            # Export: stream export_rows rows while sampling the server's memory.
            peak = [result["rss_idle_mb"], result["rss_anon_idle_mb"]]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss_mb(server.pid))
                    peak[1] = max(peak[1], _rss_mb(server.pid, "RssAnon"))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for fmt in ("csv", "parquet") if export_rows > 0 else ():
                before = _rss_mb(server.pid)
                before_anon = _rss_mb(server.pid, "RssAnon")
                peak[0], peak[1] = before, before_anon
                t = time.perf_counter()
                size = 0
                export: dict[str, str | int] = {
                    "from": (day - timedelta(days=740)).isoformat(),
                    "to": (day + timedelta(days=2)).isoformat(),
                    "format": fmt,
                    "limit": export_rows,
                }
                with http.stream("GET", "/v1/usage", params=export, headers=auth) as r:
                    assert r.status_code == 200
                    for chunk in r.iter_bytes():
                        size += len(chunk)
                seconds = time.perf_counter() - t
                result[f"export_{fmt}"] = {
                    "rows": export_rows, "bytes": size, "seconds": round(seconds, 1),
                    "rows_per_s": round(export_rows / seconds),
                    "server_rss_before_mb": round(before), "server_rss_peak_mb": round(peak[0]),
                    "server_anon_before_mb": round(before_anon),
                    "server_anon_peak_mb": round(peak[1]),
                }  # fmt: skip
            done.set()
    finally:
        server.terminate()
        server.wait(30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "serve", "run"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, default=ROOT / "bench/out/chdb")
        p.add_argument("--rows", type=int, default=10_000_000)
        p.add_argument("--port", type=int, default=8765)
        p.add_argument("--export-rows", type=int, default=10_000_000)
        p.add_argument("--cache-seconds", type=float, default=0.0)
        p.add_argument(
            "--no-public-cache",
            action="store_true",
            help="TRACKER_PUBLIC_CACHE=false: every headline request runs its query",
        )
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.dir, args.rows)
    elif args.command == "serve":
        serve(args.dir, args.port)
    else:
        result = run(
            args.dir, args.rows, args.export_rows, args.cache_seconds, not args.no_public_cache
        )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
