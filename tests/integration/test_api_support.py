"""Shared seeding for the API tests (no tests here): a known dataset landed through the real
processor and writer, API keys of every role, and the app built as production builds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from fastapi import FastAPI

from api.app import create_app
from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import demo
from tracker import registry as registry_mod
from tracker.access import Role, add_key
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import Status, UsageRecord
from tracker.registry import Registry
from tracker.settings import ApiSettings, CommonSettings

DEMO_END = date(2026, 6, 30)
DEMO_DAYS = 30
# A separate, quiet window: agency record counts chosen to exercise small-cell suppression.
SMALL_DAY = datetime(2026, 8, 3, tzinfo=UTC)
SMALL_COUNTS = {"in-sbi": 30, "in-cbse": 12, "in-aiims-delhi": 3}


@dataclass
class Seeded:
    registry: Registry
    records: list[UsageRecord]
    keys: dict[str, str]


def small_records() -> list[UsageRecord]:
    out = []
    for agency, n in SMALL_COUNTS.items():
        for i in range(n):
            out.append(UsageRecord(
                record_id=f"small-{agency}-{i}", gateway_id=f"gw-{agency}", agency_id=agency,
                occurred_at=SMALL_DAY + timedelta(hours=9, minutes=i), provider="sarvam",
                model="sarvam-m", request_count=1 + i % 3, input_tokens=100, output_tokens=50,
                cost=Decimal("0.5"), currency="INR", latency_ms=200 + 10 * i,
                status=Status.ok if i % 5 else Status.error,
            ))  # fmt: skip
    return out


def seed(pool: ClientPool) -> Seeded:
    registry, text = registry_mod.load()
    registry_mod.record_version(pool.get(), registry, text, author="test", reason="api tests")
    records = list(demo.generate(registry, days=DEMO_DAYS, end=DEMO_END)) + small_records()
    processor = Processor(Classifier(registry))
    writer = Writer(pool.get())
    for i in range(0, len(records), 5000):
        writer.write(processor.process_records(records[i : i + 5000]).rows)
    client = pool.get()
    keys = {
        "auditor": add_key(client, registry, "test-auditor", Role.auditor)[1],
        "admin": add_key(client, registry, "test-admin", Role.admin)[1],
        "agency": add_key(client, registry, "test-sbi", Role.agency, "in-sbi")[1],
        "agency2": add_key(client, registry, "test-cbse", Role.agency, "in-cbse")[1],
    }
    return Seeded(registry, records, keys)


def api_settings(settings: CommonSettings, **overrides: object) -> ApiSettings:
    values: dict[str, object] = {
        "data_dir": settings.data_dir,
        "clickhouse_database": settings.clickhouse_database,
        "rate_limit_public_per_minute": 1_000_000,
        "rate_limit_key_per_minute": 1_000_000,
        **overrides,
    }
    return ApiSettings.model_validate(values)


def app(pool: ClientPool, settings: CommonSettings, **overrides: object) -> FastAPI:
    return create_app(pool, api_settings(settings, **overrides))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
