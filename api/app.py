"""The read API (`tracker api`), also mounted by the embedded `tracker up`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.auth import AccessMiddleware, RateLimiter
from api.params import RegistryCache
from api.routes import audit, capacity, cost, health, meta, outlook, page, providers, series, share
from api.routes import registry as registry_routes
from api.routes import usage as usage_routes
from tracker import __version__
from tracker.access import KeyAuth
from tracker.clickhouse import ClientPool
from tracker.registry import Registry
from tracker.settings import ApiSettings


def create_app(
    pool: ClientPool, settings: ApiSettings | None = None, registry: Registry | None = None
) -> FastAPI:
    # Read at call time from TRACKER_* when the composition root passes none (tracker up).
    settings = settings if settings is not None else ApiSettings()
    app = FastAPI(
        title="Inference Sovereignty Tracker",
        version=__version__,
        description="Domestic inference share of the public sector, from metered gateway usage.",
    )
    app.state.clickhouse = pool
    app.state.api_settings = settings
    app.state.registry_cache = RegistryCache(registry)
    app.add_middleware(
        AccessMiddleware,
        pool=pool,
        keys=KeyAuth(pool.get),
        limiter=RateLimiter(),
        public_per_minute=settings.rate_limit_public_per_minute,
        key_per_minute=settings.rate_limit_key_per_minute,
    )
    app.include_router(share.router)
    app.include_router(capacity.router)
    app.include_router(outlook.router)
    app.include_router(health.router)
    app.include_router(series.router)
    app.include_router(cost.router)
    app.include_router(providers.router)
    app.include_router(usage_routes.router)
    app.include_router(audit.router)
    # Before meta: the effective-dated registry routes answer GET /v1/registry (a superset).
    app.include_router(registry_routes.router)
    app.include_router(meta.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    return app
