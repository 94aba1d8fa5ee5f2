"""A realistic national demo dataset: every registered agency, a dozen providers of all tiers,
daily pre-aggregated usage over two years, with domestic share drifting upward as procurement
shifts. Deterministic for a given seed, so demo figures are reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from tracker.contract import Operation, Status, UsageRecord
from tracker.registry import Registry


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    region: str | None
    host: str | None
    currency: str
    price_per_1k_tokens: float  # in `currency`
    domestic: bool
    latency_ms: int
    wh_per_1k_tokens: float | None


ROUTES: tuple[Route, ...] = (
    Route("sarvam", "sarvam-m", None, "api.sarvam.ai", "INR", 0.35, True, 900, 0.9),
    Route("krutrim", "krutrim-2", None, "cloud.olakrutrim.com", "INR", 0.40, True, 1100, 1.1),
    Route("yotta_shakti", "llama-3.3-70b", None, None, "INR", 0.50, True, 1300, 1.4),
    Route("e2e_cloud", "mistral-7b-instruct", "delhi-ncr", None, "INR", 0.12, True, 600, 0.4),
    Route("bhashini", "indictrans2", None, "dhruva.bhashini.gov.in", "INR", 0.05, True, 400, 0.2),
    Route("azure_openai", "gpt-4o", "centralindia", None, "USD", 0.0075, True, 1200, None),
    Route("aws_bedrock", "claude-3-5-sonnet", "ap-south-1", None, "USD", 0.009, True, 1400, None),
    Route("google_vertex", "gemini-1.5-pro", "asia-south1", None, "USD", 0.006, True, 1000, None),
    Route(
        "oci_genai", "cohere-command-r-plus", "ap-mumbai-1", None, "USD", 0.005, True, 1100, None
    ),
    Route("azure_openai", "gpt-4o", "eastus", None, "USD", 0.0075, False, 1500, None),
    Route("openai", "gpt-4o-mini", None, "api.openai.com", "USD", 0.0004, False, 800, None),
    Route(
        "anthropic", "claude-sonnet-4", None, "api.anthropic.com", "USD", 0.009, False, 1600, None
    ),
    Route("mistral", "mistral-large", None, "api.mistral.ai", "EUR", 0.004, False, 1200, None),
    Route("aws_bedrock", "llama-3-70b", "us-east-1", None, "USD", 0.0027, False, 1300, None),
    # A self-hosted model reported without any location: classified unknown, by design.
    Route("self_hosted", "llama-3.1-8b", None, None, "INR", 0.02, False, 500, None),
)

# Typical daily requests of one agency by channel (order of magnitude, illustrative).
CHANNEL_SCALE = {
    "ministry": 4_000, "department": 6_000, "public_bank": 20_000, "hospital": 3_000,
    "school": 2_500, "university": 3_500, "state_government": 5_000, "public_enterprise": 8_000,
}  # fmt: skip
OPERATION_BY_SECTOR = {"legal": Operation.completion, "identity": Operation.embeddings}


def generate(
    registry: Registry, *, days: int = 730, end: date | None = None, seed: int = 2028
) -> Iterator[UsageRecord]:
    """Yields one record per agency x route x day (request_count > 1: a daily window)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC).date()
    start = end - timedelta(days=days)
    domestic = [r for r in ROUTES if r.domestic]
    foreign = [r for r in ROUTES if not r.domestic]
    for agency in registry.agencies:
        scale = CHANNEL_SCALE.get(agency.channel, 3_000) * rng.uniform(0.3, 2.0)
        routes = rng.sample(domestic, rng.randint(1, 3)) + rng.sample(foreign, rng.randint(1, 3))
        # Each agency starts mostly foreign and moves toward domestic at its own pace.
        shift = rng.uniform(0.1, 0.5)
        growth = rng.uniform(0.5, 2.5)
        operation = OPERATION_BY_SECTOR.get(agency.sector, Operation.chat)
        gateway = f"gw-{agency.id}"
        for day in range(days):
            when = start + timedelta(days=day)
            progress = day / max(days - 1, 1)
            weekly = 0.55 if when.weekday() >= 5 else 1.0
            volume = scale * (1 + growth * progress) * weekly
            dom_weight = min(0.9, 0.2 + shift * progress * 1.5)
            for route in routes:
                pool = sum(1 for r in routes if r.domestic == route.domestic)
                weight = (dom_weight if route.domestic else 1 - dom_weight) / pool
                requests = max(1, int(rng.gauss(volume * weight, volume * weight * 0.1)))
                tokens_in = int(requests * rng.uniform(300, 900))
                tokens_out = int(requests * rng.uniform(100, 400))
                kilo = (tokens_in + tokens_out) / 1000
                errors = int(requests * rng.uniform(0.002, 0.03))
                hour = rng.randint(8, 18)
                occurred = datetime(when.year, when.month, when.day, hour, tzinfo=UTC)
                for status, count in ((Status.ok, requests - errors), (Status.error, errors)):
                    if count <= 0:
                        continue
                    share = count / requests
                    yield UsageRecord(
                        record_id=f"demo-{agency.id}-{route.provider}-{route.model}-"
                        f"{route.region or 'na'}-{when.isoformat()}-{status.value}",
                        gateway_id=gateway,
                        agency_id=agency.id,
                        occurred_at=occurred,
                        provider=route.provider,
                        model=route.model,
                        operation=operation,
                        endpoint_host=route.host,
                        region=route.region,
                        request_count=count,
                        input_tokens=int(tokens_in * share),
                        output_tokens=int(tokens_out * share) if status is Status.ok else 0,
                        cost=Decimal(str(round(kilo * share * route.price_per_1k_tokens, 6))),
                        currency=route.currency,
                        latency_ms=int(route.latency_ms * math.exp(rng.gauss(0, 0.2))),
                        status=status,
                        energy_wh=(
                            round(kilo * share * route.wh_per_1k_tokens, 3)
                            if route.wh_per_1k_tokens
                            else None
                        ),
                        use_case=agency.sector,
                    )
