"""The pipeline's processor and writer in one process, without Kafka: where its memory goes.

    python bench/writer.py [--batch 50000] [--batches 200] [--trim] [--dir bench/out/writer]

Synthetic collector-shaped messages (bench/pipeline.py's templates, with the gateway id the
collector would stamp) go through the real `Processor.process_message` and `Writer.write`
into a fresh embedded store, batch after batch, as `tracker pipeline` does after its consumer.
Every 10 batches it prints one JSON line with these fields:
- rows landed and rows per second;
- the process's resident and private (RssAnon) memory;
- the engine's own accounting, `system.metrics` MemoryTracking.

The accounting is needed to tell the engine's memory from the Python batch's (chdb has no
`system.asynchronous_metrics`). `--trim` calls glibc's malloc_trim(0) after every batch. If
private memory falls with it, the growth is freed memory the allocator holds; if not, the
memory is in use.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status_mb(field: str) -> float:
    from bench.api import _rss_mb

    return _rss_mb(os.getpid(), field)


def run(data_dir: Path, batch: int, batches: int, trim: bool) -> None:
    from bench.pipeline import ID_MARK, _templates
    from pipeline.processor import Processor
    from pipeline.writer import Writer
    from tracker.classify import Classifier
    from tracker.clickhouse import ClientPool
    from tracker.memory import tune_allocator
    from tracker.migrate import migrate
    from tracker.registry import load, record_version
    from tracker.settings import CommonSettings

    tune_allocator()  # as `tracker pipeline` does, before the engine starts
    shutil.rmtree(data_dir, ignore_errors=True)
    client = ClientPool(CommonSettings(data_dir=data_dir)).get()
    migrate(client)
    registry, text = load()
    record_version(client, registry, text, author="bench", reason="bench/writer.py")
    processor, writer = Processor(Classifier(registry)), Writer(client)
    agencies = [a.id for a in registry.agencies][:20]
    messages = [
        orjson.dumps([{**item, "gateway_id": "gw-bench"} for item in orjson.loads(body)])
        for body in _templates(agencies, 500, seed=7)
    ]
    libc = ctypes.CDLL("libc.so.6")
    print(json.dumps({"start": True, "rss_mb": round(_status_mb("VmRSS")),
                      "private_mb": round(_status_mb("RssAnon"))}), flush=True)  # fmt: skip
    sequence, began = 0, time.monotonic()
    for n in range(1, batches + 1):
        rows: list[tuple[Any, ...]] = []
        while len(rows) < batch:
            body = messages[sequence % len(messages)].replace(ID_MARK, b"%012d" % sequence)
            sequence += 1
            out = processor.process_message(body)
            if out.rejections:  # the templates are valid: a rejection is a bench bug
                raise SystemExit(f"bench/writer.py: template rejected: {out.rejections[0]}")
            rows += out.rows
        writer.write(rows)
        del rows
        if trim:
            libc.malloc_trim(0)
        if n % 10 == 0 or n == batches:
            tracked = client.query(
                "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
            ).result_rows
            seconds = time.monotonic() - began
            print(json.dumps({
                "batches": n, "rows": n * batch, "rows_per_s": round(n * batch / seconds),
                "rss_mb": round(_status_mb("VmRSS")), "private_mb": round(_status_mb("RssAnon")),
                "engine_tracked_mb": round(int(tracked[0][0]) / 2**20) if tracked else None,
            }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=ROOT / "bench/out/writer")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per write")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each batch")
    args = parser.parse_args()
    if args.batch < 1 or args.batches < 1:
        parser.error("--batch and --batches must be at least 1")
    run(args.dir, args.batch, args.batches, args.trim)


if __name__ == "__main__":
    main()
