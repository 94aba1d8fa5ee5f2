"""Headline latency over 100 million raw usage records (issue #4, item 5).

    python bench/headline.py [--rows 100000000] [--runs 200] [--dir DIR] [--keep]

Records are generated inside ClickHouse (`INSERT INTO usage_raw SELECT ... FROM numbers(N)`),
never pushed through Python, then rolled up into usage_hourly with the writer's own rollup SQL
(tracker/rollups.py, its batch filter swapped for one month at a time).
The headline is then timed through `tracker.metrics.headline` -- the function the API calls --
by requests and tokens, national and for one agency, over the last 30 days and two years.

Distribution (deterministic, seed 2028, shaped like tracker/demo.py): the 40 agencies of the
shipped registry with channel-sized volumes, each using 1-3 domestic and 1-3 foreign routes of
the demo's 15 (all four tiers), the domestic share drifting upward over the two years; records
evenly spread over time (arrival order), 5% pre-aggregated windows, 2% errors.
Prints one JSON document; the chdb directory is a temp dir removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SLOTS = 4096  # weighted lookup table: a record picks (agency, route) by hash % SLOTS
SEED = 2028
DAYS = 730


def _slots(weights: list[float]) -> list[int]:
    """1-based pair indexes, each repeated in proportion to its weight (largest remainder)."""
    total = sum(weights)
    exact = [w / total * SLOTS for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: SLOTS - sum(counts)]:
        counts[i] += 1
    return [i + 1 for i, c in enumerate(counts) for _ in range(c)]


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan(registry: Any, classifier: Any) -> tuple[str, list[int], list[int], str]:
    """(pairs array literal, early slot table, late slot table, largest agency id)."""
    from tracker import demo
    from tracker.contract import Operation

    rng = random.Random(SEED)
    domestic = [r for r in demo.ROUTES if r.domestic]
    foreign = [r for r in demo.ROUTES if not r.domestic]
    pairs: list[str] = []
    early: list[float] = []
    late: list[float] = []
    volume: dict[str, float] = {}
    for agency in registry.agencies:
        scale = demo.CHANNEL_SCALE.get(agency.channel, 3_000) * rng.uniform(0.3, 2.0)
        routes = rng.sample(domestic, rng.randint(1, 3)) + rng.sample(foreign, rng.randint(1, 3))
        shift, growth = rng.uniform(0.1, 0.5), rng.uniform(0.5, 2.5)
        operation = demo.OPERATION_BY_SECTOR.get(agency.sector, Operation.chat).value
        dom_late = min(0.9, 0.2 + shift * 1.5)
        volume[agency.id] = scale * (2 + growth)
        for route in routes:
            c = classifier.classify(route.provider, route.region, route.host)
            pool = sum(1 for r in routes if r.domestic == route.domestic)
            w0 = (0.2 if route.domestic else 0.8) / pool * scale
            w1 = (dom_late if route.domestic else 1 - dom_late) / pool * scale * (1 + growth)
            early.append(w0)
            late.append(w1)
            fields = [agency.id, agency.sector, agency.channel, f"gw-{agency.id}", route.provider,
                      route.model, route.host or "", route.region or "", c.tier.value,
                      c.facility_id, c.facility_country, c.operator, c.rule, route.currency,
                      operation]  # fmt: skip
            numbers = [float(route.price_per_1k_tokens), float(route.latency_ms),
                       float(route.wh_per_1k_tokens or 0.0)]  # fmt: skip
            pairs.append(
                "(" + ", ".join([*map(_sql_str, fields), *(repr(x) for x in numbers)]) + ")"
            )
    biggest = max(volume, key=lambda a: volume[a])
    return "[" + ", ".join(pairs) + "]", _slots(early), _slots(late), biggest


# Tuple positions in the pairs literal (1-based, ClickHouse tuple access).
_INSERT = """
INSERT INTO usage_raw (record_id, gateway_id, agency_id, occurred_at, provider, model, operation,
    endpoint_host, region, request_count, input_tokens, output_tokens, cost, currency,
    cost_reporting, cost_converted, latency_ms, status, energy_wh, use_case, schema_version, tier,
    facility_id, facility_country, operator, sector, channel, classification_rule,
    registry_version, source_partition, source_offset, batch_id)
SELECT
    concat('h', toString(n)), p.4, p.1,
    toDateTime64('{start}', 3, 'UTC') + toIntervalMillisecond(intDiv(n * {span_ms}, {rows})),
    p.5, p.6, p.15, p.7, p.8, requests, tin, tout,
    toDecimal128(kilo * p.16, 9), p.14,
    toDecimal128(kilo * p.16 * multiIf(p.14 = 'INR', {inr}, p.14 = 'USD', {usd}, {eur}), 9), 1,
    toUInt32(p.17 * (0.6 + (cityHash64(n, 7) % 800) / 1000)),
    if(err, 'error', 'ok'),
    if(p.18 > 0, kilo * p.18, NULL), p.2, 1, p.9, p.10, p.11, p.12, p.2, p.3, p.13,
    '{version}', -1, -1, intDiv(n, 100000) + 1
FROM (
    SELECT n, p, err,
        if(cityHash64(n, 6) % 20 = 0, 2 + cityHash64(n, 8) % 60, 1) AS requests,
        requests * (100 + cityHash64(n, 9) % 1500) AS tin,
        if(err, 0, requests * (20 + cityHash64(n, 10) % 600)) AS tout,
        (tin + tout) / 1000 AS kilo
    FROM (
        SELECT number + {offset} AS n,
            cityHash64(n, 4) % 50 = 0 AS err,
            {pairs}[if(cityHash64(n, 5) % 1000000 < intDiv(n * 1000000, {rows}),
                       {late}[1 + cityHash64(n, 1) % {slots}],
                       {early}[1 + cityHash64(n, 1) % {slots}])] AS p
        FROM numbers({chunk})
    )
)
"""


def generate(client: Any, rows: int, chunk: int, log: Any) -> dict[str, Any]:
    from tracker import rollups
    from tracker.classify import Classifier
    from tracker.registry import load, record_version

    registry, text = load()
    record_version(client, registry, text, author="bench", reason="bench/headline.py")
    pairs, early, late, biggest = plan(registry, Classifier(registry))
    end = datetime(2026, 11, 23, tzinfo=UTC)
    start = end - timedelta(days=DAYS)
    span_ms = int((end - start).total_seconds() * 1000)
    fx = {k: float(v) for k, v in registry.fx_to_reporting.items()}
    t0 = time.monotonic()
    for offset in range(0, rows, chunk):
        n = min(chunk, rows - offset)
        sql = _INSERT.format(
            start=f"{start:%Y-%m-%d %H:%M:%S}", span_ms=span_ms, rows=rows, offset=offset,
            chunk=n, pairs=pairs, early=early, late=late, slots=SLOTS, version=registry.version,
            inr=fx["INR"], usd=fx["USD"], eur=fx["EUR"],
        )  # fmt: skip
        client.command(sql, settings={"max_insert_threads": 2, "max_threads": 2})
        log(f"raw: {offset + n:,} rows ({time.monotonic() - t0:.0f} s)")
    raw_seconds = time.monotonic() - t0

    # The writer's rollups, over one month of raw rows at a time instead of one batch.
    where = "WHERE batch_id = {b:UInt64}"
    t1 = time.monotonic()
    for rollup in (rollups.HOURLY_FROM_BATCH, rollups.DAILY_FROM_BATCH):
        if where not in rollup:
            raise SystemExit("the writer's rollup SQL changed shape; update bench/headline.py")
        month = start.replace(day=1, hour=0)
        while month < end:
            nxt = (month + timedelta(days=32)).replace(day=1)
            window = f"WHERE occurred_at >= '{month:%Y-%m-%d}' AND occurred_at < '{nxt:%Y-%m-%d}'"
            client.command(rollup.replace(where, window), settings={"max_threads": 2})
            month = nxt
    rollup_seconds = time.monotonic() - t1
    log(f"rollups: built in {rollup_seconds:.0f} s")
    # One part per partition: each month was inserted once already, so this only merges the
    # few parts a month-boundary insert may have left; cheap, and it is the shape a
    # long-running deployment's background merges converge to.
    t2 = time.monotonic()
    client.command("OPTIMIZE TABLE usage_hourly FINAL")
    client.command("OPTIMIZE TABLE usage_daily FINAL")
    optimize_seconds = time.monotonic() - t2
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "agency_filter": biggest,
        "raw_insert_seconds": round(raw_seconds, 1),
        "raw_insert_rows_per_s": round(rows / raw_seconds),
        "rollup_seconds": round(rollup_seconds, 1),
        "optimize_rollup_seconds": round(optimize_seconds, 1),
        "generation_seconds": round(time.monotonic() - t0, 1),
    }


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def measure(client: Any, info: dict[str, Any], runs: int) -> dict[str, Any]:
    from tracker.metrics import Basis, headline

    end = datetime.fromisoformat(info["end"])
    ranges = {"30d": end - timedelta(days=30), "2y": datetime.fromisoformat(info["start"])}
    scopes: dict[str, dict[str, list[str]]] = {
        "national": {},
        f"agency={info['agency_filter']}": {"agency_id": [info["agency_filter"]]},
    }
    out: dict[str, Any] = {}
    for basis in (Basis.requests, Basis.tokens):
        for scope, filters in scopes.items():
            for label, start in ranges.items():
                for _ in range(5):  # warm: marks and column caches, as a serving API has them
                    headline(client, basis, start, end, filters)
                ms = []
                for _ in range(runs):
                    t = time.perf_counter()
                    share = headline(client, basis, start, end, filters)
                    ms.append((time.perf_counter() - t) * 1000)
                out[f"{basis.value} {scope} {label}"] = {
                    **_stats(ms),
                    "records": share.records,
                    "domestic_share": round(share.domestic_share or 0, 4),
                }
    return out


def sizes(client: Any, data_dir: Path) -> dict[str, Any]:
    rows = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), count() FROM system.parts "
        "WHERE database = currentDatabase() AND active "
        "AND table IN ('usage_raw', 'usage_hourly', 'usage_daily') GROUP BY table"
    ).result_rows
    out: dict[str, Any] = {}
    for table, n, size, parts in rows:
        out[table] = {"rows": int(n), "bytes_on_disk": int(size), "parts": int(parts)}
    du = subprocess.run(["du", "-sb", str(data_dir)], capture_output=True, text=True, check=False)
    out["data_dir_bytes"] = int(du.stdout.split()[0]) if du.returncode == 0 else -1
    return out


def raw_headline_ms(client: Any, info: dict[str, Any]) -> float:
    """The same headline once over usage_raw instead of the rollup, for scale."""
    from tracker.metrics import Basis, share_parameters, share_sql

    sql = share_sql(Basis.requests, {}, source="(SELECT toStartOfHour(occurred_at) AS hour, "
                    "request_count AS requests, tier, cost_reporting, 1 AS records, "
                    "toUInt64(0) AS cost_unconverted FROM usage_raw)")  # fmt: skip
    params = share_parameters(
        datetime.fromisoformat(info["start"]), datetime.fromisoformat(info["end"]), {}
    )
    t = time.perf_counter()
    client.query(sql, parameters=params)
    return round((time.perf_counter() - t) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--chunk", type=int, default=10_000_000, help="rows per INSERT")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="chdb parent dir (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()

    from tracker.clickhouse import ClientPool
    from tracker.migrate import migrate
    from tracker.settings import CommonSettings

    def log(message: str) -> None:
        print(f"headline: {message}", file=sys.stderr, flush=True)

    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="bench-headline-"))
    try:
        settings = CommonSettings(data_dir=data_dir, clickhouse_database="bench")
        client = ClientPool(settings).get()
        migrate(client)
        if int(client.query("SELECT count() FROM usage_raw").result_rows[0][0]):
            raise SystemExit(f"{data_dir} already holds usage; give an empty --dir")
        result: dict[str, Any] = {"rows_requested": args.rows, "runs": args.runs}
        result.update(generate(client, args.rows, args.chunk, log))
        result["sizes"] = sizes(client, data_dir)
        result["merges_running_at_measure"] = int(
            client.query("SELECT count() FROM system.merges").result_rows[0][0]
        )
        log("measuring")
        result["headline_ms"] = measure(client, result, args.runs)
        result["same_headline_over_raw_2y_ms"] = raw_headline_ms(client, result)
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
