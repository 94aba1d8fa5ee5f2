"""`GET /v1/health`: liveness plus whether ClickHouse answers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ClickHouse

router = APIRouter(tags=["health"])


# HEAD too, for monitors that probe so (405 before; found in review); the status is the same.
# Out of the schema: one route with two methods gave OpenAPI one operation id twice.
@router.get("/v1/health")
@router.head("/v1/health", include_in_schema=False)
def health(client: ClickHouse) -> JSONResponse:
    try:
        client.query("SELECT 1")
    except Exception as exc:  # any storage failure means "not ready", reported, not raised
        return JSONResponse({"status": "degraded", "clickhouse": type(exc).__name__}, 503)
    return JSONResponse({"status": "ok", "clickhouse": "ok"})
