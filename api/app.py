"""The read API (`tracker api`), also mounted by the embedded `tracker up`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from api.auth import ERRORS, AccessMiddleware, Problem, RateLimiter
from api.cache import TtlCache
from api.headers import SecurityHeaders
from api.params import RegistryCache
from api.routes import (
    audit,
    capacity,
    cost,
    health,
    meta,
    outlook,
    page,
    providers,
    reference,
    series,
    share,
)
from api.routes import registry as registry_routes
from api.routes import usage as usage_routes
from api.strict_query import known_query_only
from api.validation import invalid_request
from tracker import __version__, data_version
from tracker.access import KeyAuth
from tracker.clickhouse import ClientPool
from tracker.metrics import Share
from tracker.registry import Registry
from tracker.settings import ApiSettings, SettingError


def _settings_from_environment() -> ApiSettings:
    """ApiSettings from TRACKER_*, refused by name and reason only: pydantic's own message
    quotes each bad value, and a DSN's is its password (found in review)."""
    try:
        return ApiSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise SettingError(f"bad configuration: {problems}") from None


def create_app(
    pool: ClientPool, settings: ApiSettings | None = None, registry: Registry | None = None
) -> FastAPI:
    # The CLI always passes the settings it checked at start (tracker/cli/wiring.py); read
    # from TRACKER_* here only for tests and tools that build the app alone.
    settings = settings if settings is not None else _settings_from_environment()
    app = FastAPI(
        title="Inference Sovereignty Tracker",
        version=__version__,
        description="Domestic inference share of the public sector, from metered gateway usage.",
        # Not FastAPI's pages: they load Swagger UI / ReDoc from a CDN (api/routes/reference.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.clickhouse = pool
    app.state.api_settings = settings
    app.state.registry_cache = RegistryCache(registry)
    app.state.export_slots = usage_routes.ExportSlots()
    # Exact reuse when every write is in this process (chdb), else the configured TTL.
    exact = pool.embedded and settings.public_cache
    app.state.headline_cache = TtlCache[Share](
        settings.public_cache_seconds if settings.public_cache else 0.0,
        data_version.current if exact else None,
    )
    app.add_middleware(
        AccessMiddleware,
        pool=pool,
        keys=KeyAuth(pool.get),
        limiter=RateLimiter(),
        public_per_minute=settings.rate_limit_public_per_minute,
        key_per_minute=settings.rate_limit_key_per_minute,
    )
    app.add_middleware(SecurityHeaders)  # outside the access checks: their answers too
    app.add_exception_handler(RequestValidationError, invalid_request)
    strict = [Depends(known_query_only)]  # a misspelt filter is a 422, never ignored
    app.include_router(share.router, responses=ERRORS, dependencies=strict)
    app.include_router(capacity.router, responses=ERRORS, dependencies=strict)
    app.include_router(outlook.router, responses=ERRORS, dependencies=strict)
    app.include_router(health.router, responses=ERRORS, dependencies=strict)
    app.include_router(series.router, responses=ERRORS, dependencies=strict)
    app.include_router(cost.router, responses=ERRORS, dependencies=strict)
    app.include_router(providers.router, responses=ERRORS, dependencies=strict)
    app.include_router(usage_routes.router, responses=ERRORS, dependencies=strict)
    app.include_router(audit.router, responses=ERRORS, dependencies=strict)
    # Before meta: the effective-dated registry routes answer GET /v1/registry (a superset).
    app.include_router(registry_routes.router, responses=ERRORS, dependencies=strict)
    app.include_router(meta.router, responses=ERRORS, dependencies=strict)
    app.include_router(page.router)
    app.include_router(reference.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    _document_422(app)
    return app


def _document_422(app: FastAPI) -> None:
    """A 422 is either FastAPI's list of field errors or a route's own reason (a range too
    long, an unknown agency): say so in the schema, so clients and schemathesis expect both."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema()
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    content = operation.get("responses", {}).get("422", {}).get("content", {})
                    body = content.get("application/json")
                    if body is not None:
                        body["schema"] = {
                            "anyOf": [body["schema"], {"$ref": "#/components/schemas/Problem"}]
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override hook
