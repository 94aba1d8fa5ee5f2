"""Integration fixtures: one chdb directory per pytest run (chdb allows one path per process),
a fresh database per test module, a real Kafka broker started by deploy/kafka/broker.py, and,
for the tests of the `http://` DSN path, the engine behind an HTTP front in its own process
(tests/integration/chdb_http.py); and the collector's server the collector and import tests
post to."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import FastAPI

from tests.integration import chdb_http
from tests.integration.stores import server_settings
from tests.integration.test_collector_support import (
    Keys,
    ServerThread,
    make_app,
    make_core,
    make_keys,
)
from tracker.cli.wiring import Core
from tracker.clickhouse import ClientPool
from tracker.migrate import migrate
from tracker.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]


def load_broker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kafka_broker", ROOT / "deploy/kafka/broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-run")


@pytest.fixture(scope="module")
def settings(chdb_dir: Path, request: pytest.FixtureRequest) -> CommonSettings:
    name = request.module.__name__.rsplit(".", 1)[-1]
    database = f"t_{name}_{uuid.uuid4().hex[:8]}"
    return CommonSettings(data_dir=chdb_dir, clickhouse_database=database)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets BOTH_STORES = True runs each of its tests that open the store twice:
    on the embedded engine and through the `http://` DSN path."""
    if getattr(metafunc.module, "BOTH_STORES", False) and "store" in metafunc.fixturenames:
        metafunc.parametrize("store", ["embedded", "server"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def store(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "embedded"))


@pytest.fixture(scope="module")
def pool(
    settings: CommonSettings, store: str, request: pytest.FixtureRequest
) -> Iterator[ClientPool]:
    if store == "server":
        settings = server_settings(settings, request.getfixturevalue("server_dsn"))
    p = ClientPool(settings)
    migrate(p.get())
    yield p
    p.get().command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `http://` DSN: the engine in a process of its own, as a ClickHouse server would be."""
    proc, dsn = chdb_http.start(str(tmp_path_factory.mktemp("chdb-server") / "store"))
    try:
        yield dsn
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def broker_module() -> ModuleType:
    return load_broker_module()


@pytest.fixture(scope="session")
def kafka_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kafka")


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_module: ModuleType, kafka_dir: Path) -> Iterator[str]:
    """A real single-node KRaft broker on 127.0.0.1 for the whole run."""
    bootstrap = str(broker_module.start(kafka_dir))
    os.environ.setdefault("TRACKER_TEST_KAFKA", bootstrap)
    try:
        yield bootstrap
    finally:
        broker_module.stop(kafka_dir)


# The collector's server, shared by the collector and import test modules: the embedded app on
# the module's database and two registered gateways, served by a real uvicorn on 127.0.0.1. A
# module that needs another shape (a smaller body limit, signed gateways made before the first
# request) defines its own fixture of the same name, which takes precedence over these.


@pytest.fixture(scope="module")
def core(pool: ClientPool) -> Core:
    return make_core(pool)


@pytest.fixture(scope="module")
def keys(core: Core) -> Keys:
    return make_keys(core)


@pytest.fixture(scope="module")
def app(settings: CommonSettings, core: Core) -> FastAPI:
    return make_app(settings, core)


@pytest.fixture(scope="module")
def url(app: FastAPI) -> Iterator[str]:
    with ServerThread(app) as base:
        yield base
