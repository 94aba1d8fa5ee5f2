"""All source-format push endpoints, for the collector app and the embedded app alike."""

from __future__ import annotations

from fastapi import APIRouter

from collector.routes_common import Limits
from collector.routes_formats import formats_router
from collector.routes_otlp import otlp_router
from collector.sink import Sink


def source_routers(sink: Sink, *, max_body_bytes: int, max_batch_records: int) -> list[APIRouter]:
    limits = Limits(max_body_bytes=max_body_bytes, max_batch_records=max_batch_records)
    return [otlp_router(sink, limits), formats_router(sink, limits)]
