"""`tracker import` for a gateway registered with `--signed`: every request the importer's
Sender makes is signed (retries anew), and a 401 says whether the key or the signature was
refused. The collector app runs in-process (TestClient's transport: no socket)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

import collector.imports
from collector.app import create_app
from collector.imports import Sender, UnusableArguments
from collector.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, SignatureVerifier
from tests.sinks import ListSink
from tracker.cli import app as cli
from tracker.gateways import Gateway, GatewayAuth

AGENCY = "in-mohfw"
PLAIN_KEY = "tk_plainkey"
SIGNED_KEY = "tk_signedkey"
SECRET = "tks_thesigningsecret"
URL = "http://collector.test"


class KeyAuth(GatewayAuth):
    """Gateways by bearer key, held in memory (no ClickHouse behind it)."""

    def __init__(self, gateways: dict[str, Gateway]) -> None:
        self._gateways = gateways

    def authenticate(self, key: str) -> Gateway | None:
        return self._gateways.get(key)


def collector_app(sink: ListSink) -> FastAPI:
    auth = KeyAuth({PLAIN_KEY: Gateway("gw-plain", "plain", frozenset({AGENCY})),
                    SIGNED_KEY: Gateway("gw-signed", "signed", frozenset({AGENCY}), SECRET)})  # fmt: skip
    return create_app(sink, auth, max_body_bytes=16 << 20, max_batch_records=10_000)


@pytest.fixture()
def sink(monkeypatch: pytest.MonkeyPatch) -> ListSink:
    """The collector app's sink; every Sender the CLI makes talks to that app in-process."""
    sink = ListSink()
    # TestClient is an httpx.Client whose transport calls the ASGI app directly.
    transport = TestClient(collector_app(sink))._transport

    class InProcessSender(Sender):
        def __init__(self, url: str, key: str, *args: Any, **kwargs: Any) -> None:
            super().__init__(url, key, *args, transport=transport, **kwargs)

    monkeypatch.setattr(collector.imports, "Sender", InProcessSender)
    monkeypatch.delenv("TRACKER_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("TRACKER_GATEWAY_KEY", raising=False)
    return sink


def _log(tmp_path: Path, *ids: str) -> Path:
    path = tmp_path / "access.jsonl"
    created = int(time.time()) - 3600
    path.write_text("".join(json.dumps({"request_id": rid, "created": created, "model": "gpt-4o",
                                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
                            + "\n" for rid in ids))  # fmt: skip
    return path


def _import(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["import", *args, "--url", URL, "--data-dir",
                                    str(tmp_path / "state")], env=env)  # fmt: skip


def test_a_signed_gateway_imports_with_its_signing_secret(sink: ListSink, tmp_path: Path) -> None:
    """Found in review: `Sender` never signed, so a signed gateway could not import at all."""
    log = _log(tmp_path, "sig-1", "sig-2", "sig-3")
    done = _import(tmp_path, str(log), "--key", SIGNED_KEY, "--signing-secret", SECRET,
                   "--batch-size", "2")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "3 imported, 0 refused" in done.output
    assert sorted(r.record_id for r in sink.records) == ["sig-1", "sig-2", "sig-3"]
    assert SECRET not in done.output

    # The same from the environment (a trailing line break, as from a secret file, is dropped).
    (tmp_path / "env").mkdir()
    more = _log(tmp_path / "env", "sig-4")
    env = {"TRACKER_SIGNING_SECRET": SECRET + "\n", "TRACKER_GATEWAY_KEY": SIGNED_KEY}
    again = _import(tmp_path, str(more), env=env)
    assert again.exit_code == 0, again.output
    assert "sig-4" in {r.record_id for r in sink.records}
    assert SECRET not in again.output

    # A secret given to an unsigned gateway is not needed, and does no harm (ignored).
    plain = _import(tmp_path / "env", str(more), "--key", PLAIN_KEY, "--signing-secret", SECRET)
    assert plain.exit_code == 0, plain.output


def test_a_refused_signature_is_not_blamed_on_the_key(sink: ListSink, tmp_path: Path) -> None:
    """Found in review: every 401 said "the server refused the gateway key (--key)", also for a
    valid key whose gateway must sign. The server's reason is shown; no secret ever is."""
    log = _log(tmp_path, "nosig-1")
    unsigned = _import(tmp_path, str(log), "--key", SIGNED_KEY)
    assert unsigned.exit_code == 2, unsigned.output
    assert "refused the gateway key" not in unsigned.output
    assert "signature" in unsigned.output and "must sign its requests" in unsigned.output
    assert "--signing-secret" in unsigned.output
    assert SIGNED_KEY not in unsigned.output

    wrong = _import(tmp_path, str(log), "--key", SIGNED_KEY, "--signing-secret", "tks_wrong")
    assert wrong.exit_code == 2, wrong.output
    assert "signature does not match" in wrong.output
    assert "refused the gateway key" not in wrong.output
    assert "tks_wrong" not in wrong.output and SIGNED_KEY not in wrong.output

    unknown = _import(tmp_path, str(log), "--key", "tk_unknown", "--signing-secret", SECRET)
    assert unknown.exit_code == 2, unknown.output
    assert "refused the gateway key (--key): unknown or revoked gateway key" in unknown.output
    assert "tk_unknown" not in unknown.output and SECRET not in unknown.output

    bad = _import(tmp_path, str(log), "--key", SIGNED_KEY, "--signing-secret", "tks_a b")
    assert bad.exit_code == 2 and "--signing-secret" in bad.output and "tks_a" not in bad.output
    assert sink.records == []


def test_help_names_the_option_and_never_shows_the_secret(sink: ListSink) -> None:
    shown = CliRunner().invoke(cli, ["import", "--help"], env={"TRACKER_SIGNING_SECRET": SECRET})
    assert shown.exit_code == 0, shown.output
    assert "--signing-secret" in shown.output and "TRACKER_SIGNING_SECRET" in shown.output
    assert SECRET not in shown.output


class _Collector:
    """A stand-in collector verifying signatures as the real one does (replay refusal on, on
    a frozen clock), answering the first POST to /v1/records 503 (after its signature was
    verified, hence remembered, as the real app does)."""

    def __init__(self, now: float) -> None:
        self.verifier = SignatureVerifier(clock=lambda: now)
        self.signatures: list[str] = []
        self.busy = 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        try:
            self.verifier.verify("gw", SECRET, request.headers.get(TIMESTAMP_HEADER),
                                 request.headers.get(SIGNATURE_HEADER), body)  # fmt: skip
        except SignatureError as exc:
            return httpx.Response(401, json={"detail": f"bad request signature: {exc.reason}"})
        self.signatures.append(request.headers[SIGNATURE_HEADER])
        if request.url.path == "/v1/gateway/whoami":
            return httpx.Response(200, json={"gateway_id": "gw", "agencies": [AGENCY]})
        if self.busy:
            self.busy -= 1
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"accepted": 1, "rejected": 0, "errors": []})


def test_every_attempt_is_signed_anew_even_within_one_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry carrying its first attempt's signature is refused as a replay; one signed again
    within the same second would carry the same signature (whole-second timestamps)."""
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)  # every attempt in the same second
    server = _Collector(now)
    sender = Sender(URL, SIGNED_KEY, attempts=3, signing_secret=SECRET,
                    transport=httpx.MockTransport(server))  # fmt: skip
    try:
        assert sender.gateway() == ("gw", frozenset({AGENCY}))
        assert sender.gateway() == ("gw", frozenset({AGENCY}))  # an empty body again
        result = sender.send([b'{"record_id": "r1"}'])
    finally:
        sender.close()
    assert result["accepted"] == 1
    assert len(server.signatures) == 4 and len(set(server.signatures)) == 4
    assert server.busy == 0  # the 503 was answered, and its retry accepted


def test_a_refusal_never_echoes_the_secrets() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A proxy in front of the collector that reflects what it was sent.
        return httpx.Response(401, json={"detail": f"bad request signature: {SECRET} {PLAIN_KEY}"})

    sender = Sender(URL, PLAIN_KEY, signing_secret=SECRET, transport=httpx.MockTransport(echo))
    try:
        with pytest.raises(UnusableArguments) as refused:
            sender.gateway()
    finally:
        sender.close()
    assert SECRET not in str(refused.value) and PLAIN_KEY not in str(refused.value)
    assert "signature" in str(refused.value)


def test_bytes_another_sender_signed_in_the_same_second_are_signed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two imports of one file at once send the same first batch: in the same second, the same
    signature, which the server refuses to the second as a replay. It signs again, a second
    later, instead of taking the refusal for a wrong secret."""
    now = 1_800_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    server = _Collector(now)
    server.busy = 0
    body = [b'{"record_id": "r1"}']
    first = Sender(URL, SIGNED_KEY, signing_secret=SECRET, transport=httpx.MockTransport(server))
    second = Sender(URL, SIGNED_KEY, attempts=2, signing_secret=SECRET,
                    transport=httpx.MockTransport(server))  # fmt: skip
    try:
        assert first.send(body)["accepted"] == 1
        assert second.send(body)["accepted"] == 1
    finally:
        first.close()
        second.close()
    assert len(server.signatures) == 2 and len(set(server.signatures)) == 2
