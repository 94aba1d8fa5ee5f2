"""`GET /v1/health`: liveness plus whether ClickHouse answers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ClickHouse

router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health(client: ClickHouse) -> JSONResponse:
    try:
        client.query("SELECT 1")
    except Exception as exc:  # any storage failure means "not ready", reported, not raised
        return JSONResponse({"status": "degraded", "clickhouse": type(exc).__name__}, 503)
    return JSONResponse({"status": "ok", "clickhouse": "ok"})
