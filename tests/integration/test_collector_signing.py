"""Signed gateways on the embedded app (uvicorn on 127.0.0.1, landing in chdb): a valid
signature lands, every refusal is a 401 with its reason and lands nothing, the signature covers
the raw (compressed) bytes, and unsigned gateways are unaffected."""

from __future__ import annotations

import gzip
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from collector.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.integration.test_collector_support import (
    SINGLE_AGENCY,
    make_app,
    raw_count,
)
from tracker.cli import app as cli_app
from tracker.cli.wiring import Core
from tracker.clickhouse import ClientPool
from tracker.gateways import Gateway, GatewayAuth, add, list_all, rotate
from tracker.settings import CommonSettings

pytestmark = pytest.mark.integration


class Signed:
    def __init__(self, gateway: Gateway, key: str) -> None:
        assert gateway.signing_secret is not None
        self.id = gateway.gateway_id
        self.key = key
        self.secret = gateway.signing_secret


@pytest.fixture(scope="module")
def signed_pool(core: Core) -> list[Signed]:
    """Signed gateways made before the app's first request: GatewayAuth caches the table for
    5 s, so a gateway added mid-module might not be known yet. Each test takes its own."""
    suffix = uuid.uuid4().hex[:6]
    return [Signed(*add(core.pool.get(), core.registry, f"gw-signed-{suffix}-{i}",
                        [SINGLE_AGENCY], signed=True)) for i in range(16)]  # fmt: skip


@pytest.fixture(scope="module")
def plain(core: Core) -> tuple[Gateway, str]:
    name = f"gw-plain-{uuid.uuid4().hex[:6]}"
    return add(core.pool.get(), core.registry, name, [SINGLE_AGENCY])


@pytest.fixture(scope="module")
def app(
    settings: CommonSettings, core: Core, signed_pool: list[Signed], plain: tuple[Gateway, str]
) -> FastAPI:
    return make_app(settings, core, max_body_bytes=64 * 1024)


@pytest.fixture()
def gw(signed_pool: list[Signed]) -> Signed:
    """A signed gateway of its own per test, so each test counts only its own records."""
    return signed_pool.pop()


def records(n: int, prefix: str = "s") -> bytes:
    return orjson.dumps([{"record_id": f"{prefix}{i}", "agency_id": SINGLE_AGENCY,
                          "provider": "sarvam", "model": "sarvam-m",
                          "occurred_at": "2026-07-01T10:00:00Z"} for i in range(n)])  # fmt: skip


def post(
    url: str, path: str, key: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(f"{url}{path}", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json", **(headers or {})})  # fmt: skip


def refused(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 401, r.text
    detail = r.json()["detail"]
    assert detail.startswith("bad request signature: ") and reason in detail, detail


def test_signed_batch_lands(url: str, gw: Signed, pool: ClientPool) -> None:
    body = records(5)
    r = post(url, "/v1/records", gw.key, body, sign(gw.secret, body))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 5
    assert raw_count(pool, gw.id) == 5


def test_unsigned_request_of_signed_gateway_is_refused(url: str, gw: Signed, pool: ClientPool) -> None:  # fmt: skip
    body = records(3)
    refused(
        post(url, "/v1/records", gw.key, body),
        "missing X-Tracker-Timestamp and X-Tracker-Signature",
    )
    only_ts = {TIMESTAMP_HEADER: str(int(time.time()))}
    refused(post(url, "/v1/records", gw.key, body, only_ts), "missing X-Tracker-Signature")
    # Every push endpoint goes through the same dependency, whoami included.
    refused(post(url, "/v1/litellm", gw.key, b"[]"), "missing")
    refused(post(url, "/v1/gateway/whoami", gw.key, b""), "missing")
    assert raw_count(pool, gw.id) == 0


def test_malformed_headers_are_refused(url: str, gw: Signed, pool: ClientPool) -> None:
    body = records(3)
    good = sign(gw.secret, body)
    bad_ts = {**good, TIMESTAMP_HEADER: "2026-11-23T10:00:00Z"}
    refused(post(url, "/v1/records", gw.key, body, bad_ts), "Unix time in whole seconds")
    bad_sig = {**good, SIGNATURE_HEADER: good[SIGNATURE_HEADER].removeprefix("sha256=")}
    refused(post(url, "/v1/records", gw.key, body, bad_sig), "sha256=<64 hex digits>")
    assert raw_count(pool, gw.id) == 0


def test_expired_and_future_timestamps_are_refused(url: str, gw: Signed, pool: ClientPool) -> None:
    body = records(3)
    old = sign(gw.secret, body, now=time.time() - 301)
    refused(post(url, "/v1/records", gw.key, body, old), "over the 300 s tolerance")
    ahead = sign(gw.secret, body, now=time.time() + 400)
    refused(post(url, "/v1/records", gw.key, body, ahead), "in the future")
    assert raw_count(pool, gw.id) == 0


def test_tampered_body_or_wrong_secret_is_refused(url: str, gw: Signed, pool: ClientPool) -> None:
    body = records(3)
    headers = sign(gw.secret, body)
    tampered = body.replace(b"sarvam-m", b"sarvam-x")
    refused(post(url, "/v1/records", gw.key, tampered, headers), "does not match")
    other = sign("tks_" + "x" * 43, body)
    refused(post(url, "/v1/records", gw.key, body, other), "does not match")
    assert raw_count(pool, gw.id) == 0


def test_replayed_request_is_refused(url: str, gw: Signed, pool: ClientPool) -> None:
    body = records(4, prefix="rp")
    headers = sign(gw.secret, body)
    assert post(url, "/v1/records", gw.key, body, headers).status_code == 200
    refused(post(url, "/v1/records", gw.key, body, headers), "already used")
    assert raw_count(pool, gw.id) == 4
    # A retry signed anew (a later second) goes through, and its records count once.
    time.sleep(1.05)
    r = post(url, "/v1/records", gw.key, body, sign(gw.secret, body))
    assert r.status_code == 200, r.text
    assert raw_count(pool, gw.id) == 4


def test_signature_covers_the_compressed_bytes(url: str, gw: Signed, pool: ClientPool) -> None:
    payload = [{"id": f"chatcmpl-sig-{uuid.uuid4().hex[:8]}", "call_type": "acompletion",
                "model": "sarvam-m", "custom_llm_provider": "sarvam",
                "api_base": "https://api.sarvam.ai/v1", "prompt_tokens": 10,
                "completion_tokens": 5, "startTime": 1782900000.0, "endTime": 1782900001.0,
                "status": "success", "metadata": {}}]  # fmt: skip
    raw = orjson.dumps(payload)
    zipped = gzip.compress(raw)
    gz = {"Content-Encoding": "gzip"}
    # Signed over the decompressed JSON: not what was sent, refused.
    refused(
        post(url, "/v1/litellm", gw.key, zipped, {**gz, **sign(gw.secret, raw)}), "does not match"
    )
    assert raw_count(pool, gw.id) == 0
    r = post(url, "/v1/litellm", gw.key, zipped, {**gz, **sign(gw.secret, zipped)})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert raw_count(pool, gw.id) == 1


def test_signed_whoami_and_events(url: str, gw: Signed, pool: ClientPool) -> None:
    r = post(url, "/v1/gateway/whoami", gw.key, b"", sign(gw.secret, b""))
    assert r.status_code == 200 and r.json()["gateway_id"] == gw.id
    event: dict[str, Any] = {"specversion": "1.0", "id": "evt-sig-1", "source": "//gw/signing",
                             "type": "org.sovereignty-tracker.usage.v1",
                             "time": "2026-07-01T08:00:00Z",
                             "data": {"provider": "sarvam", "model": "sarvam-m"}}  # fmt: skip
    body = orjson.dumps(event)
    ce = {"Content-Type": "application/cloudevents+json"}
    r = post(url, "/v1/events", gw.key, body, {**ce, **sign(gw.secret, body)})
    assert r.status_code == 200, r.text
    assert raw_count(pool, gw.id) == 1
    # Found in review: in binary mode the event's id, agency and time are ce-* headers, which
    # the signature does not cover: rewritten on the way (or replayed to another replica with
    # another id), a signed body landed as records the gateway never sent. A signed gateway
    # sends structured events.
    data = orjson.dumps(event["data"])
    binary = {"ce-specversion": "1.0", "ce-id": "evt-sig-2", "ce-source": "//gw/signing",
              "ce-type": "org.sovereignty-tracker.usage.v1", "ce-time": "2026-07-01T08:00:00Z"}  # fmt: skip
    r = post(url, "/v1/events", gw.key, data, {**binary, **sign(gw.secret, data)})
    assert r.status_code == 400 and "structured" in r.json()["detail"], r.text
    assert raw_count(pool, gw.id) == 1


def test_body_over_limit_is_413_before_verification(url: str, gw: Signed) -> None:
    # The embedded app does not state its limit to the dependency: it bounds the read by the
    # default (16 MiB), and the route then applies the app's own (64 KiB here).
    body = records(1_000)
    assert len(body) > 64 * 1024
    r = post(url, "/v1/records", gw.key, body, sign(gw.secret, body))
    assert r.status_code == 413, r.text


def test_unsigned_gateway_is_unaffected(
    url: str, plain: tuple[Gateway, str], pool: ClientPool
) -> None:
    gateway, key = plain
    assert gateway.signing_secret is None
    body = records(2, prefix="pl")
    assert post(url, "/v1/records", key, body).status_code == 200
    # Signature headers from an unsigned gateway are ignored, even wrong ones.
    junk = {TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "sha256=" + "0" * 64}
    assert post(url, "/v1/records", key, records(2, prefix="pj"), junk).status_code == 200
    assert raw_count(pool, gateway.gateway_id) == 4


def test_secret_is_never_listed_nor_in_repr(core: Core, gw: Signed) -> None:
    found = GatewayAuth(core.pool.get()).authenticate(gw.key)
    assert found is not None and found.signing_secret == gw.secret
    assert gw.secret not in repr(found)
    listed = {g.gateway_id: g for g in list_all(core.pool.get())}
    assert listed[gw.id].signing_secret is None


def _cli_env(settings: CommonSettings) -> dict[str, str]:
    return {"TRACKER_DATA_DIR": str(Path(settings.data_dir)),
            "TRACKER_CLICKHOUSE_DATABASE": settings.clickhouse_database}  # fmt: skip


def _add_signed(runner: CliRunner, env: dict[str, str], name: str) -> tuple[str, str]:
    """`tracker gateway add NAME --signed`: its key and signing secret, as printed once."""
    out = runner.invoke(cli_app, ["gateway", "add", name, "--agency", SINGLE_AGENCY, "--signed"],
                        env=env)  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = dict(line.split(": ", 1) for line in out.output.splitlines() if ": " in line)
    return lines["key (shown once, store it now)"], lines["signing secret (shown once, store it now)"]  # fmt: skip


def test_cli_gateway_add_signed_prints_secret_once(
    settings: CommonSettings, pool: ClientPool, core: Core
) -> None:
    runner, env = CliRunner(), _cli_env(settings)
    name = f"gw-cli-{uuid.uuid4().hex[:6]}"
    key, secret = _add_signed(runner, env, name)
    assert secret.startswith("tks_") and len(secret) > 40
    found = GatewayAuth(core.pool.get()).authenticate(key)
    assert found is not None and found.signing_secret == secret
    listing = runner.invoke(cli_app, ["gateway", "list"], env=env)
    assert name in listing.output and secret not in listing.output
    plain = runner.invoke(cli_app, ["gateway", "add", name + "-u", "--agency", SINGLE_AGENCY],
                          env=env)  # fmt: skip
    assert plain.exit_code == 0 and "signing secret" not in plain.output


def test_cli_gateway_rotate_and_revoke(settings: CommonSettings, core: Core) -> None:
    # Found in review: a gateway key could never be revoked, though docs told operators to
    # retire a leaked one; and a name with a trailing newline passed the name check.
    runner, env = CliRunner(), _cli_env(settings)
    name = f"gw-rot-{uuid.uuid4().hex[:6]}"
    old, secret = _add_signed(runner, env, name)
    rotated = runner.invoke(cli_app, ["gateway", "rotate", name], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = rotated.output.strip().rsplit(": ", 1)[1]
    assert new.startswith("tk_") and new != old
    auth = GatewayAuth(core.pool.get(), ttl_seconds=0)
    assert auth.authenticate(old) is None
    found = auth.authenticate(new)
    assert found is not None and found.gateway_id == name and found.signing_secret == secret
    assert found.agencies == frozenset({SINGLE_AGENCY})
    revoked = runner.invoke(cli_app, ["gateway", "revoke", name], env=env)
    assert revoked.exit_code == 0 and f"gateway {name} revoked" in revoked.output
    assert auth.authenticate(new) is None
    assert name not in runner.invoke(cli_app, ["gateway", "list"], env=env).output
    for again in (["revoke", name], ["rotate", name], ["revoke", "gw-never-added"]):
        refused = runner.invoke(cli_app, ["gateway", *again], env=env)
        assert refused.exit_code == 2 and "no active gateway" in refused.output, refused.output
    newline = runner.invoke(cli_app, ["gateway", "add", name + "-x\n", "--agency", SINGLE_AGENCY],
                            env=env)  # fmt: skip
    assert newline.exit_code == 2 and "gateway name" in newline.output, newline.output
    key_newline = runner.invoke(cli_app, ["key", "add", "k2\n", "--role", "auditor"], env=env)
    assert key_newline.exit_code == 2 and "key name" in key_newline.output, key_newline.output


def test_a_rotated_signing_secret_takes_over_and_the_old_is_refused(
    url: str, gw: Signed, pool: ClientPool, core: Core
) -> None:
    rotated = rotate(core.pool.get(), gw.id, key=False, secret=True)
    assert rotated is not None and rotated.key is None and rotated.signing_secret is not None
    body = records(3, prefix="rot")
    # Collectors follow the table within their cache's seconds (5 s).
    deadline = time.monotonic() + 20
    while True:
        r = post(url, "/v1/records", gw.key, body, sign(rotated.signing_secret, body))
        if r.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    refused(post(url, "/v1/records", gw.key, body, sign(gw.secret, body)), "does not match")
    assert raw_count(pool, gw.id) == 3


def test_cli_gateway_rotate_signing_secret(settings: CommonSettings, core: Core) -> None:
    # Found in review: a leaked signing secret could only be retired with its whole gateway.
    runner, env = CliRunner(), _cli_env(settings)
    name = f"gw-sec-{uuid.uuid4().hex[:6]}"
    key, secret = _add_signed(runner, env, name)
    auth = GatewayAuth(core.pool.get(), ttl_seconds=0)

    def printed(args: list[str]) -> dict[str, str]:
        out = runner.invoke(cli_app, ["gateway", "rotate", name, *args], env=env)
        assert out.exit_code == 0, out.output
        return dict(line.split(" (shown once, store it now): ") for line in out.output.splitlines())

    only = printed(["--signing-secret", "--keep-key"])
    assert list(only) == [f"gateway {name}: new signing secret"]
    second = only[f"gateway {name}: new signing secret"]
    assert second.startswith("tks_") and second != secret
    found = auth.authenticate(key)  # the key kept, with the new secret
    assert found is not None and found.signing_secret == second
    both = printed(["--signing-secret"])
    new_key, third = both[f"gateway {name}: new key"], both[f"gateway {name}: new signing secret"]
    assert auth.authenticate(key) is None
    found = auth.authenticate(new_key)
    assert found is not None and found.signing_secret == third and third != second
    assert found.agencies == frozenset({SINGLE_AGENCY}) and found.gateway_id == name

    plain = f"{name}-plain"
    assert runner.invoke(cli_app, ["gateway", "add", plain, "--agency", SINGLE_AGENCY],
                         env=env).exit_code == 0  # fmt: skip
    for args, reason in (
        ([plain, "--signing-secret"], "does not sign its requests"),
        ([name, "--keep-key"], "rotates nothing on its own"),
        (["gw-never-added", "--signing-secret"], "no active gateway"),
    ):
        out = runner.invoke(cli_app, ["gateway", "rotate", *args], env=env)
        assert out.exit_code == 2 and reason in out.output, out.output
        assert "tks_" not in out.output and "tk_" not in out.output
    # Nothing was changed by the refusals.
    found = auth.authenticate(new_key)
    assert found is not None and found.signing_secret == third
