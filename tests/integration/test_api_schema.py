"""Property-based conformance: schemathesis generates requests from the app's own OpenAPI
schema and runs them against the app on a seeded database. No 5xx, every response matches its
declared schema, status code and content type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from api.app import create_app
from tests.integration.test_api_support import Seeded, api_settings, bearer, seed
from tracker.clickhouse import ClientPool
from tracker.settings import CommonSettings


@pytest.fixture(scope="module")
def seeded(pool: ClientPool) -> Seeded:
    return seed(pool)


@pytest.fixture(scope="module")
def application(pool: ClientPool, settings: CommonSettings, seeded: Seeded) -> FastAPI:
    return create_app(pool, api_settings(settings), seeded.registry)


@pytest.fixture(scope="module")
def api_schema(application: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", application)


# Every check runs but two. "Valid data is accepted" (ST202): cross-parameter bounds (from
# before to, a range of at most N days) cannot be expressed in OpenAPI, so a schema-valid
# request can rightly be a 422. "Ignored auth": it re-sends through schemathesis' own requests
# transport (see below), and the bearer key is optional by design on public routes; which
# routes need which key is tested in test_api_access.py.
EXCLUDED = [positive_data_acceptance, ignored_auth]
# This issue's routes (#6) must conform; the other issues' routes (capacity, outlook, registry
# history) run in a separate test, reported without failing this one, so their state is visible.
MINE = {"/v1/share", "/v1/timeseries", "/v1/breakdown/{dimension}", "/v1/cost", "/v1/providers",
        "/v1/usage", "/v1/audit", "/v1/freshness", "/v1/me", "/v1/health"}  # fmt: skip


def run_operations(
    api_schema: Any,
    client: TestClient,
    headers: dict[str, str],
    examples: int,
    *,
    others: bool = False,
) -> list[str]:
    """Each operation as its own Hypothesis run (schemathesis' pytest plugin does not support
    this pytest); failures are collected so one report names every failing operation. Requests
    go through Starlette's TestClient: schemathesis' own requests transport breaks when
    urllib3-future (pulled in by litellm) replaces urllib3."""
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if (operation.path not in MINE) != others:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case[Any]) -> None:
            kw = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            response = client.request(
                kw["method"], kw["url"], params=kw.get("params"), headers=kw["headers"]
            )
            case.validate_response(response, headers=headers, excluded_checks=EXCLUDED)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collected, reported below
            failures.append(f"{operation.label}: {exc}")
    return failures


@pytest.fixture(scope="module")
def client(application: FastAPI) -> Iterator[TestClient]:
    # A server error is a 500 answer for schemathesis to report, not an exception in the test.
    with TestClient(application, raise_server_exceptions=False) as c:
        yield c


def test_public_requests_conform(api_schema: Any, client: TestClient) -> None:
    failures = run_operations(api_schema, client, {}, 40)
    assert failures == [], "\n\n".join(failures)


def test_admin_requests_conform(api_schema: Any, client: TestClient, seeded: Seeded) -> None:
    failures = run_operations(api_schema, client, bearer(seeded.keys["admin"]), 40)
    assert failures == [], "\n\n".join(failures)


def test_other_issues_routes_conform(api_schema: Any, client: TestClient) -> None:
    failures = run_operations(api_schema, client, {}, 40, others=True)
    assert failures == [], "\n\n".join(failures)
