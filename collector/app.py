"""The standalone collector's HTTP app (`tracker collector`)."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from collector.bodies import LargeBodyGate
from collector.ingest import ingest_router
from collector.routes_sources import source_routers
from collector.sink import Sink
from tracker import __version__
from tracker.gateways import GatewayAuth


def create_app(
    sink: Sink, gateway_auth: GatewayAuth, *, max_body_bytes: int, max_batch_records: int
) -> FastAPI:
    app = FastAPI(title="Inference Sovereignty Tracker: collector", version=__version__)
    app.state.gateway_auth = gateway_auth
    app.state.max_body_bytes = max_body_bytes  # signature checks read the body under this limit
    app.add_middleware(LargeBodyGate)
    app.include_router(
        ingest_router(sink, max_body_bytes=max_body_bytes, max_batch_records=max_batch_records)
    )
    for router in source_routers(
        sink, max_body_bytes=max_body_bytes, max_batch_records=max_batch_records
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Everything allocated so far (modules, app, clients) lives as long as the process: move it
    # to the permanent generation, so the full collections that each 1,000-record batch's
    # allocations keep triggering do not re-scan it (bench/RESULTS.md: ~10% less CPU per batch).
    gc.freeze()
    # A batch's records stay alive until its answer, and a young collection every 700
    # allocations scanned them again and again (a 1,000-record batch allocates tens of
    # thousands of objects); they are freed by reference counting, not by the collector. Young
    # collections every 20,000 allocations: +12-25% records per collector CPU-second
    # (bench/RESULTS.md, 2026-11-26). Full ones still come after 50 x 100 young ones.
    gc.set_threshold(20_000, 50, 100)
    return app
