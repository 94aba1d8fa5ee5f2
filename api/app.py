"""The read API (`tracker api`), also mounted by the embedded `tracker up`."""

from __future__ import annotations

from fastapi import FastAPI

from api.routes import capacity, health, outlook, share
from tracker import __version__
from tracker.clickhouse import ClientPool


def create_app(pool: ClientPool) -> FastAPI:
    app = FastAPI(
        title="Inference Sovereignty Tracker",
        version=__version__,
        description="Domestic inference share of the public sector, from metered gateway usage.",
    )
    app.state.clickhouse = pool
    app.include_router(share.router)
    app.include_router(capacity.router)
    app.include_router(outlook.router)
    app.include_router(health.router)
    return app
