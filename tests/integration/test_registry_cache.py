"""The API's cache of the registry in force follows a scheduled change as it comes due, and a
change recorded by its own process at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from tracker import registry_store
from tracker.clickhouse import ClientPool
from tracker.registry import load, parse


def test_answers_name_the_version_in_force_once_a_scheduled_change_comes_due(
    pool: ClientPool,
) -> None:
    """Found in review: /v1/capacity named the version of the API's one-minute cache, 46 s
    after a scheduled change had come into force."""
    client = pool.get()
    a, a_text = load()
    data = yaml.safe_load(a_text)
    data["country_name"] = "India (scheduled)"
    b_text = yaml.safe_dump(data, sort_keys=False)
    b = parse(b_text, "b.yaml")
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    with TestClient(create_app(pool)) as api:

        def version() -> str:
            answer = api.get("/v1/capacity")
            assert answer.status_code == 200, answer.text
            return str(answer.json()["registry_version"])

        assert version() == a.version
        due = datetime.now(UTC) + timedelta(seconds=1.5)
        registry_store.activate(client, b, b_text, author="t", reason="later", source="t",
                                effective_from=due)  # fmt: skip
        assert version() == a.version  # scheduled, not yet due
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.1)
        assert version() == b.version
        registry_store.activate(client, a, a_text, author="t", reason="back", source="t")
        assert version() == a.version  # recorded by this process: at once
