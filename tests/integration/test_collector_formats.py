"""LiteLLM, OpenGateLLM and CloudEvents push endpoints on the embedded app (uvicorn on
127.0.0.1, landing in chdb): partial acceptance, bounds, and resends counted once."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import threading
import time
import types
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import HTTPException

from collector import bodies
from tests.integration.test_collector_support import (
    MULTI_AGENCIES,
    SINGLE_AGENCY,
    Keys,
    ServerThread,
    make_app,
    older_proxy_spend_rows,
    raw_count,
)
from tracker.cli.wiring import Core
from tracker.clickhouse import ClientPool
from tracker.settings import CommonSettings

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _post(url: str, key: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=content, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})  # fmt: skip


def test_litellm_generic_api_logger_pushes(url: str, keys: Keys, pool: ClientPool) -> None:
    """The real litellm package, its generic API logger pointed at the collector."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    saved = list(litellm.callbacks)

    async def calls() -> None:
        # Built inside the loop: the logger starts its periodic flush task on creation.
        logger = GenericAPILogger(endpoint=f"{url}/v1/litellm",
                                  headers={"Authorization": f"Bearer {keys.multi}"})  # fmt: skip
        litellm.callbacks = [logger]
        for team in MULTI_AGENCIES[:2]:
            await litellm.acompletion(
                model="azure/gpt-4o", api_base="https://moh-prod.openai.azure.com",
                messages=[{"role": "user", "content": "hello"}], mock_response="hi",
                metadata={"user_api_key_team_alias": team})  # fmt: skip
        await litellm.aembedding(model="openai/text-embedding-3-small", input=["x"],
                                 mock_response=[0.1, 0.2], metadata={"tags": ["agency:in-kvs"]})  # fmt: skip
        deadline = time.monotonic() + 10
        while len(logger.log_queue) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await logger.async_send_batch()  # type: ignore[no-untyped-call]  # litellm is unannotated

    try:
        asyncio.run(calls())
    finally:
        litellm.callbacks = saved
    rows = pool.get().query(
        "SELECT agency_id, provider, operation, endpoint_host, currency FROM usage_raw "
        "WHERE gateway_id = {g:String} ORDER BY agency_id", parameters={"g": keys.multi_id}
    ).result_rows  # fmt: skip
    assert [r[0] for r in rows] == ["in-cbse", "in-kvs", "in-moe"]
    # mock_response never calls the upstream, so LiteLLM logs no api_base: no endpoint_host.
    assert rows[0][1:] == ("azure", "chat", "", "USD")
    assert rows[1][2] == "embeddings"


def test_litellm_recorded_payload_and_spend_rows_count_once(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    payloads = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())
    spend_rows = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())
    first = _post(f"{url}/v1/litellm", keys.single, payloads)
    assert first.status_code == 200, first.text
    # The second payload names in-cbse: the single-agency gateway may not report for it.
    assert first.json()["accepted"] == 3
    assert [(e["index"], e["field"]) for e in first.json()["errors"]] == [(1, "agency_id")]
    landed = raw_count(pool, keys.single_id)
    # Resent as callbacks, then the same calls pulled as spend-log rows (NDJSON): same ids.
    assert _post(f"{url}/v1/litellm", keys.single, payloads).json()["accepted"] == 3
    ndjson = b"\n".join(json.dumps(r).encode() for r in spend_rows)
    assert _post(f"{url}/v1/litellm", keys.single, ndjson).json()["accepted"] == 3
    assert raw_count(pool, keys.single_id) == landed == 3
    assert raw_count(pool, keys.single_id, "status = 'error' AND provider = 'anthropic'") == 1


def _ogl_rows() -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
    base = {"datetime": now.isoformat(sep=" "), "duration": 840, "user_id": 3, "token_id": 7,
            "endpoint": "/v1/chat/completions", "method": "POST", "model": "albert-large",
            "client_url": "http://vllm-albert-large.internal:8000", "request_model": "albert-large",
            "strategy": "shuffle", "current_parallel_requests": 1, "priority": 0,
            "prompt_tokens": 120, "completion_tokens": 48.0, "total_tokens": 168, "cost": 0.0021,
            "status": 200, "kwh_min": 0.0001, "kwh_max": 0.0003}  # fmt: skip
    return [
        {**base, "id": 9001},
        {**base, "id": 9002, "endpoint": "/v1/embeddings", "completion_tokens": 0, "status": 500},
        {**base, "id": 9003, "prompt_tokens": -5},
        {**base, "id": 9004, "model": None, "request_model": None, "endpoint": "/v1/files"},
    ]


def test_opengatellm_rows_partially_accepted(url: str, keys: Keys, pool: ClientPool) -> None:
    reply = _post(f"{url}/v1/opengatellm", keys.single, _ogl_rows())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["errors"][0]["index"] == 2 and body["errors"][0]["field"] == "input_tokens"
    got = pool.get().query(
        "SELECT record_id, operation, status, latency_ms, round(energy_wh, 3), endpoint_host "
        "FROM usage_raw WHERE gateway_id = {g:String} AND provider = 'opengatellm' "
        "ORDER BY record_id", parameters={"g": keys.single_id}).result_rows  # fmt: skip
    assert got == [("opengatellm-9001", "chat", "ok", 840, 0.2, "vllm-albert-large.internal"),
                   ("opengatellm-9002", "embeddings", "error", 840, 0.2,
                    "vllm-albert-large.internal")]  # fmt: skip
    me_usage = {"object": "list", "data": [{"object": "me.usage", "model": "albert-small",
        "key": "my-key", "endpoint": "/v1/chat/completions", "method": "POST", "status": 200,
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.1,
                  "impacts": {"kWh": {"min": 0.001, "max": 0.003}}, "metrics": {"latency": 90}},
        "created": int(time.time()) - 60}]}  # fmt: skip
    for _ in range(2):
        assert _post(f"{url}/v1/opengatellm", keys.single, me_usage).json()["accepted"] == 1
    assert raw_count(pool, keys.single_id, "model = 'albert-small'") == 1


def _event(event_id: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "/gateways/moe-edu",
            "type": "org.sovereignty-tracker.usage.v1", "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json", "data": data, **extra}  # fmt: skip


def test_cloudevents_batch_structured_binary(url: str, keys: Keys, pool: ClientPool) -> None:
    usage = {"provider": "sarvam", "model": "sarvam-m", "input_tokens": 40, "output_tokens": 9}
    batch = [
        _event("e-1", {**usage, "agency_id": "in-moe"}),
        _event("e-2", usage, agencyid="in-cbse"),
        _event("e-3", usage),  # no agency and the gateway has three: refused
        {**_event("e-4", usage, agencyid="in-kvs"), "specversion": "0.3"},
        _event("e-5", {**usage, "tokens": 3}, agencyid="in-kvs"),  # not a contract field
        _event("e-6", usage, agencyid="in-kvs", type="com.example.other"),
    ]
    reply = _post(f"{url}/v1/events", keys.multi, batch, "application/cloudevents-batch+json")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["accepted"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (2, "agency_id"), (3, "specversion"), (4, "tokens"), (5, "type")]  # fmt: skip
    before = raw_count(pool, keys.multi_id)
    # The same events again (a producer retry): nothing new.
    assert _post(f"{url}/v1/events", keys.multi, batch[:2],
                 "application/cloudevents-batch+json").json()["accepted"] == 2  # fmt: skip
    single = _event("e-7", usage, agencyid="in-kvs")
    assert _post(f"{url}/v1/events", keys.multi, single,
                 "application/cloudevents+json").json()["accepted"] == 1  # fmt: skip
    binary = httpx.post(f"{url}/v1/events", content=json.dumps(usage).encode(), headers={
        "Authorization": f"Bearer {keys.multi}", "Content-Type": "application/json",
        "ce-specversion": "1.0", "ce-id": "e-8", "ce-source": "/gateways/moe-edu",
        "ce-type": "org.sovereignty-tracker.usage.v1", "ce-agencyid": "in-moe",
        "ce-time": datetime.now(UTC).isoformat()})  # fmt: skip
    assert binary.status_code == 200 and binary.json()["accepted"] == 1, binary.text
    assert raw_count(pool, keys.multi_id) == before + 2
    wrong = _post(f"{url}/v1/events", keys.multi, batch, "application/json")
    assert wrong.status_code == 415


def test_all_refused_and_bounds(settings: CommonSettings, core: Core, keys: Keys) -> None:
    small = make_app(settings, core, max_body_bytes=2048, max_batch_records=2)
    with ServerThread(small) as base:
        rows = _ogl_rows()
        assert _post(f"{base}/v1/opengatellm", keys.single, rows).status_code == 413
        assert _post(f"{base}/v1/opengatellm", keys.single, [rows[2]]).status_code == 422
        forbidden = _post(f"{base}/v1/opengatellm", keys.single,
                          [{**rows[0], "agency_id": "in-moe"}])  # fmt: skip
        assert forbidden.status_code == 403
        huge = [{**rows[0], "model": "m" * 5000}]
        assert _post(f"{base}/v1/opengatellm", keys.single, huge).status_code == 413
        long_model = [{**rows[0], "id": 77, "model": "m" * 300}]
        refused = _post(f"{base}/v1/opengatellm", keys.single, long_model)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "model"
        assert _post(f"{base}/v1/litellm", keys.single, b"{nope").status_code == 422
        no_key = httpx.post(f"{base}/v1/events", content=b"[]")
        assert no_key.status_code == 401
    assert SINGLE_AGENCY == "in-mohfw"


@pytest.mark.parametrize(
    ("path", "content_type", "body", "detail"),
    [
        ("/v1/records", "application/json", b"[{nope", "body is not valid JSON"),
        ("/v1/records", "application/json", b'{"a": 1}', "body must be a JSON array of records"),
        ("/v1/events", "application/cloudevents+json", b"{nope", "body is not valid JSON"),
        ("/v1/events", "application/cloudevents-batch+json", b"{nope", "body is not valid JSON"),
        (
            "/v1/events",
            "application/cloudevents-batch+json",
            b'{"id": "e"}',
            "a CloudEvents batch must be a JSON array of events",
        ),
        (
            "/v1/opengatellm",
            "application/json",
            b"{nope\n{nope",
            "body is neither JSON nor JSON lines: ",
        ),
    ],
)
def test_broken_json_is_refused_with_where_it_broke(
    url: str, keys: Keys, path: str, content_type: str, body: bytes, detail: str
) -> None:
    reply = _post(f"{url}{path}", keys.multi, body, content_type)
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith(detail)


def test_binary_event_data_that_is_no_json_is_refused(url: str, keys: Keys) -> None:
    reply = httpx.post(f"{url}/v1/events", content=b"{nope", timeout=30, headers={
        "Authorization": f"Bearer {keys.multi}", "Content-Type": "application/json",
        "ce-specversion": "1.0", "ce-id": "e-x", "ce-source": "/gateways/moe-edu",
        "ce-type": "org.sovereignty-tracker.usage.v1", "ce-agencyid": "in-moe"})  # fmt: skip
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("event data is not valid JSON: ")


# Found in review: each of these was a 500 that lost the good record beside it, and
# "1e1000000" cost ~22 s of CPU in int() before the contract's bound refused it.
HOSTILE = [
    ("startTime", "inf"), ("startTime", -1e20), ("startTime", "9999-12-31T23:59:59-01:00"),
    ("startTime", "0001-01-01T00:00:00+01:00"), ("prompt_tokens", "Infinity"),
    ("prompt_tokens", "sNaN"), ("prompt_tokens", "1e1000000"), ("spend", "1e20"),
]  # fmt: skip


def test_hostile_values_refuse_their_item_only(url: str, keys: Keys, pool: ClientPool) -> None:
    good = older_proxy_spend_rows()[0]
    for i, (name, value) in enumerate(HOSTILE):
        pair = [{**good, "request_id": f"hostile-ok-{i}"},
                {**good, "request_id": f"hostile-{i}", name: value}]  # fmt: skip
        reply = _post(f"{url}/v1/litellm", keys.single, pair)
        assert reply.status_code == 200, (name, value, reply.text)
        body = reply.json()
        assert (body["accepted"], body["rejected"]) == (1, 1), (name, value, body)
        assert body["errors"][0]["index"] == 1, body
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'hostile-ok-')") == len(HOSTILE)
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'hostile-') AND "
                     "NOT startsWith(record_id, 'hostile-ok-')") == 0  # fmt: skip
    ogl = {**_ogl_rows()[0], "id": 9100, "completion_tokens": "nan"}
    reply = _post(f"{url}/v1/opengatellm", keys.single, [{**_ogl_rows()[0], "id": 9101}, ogl])
    assert reply.status_code == 200 and reply.json()["rejected"] == 1, reply.text
    assert reply.json()["errors"][0]["field"] == "completion_tokens"
    record = {"record_id": "hostile-native-ok", "agency_id": SINGLE_AGENCY, "provider": "sarvam",
              "model": "m", "occurred_at": datetime.now(UTC).isoformat()}  # fmt: skip
    far = {**record, "record_id": "hostile-native", "occurred_at": "9999-12-31T23:59:59-01:00"}
    reply = _post(f"{url}/v1/records", keys.single, [record, far])
    assert reply.status_code in (200, 207), reply.text
    assert reply.json()["accepted"] == 1 and reply.json()["errors"][0]["field"] == "occurred_at"
    spans = _post(f"{url}/v1/traces", keys.single, {"resourceSpans": 5})
    assert spans.status_code == 400, spans.text


def test_a_gzip_body_is_read_whole_or_refused(url: str, keys: Keys, pool: ClientPool) -> None:
    # Found in review: only the first gzip member was read (200 for one record of two), and a
    # stream cut short or followed by other bytes was taken as far as it went.
    good = older_proxy_spend_rows()[0]
    lines = [json.dumps({**good, "request_id": f"gz-{i}"}).encode() + b"\n" for i in range(3)]

    def post(body: bytes) -> httpx.Response:
        return httpx.post(f"{url}/v1/litellm", content=body, timeout=30, headers={
            "Authorization": f"Bearer {keys.single}", "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip"})  # fmt: skip

    members = post(gzip.compress(lines[0]) + gzip.compress(lines[1]))
    assert members.status_code == 200 and members.json()["accepted"] == 2, members.text
    assert raw_count(pool, keys.single_id, "record_id IN ('gz-0', 'gz-1')") == 2
    whole = gzip.compress(b"".join(lines))
    for broken in (whole[:-9], gzip.compress(lines[2]) + b"garbage"):
        reply = post(broken)
        assert reply.status_code == 400 and "compressed" in reply.text, reply.text
    assert raw_count(pool, keys.single_id, "record_id = 'gz-2'") == 0


def test_a_broken_json_line_refuses_that_line_only(url: str, keys: Keys, pool: ClientPool) -> None:
    # Found in review: one torn line in an NDJSON body refused the whole body (422), so the good
    # lines beside it were lost to a logger that does not resend refused bodies.
    good = older_proxy_spend_rows()[0]
    body = b"\n".join([json.dumps({**good, "request_id": "nd-0"}).encode(), b'{"request_id": "nd-',
                       b"", json.dumps({**good, "request_id": "nd-2"}).encode()])  # fmt: skip
    reply = _post(f"{url}/v1/litellm", keys.single, body, "application/x-ndjson")
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 1), answer
    (error,) = answer["errors"]
    assert (error["index"], error["field"]) == (1, "record"), error
    assert error["reason"].startswith("line 2 is not valid JSON"), error
    assert raw_count(pool, keys.single_id, "record_id IN ('nd-0', 'nd-2')") == 2


def _with_lone_surrogate(item: dict[str, Any], field: str) -> bytes:
    """`item` as JSON with a lone high surrogate escape (an emoji cut in half by JavaScript's
    JSON.stringify) at the end of `field`'s string."""
    text = json.dumps({**item, field: "cut"})
    return text.replace('"cut"', '"cut\\ud83d"').encode()


def test_a_lone_surrogate_refuses_its_record_only(url: str, keys: Keys, pool: ClientPool) -> None:
    # Found in review: one lone surrogate escape made the body not JSON for the strict parser,
    # so every record in it was refused (422), not only the one carrying it.
    good = older_proxy_spend_rows()[0]
    ok, cut = ({**good, "request_id": f"surrogate-{n}"} for n in ("ok", "cut"))
    array = b"[" + json.dumps(ok).encode() + b"," + _with_lone_surrogate(cut, "model") + b"]"
    reply = _post(f"{url}/v1/litellm", keys.single, array)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1), answer
    assert [(e["index"], e["field"]) for e in answer["errors"]] == [(1, "model")], answer
    assert "lone surrogate" in answer["errors"][0]["reason"]
    lines = json.dumps({**ok, "request_id": "surrogate-line"}).encode() + b"\n"
    reply = _post(f"{url}/v1/litellm", keys.single, lines + _with_lone_surrogate(cut, "model"),
                  "application/x-ndjson")  # fmt: skip
    assert reply.status_code == 200 and reply.json()["accepted"] == 1, reply.text
    assert "lone surrogate" in reply.json()["errors"][0]["reason"], reply.text
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'surrogate-')") == 2

    record = {"record_id": "surrogate-native-ok", "agency_id": SINGLE_AGENCY, "provider": "sarvam",
              "model": "m", "occurred_at": datetime.now(UTC).isoformat()}  # fmt: skip
    native = {**record, "record_id": "surrogate-native", "metadata": {"note": "x"}}
    body = (b"[" + json.dumps(record).encode() + b","
            + json.dumps(native).replace('"x"', '"\\udc00"').encode() + b"]")  # fmt: skip
    reply = _post(f"{url}/v1/records", keys.single, body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 1, reply.text
    assert [e["field"] for e in reply.json()["errors"]] == ["metadata.note"], reply.text
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'surrogate-native')") == 1

    usage = {"provider": "sarvam", "model": "sarvam-m", "input_tokens": 4, "output_tokens": 1}
    events = b"[" + json.dumps(_event("surrogate-e-1", usage, agencyid="in-kvs")).encode() + b","
    events += _with_lone_surrogate(_event("surrogate-e-2", usage, agencyid="in-kvs"), "source")
    reply = _post(f"{url}/v1/events", keys.multi, events + b"]",
                  "application/cloudevents-batch+json")  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 1, reply.text
    assert [e["field"] for e in reply.json()["errors"]] == ["source"], reply.text


@pytest.mark.parametrize("path", ["/v1/litellm", "/v1/opengatellm"])
@pytest.mark.parametrize("body", [b"", b" \n\n "])
def test_an_empty_body_is_refused_not_accepted_as_nothing(
    url: str, keys: Keys, path: str, body: bytes
) -> None:
    # Found in review: an empty body answered 200 with nothing accepted, so a gateway whose
    # logger sent an empty flush (or lost its payload) was told all was well.
    reply = _post(f"{url}{path}", keys.single, body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith("body is empty"), reply.text


def test_native_records_read_their_content_encoding(url: str, keys: Keys, pool: ClientPool) -> None:
    # Found in review: /v1/records ignored Content-Encoding; a gzip body was a 422 about UTF-8.
    stamp = datetime.now(UTC).isoformat()

    def records(tag: str) -> bytes:
        return json.dumps([{"record_id": f"enc-{tag}", "agency_id": SINGLE_AGENCY,
                            "provider": "sarvam", "model": "m", "occurred_at": stamp}]).encode()  # fmt: skip

    def post(body: bytes, encoding: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/records", content=body, timeout=30, headers={
            "Authorization": f"Bearer {keys.single}", "Content-Type": "application/json",
            "Content-Encoding": encoding})  # fmt: skip

    deflate = zlib.compressobj(wbits=zlib.MAX_WBITS)
    deflated = deflate.compress(records("deflate")) + deflate.flush()
    for encoding, body in (("gzip", gzip.compress(records("gzip"))), ("deflate", deflated),
                           ("identity", records("identity"))):  # fmt: skip
        reply = post(body, encoding)
        assert reply.status_code == 200 and reply.json()["accepted"] == 1, (encoding, reply.text)
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'enc-')") == 3
    unknown = post(records("br"), "br")
    assert unknown.status_code == 415 and "Content-Encoding" in unknown.text, unknown.text
    torn = post(gzip.compress(records("torn"))[:-9], "gzip")
    assert torn.status_code == 400, torn.text
    assert raw_count(pool, keys.single_id, "record_id IN ('enc-br', 'enc-torn')") == 0


def test_gzip_members_are_read_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: each member was handed the whole rest of the body, which zlib copied
    # into unused_data: quadratic (17 s for 10,000 empty members before a 15 MiB one). Counted
    # here as the input bytes given to zlib, which was members x rest and must now be linear.
    fed = 0

    class Counting:
        def __init__(self, wbits: int) -> None:
            self.inner = zlib.decompressobj(wbits)

        def decompress(self, data: Any, max_length: int = 0) -> bytes:
            nonlocal fed
            fed += len(data)
            return self.inner.decompress(data, max_length)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    counting = types.SimpleNamespace(decompressobj=Counting, error=zlib.error,
                                     MAX_WBITS=zlib.MAX_WBITS)  # fmt: skip
    monkeypatch.setattr(bodies, "zlib", counting)
    rng = random.Random(7)
    parts = [rng.randbytes(rng.choice((0, 1, 300, 5_000, 70_000))) for _ in range(200)]
    parts += [b""] * 2_000 + [rng.randbytes(1 << 20)]  # a big member after many empty ones
    body = b"".join(gzip.compress(part, compresslevel=1) for part in parts)
    assert bodies._inflate(body, 16 + zlib.MAX_WBITS, 1 << 24) == b"".join(parts)
    assert fed <= 3 * len(body), (fed, len(body))


def test_gzip_members_and_size_stay_bounded() -> None:
    gz = 16 + zlib.MAX_WBITS
    over = gzip.compress(b"") * (bodies._MAX_MEMBERS + 1)
    with pytest.raises(HTTPException) as info:
        bodies._inflate(over, gz, 1 << 20)
    assert info.value.status_code == 400 and "gzip members" in str(info.value.detail)
    # The decompressed-size limit is as strict as before: exactly the limit passes, one byte
    # more is 413, over several members and whatever the window the input is fed through.
    data = bytes(range(256)) * 40_000
    split = gzip.compress(data[:3_000_000]) + gzip.compress(data[3_000_000:])
    for body in (gzip.compress(data), split):
        assert bodies._inflate(body, gz, len(data)) == data
        with pytest.raises(HTTPException) as info:
            bodies._inflate(body, gz, len(data) - 1)
        assert info.value.status_code == 413
    deflate = zlib.compressobj(wbits=zlib.MAX_WBITS)
    deflated = deflate.compress(data) + deflate.flush()
    assert bodies._inflate(deflated, zlib.MAX_WBITS, len(data)) == data
    for broken in (deflated + deflated, deflated[:-3], b""):
        with pytest.raises(HTTPException) as info:
            bodies._inflate(broken, zlib.MAX_WBITS, len(data))
        assert info.value.status_code == 400


def test_another_request_is_served_while_a_body_inflates(
    url: str, keys: Keys, pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: inflating ran on the event loop, so /healthz waited 8.7 s behind one
    # request. The inflate is held here until another request has been answered; on the loop
    # it would hold that request too, until its wait ran out (released == [False]).
    inflating, release = threading.Event(), threading.Event()
    released: list[bool] = []
    inflate = bodies._inflate

    def held(body: bytes, wbits: int, limit: int) -> bytes:
        inflating.set()
        released.append(release.wait(10))
        return inflate(body, wbits, limit)

    monkeypatch.setattr(bodies, "_inflate", held)
    auth = {"Authorization": f"Bearer {keys.single}"}
    record = {"record_id": "inflated-off-loop", "agency_id": SINGLE_AGENCY, "provider": "sarvam",
              "model": "m", "occurred_at": datetime.now(UTC).isoformat()}  # fmt: skip
    with ThreadPoolExecutor(1) as runner:
        slow = runner.submit(httpx.post, f"{url}/v1/records", timeout=30,
                             content=gzip.compress(json.dumps([record]).encode()),
                             headers={**auth, "Content-Type": "application/json",
                                      "Content-Encoding": "gzip"})  # fmt: skip
        try:
            assert inflating.wait(10)
            other = httpx.post(f"{url}/v1/gateway/whoami", headers=auth, timeout=30)
        finally:
            release.set()
        assert other.status_code == 200, other.text
        assert slow.result().status_code == 200
    assert released == [True]
    assert raw_count(pool, keys.single_id, "record_id = 'inflated-off-loop'") == 1


def test_a_me_usage_answer_with_a_number_orjson_cannot_read(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: the whole answer was ignored with a 200 (accepted 0, rejected 0).
    created = int(time.time()) - 120
    item = {"object": "me.usage", "model": "albert-wrapped", "endpoint": "/v1/chat/completions",
            "method": "POST", "status": 200, "usage": {"prompt_tokens": 10}}  # fmt: skip
    answer = json.dumps({"object": "list", "data": [{**item, "created": created + i}
                                                    for i in range(2)]})  # fmt: skip
    body = answer[:-2] + ', {"object": "me.usage", "model": "albert-wrapped", ' \
        f'"created": {created + 2}, "usage": {{"prompt_tokens": 1e400}}}}]}}'  # fmt: skip
    reply = _post(f"{url}/v1/opengatellm", keys.single, body.encode())
    assert reply.status_code == 200, reply.text
    answer_body = reply.json()
    assert (answer_body["accepted"], answer_body["rejected"]) == (2, 1), answer_body
    (error,) = answer_body["errors"]
    assert (error["index"], error["field"]) == (2, "prompt_tokens"), error
    assert "finite" in error["reason"]
    assert raw_count(pool, keys.single_id, "model = 'albert-wrapped'") == 2


def test_cloudevents_distinct_events_keep_distinct_ids_and_time_is_rfc3339(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: (a) these two events shared one record id, so one of them was lost as a
    # resend of the other; (b) a number or digit string `time` was read as Unix time.
    usage = {"provider": "sarvam", "model": "sarvam-ids", "input_tokens": 4}
    batch = [
        _event("b\nc", usage, source="//gw/ids-a", agencyid="in-moe"),
        _event("c", usage, source="//gw/ids-a\nb", agencyid="in-moe"),
        _event("t-number", usage, agencyid="in-moe", time=int(time.time())),
        _event("t-digits", usage, agencyid="in-moe", time=str(int(time.time()))),
    ]
    reply = _post(f"{url}/v1/events", keys.multi, batch, "application/cloudevents-batch+json")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["accepted"] == 2, body
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(2, "time"), (3, "time")]
    assert all("RFC 3339" in e["reason"] for e in body["errors"]), body
    assert raw_count(pool, keys.multi_id, "model = 'sarvam-ids'") == 2


def test_healthz_answers_while_json_lines_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: /v1/litellm and /v1/opengatellm read JSON lines on the event loop, so a
    # 1 KiB gzip body of garbage lines held the collector's /healthz for 4.3 s. The reading is
    # held here until /healthz has been answered; on the loop it would hold /healthz too, until
    # the wait ran out (released == [False]) and the health check timed out.
    from collector import routes_formats
    from collector.app import create_app
    from tests.sinks import ListSink
    from tests.unit.test_format_routes_limits import GOOD_LINE, SINGLE, KeyAuth

    reading, release = threading.Event(), threading.Event()
    released: list[bool] = []
    json_items = bodies.json_items  # what routes_formats calls, replaced there below

    def held(body: bytes, max_items: int | None = None) -> list[Any]:
        reading.set()
        released.append(release.wait(10))
        return json_items(body, max_items)

    monkeypatch.setattr(routes_formats, "json_items", held)
    sink = ListSink()
    app = create_app(sink, KeyAuth({"k": SINGLE}), max_body_bytes=1 << 20,
                     max_batch_records=100)  # fmt: skip
    with ServerThread(app) as base, ThreadPoolExecutor(1) as runner:
        slow = runner.submit(httpx.post, f"{base}/v1/litellm", timeout=30,
                             content=gzip.compress(b"x\n" * 1_000 + GOOD_LINE),
                             headers={"Authorization": "Bearer k", "Content-Encoding": "gzip",
                                      "Content-Type": "application/x-ndjson"})  # fmt: skip
        try:
            assert reading.wait(10)
            health = httpx.get(f"{base}/healthz", timeout=5)
            still_reading = not slow.done()
        finally:
            release.set()
        assert health.status_code == 200, health.text
        assert still_reading
        assert slow.result().status_code == 413  # 1,001 lines: over 100, refused as before
    assert released == [True]
    assert sink.records == []


class _Held:
    """A sink holding every delivery of more than one record until `release` is set."""

    def __init__(self) -> None:
        from tests.sinks import ListSink

        self.kept = ListSink()
        self.inside, self.most, self.lock = 0, 0, threading.Lock()
        self.release = threading.Event()

    def deliver(self, records: list[Any]) -> None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        if len(records) > 1:
            assert self.release.wait(60)
        with self.lock:
            self.inside -= 1
            self.kept.deliver(records)

    def close(self) -> None:
        pass


def _gated_batch(prefix: str, n: int) -> bytes:
    return orjson.dumps([{"record_id": f"{prefix}{i}", "agency_id": SINGLE_AGENCY,
                          "provider": "sarvam", "model": "sarvam-m", "use_case": "x" * 60,
                          "occurred_at": "2026-07-01T10:00:00Z"} for i in range(n)])  # fmt: skip


def _gate_of(app: Any) -> bodies.LargeBodyGate:
    layer = app.middleware_stack  # built by the first request
    while not isinstance(layer, bodies.LargeBodyGate):
        layer = layer.app
    return layer


def _until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def test_large_bodies_are_processed_two_at_a_time_and_small_ones_never_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decoded body past 1 MiB is parsed, validated and delivered only while it holds one of
    two slots (collector.bodies.LargeBodyGate): a 16 MiB body parses to hundreds of MB, and
    the thread pool ran 40 at once (8 took the collector from 367 MB to 2.1 GB). Two large
    batches are in the sink; the others wait for a slot (off the event loop: /healthz
    answers, a small batch goes past them); a gzip body waits before it is decoded past 1 MiB
    (100 gzip bombs decoded, then waiting, took 1.47 GB in review); past 16 waiting, 503."""
    from collector.app import create_app
    from tests.unit.test_format_routes_limits import SINGLE, KeyAuth

    inflated: list[int] = []  # the limit of each decompression
    real_inflate = bodies._inflate

    def inflate(body: bytes, wbits: int, limit: int) -> bytes:
        inflated.append(limit)
        return real_inflate(body, wbits, limit)

    monkeypatch.setattr(bodies, "_inflate", inflate)
    sink = _Held()
    app = create_app(sink, KeyAuth({"k": SINGLE}), max_body_bytes=16 << 20,
                     max_batch_records=10_000)  # fmt: skip
    auth = {"Authorization": "Bearer k"}
    large = [_gated_batch(f"gate{j}-", 6_000) for j in range(2 + 16)]
    assert all(len(body) > bodies.LARGE_BODY_BYTES for body in large)
    with ServerThread(app) as base, ThreadPoolExecutor(len(large) + 1) as runner:

        def post(body: bytes, **headers: str) -> Any:
            return runner.submit(httpx.post, f"{base}/v1/records", content=body,
                                 headers={**auth, **headers}, timeout=120)  # fmt: skip

        try:
            holding = [post(body) for body in large[:2]]
            _until(lambda: sink.inside == 2)
            gate = _gate_of(app)
            zipped = post(gzip.compress(large[2]), **{"Content-Encoding": "gzip"})
            _until(lambda: gate.waiting == 1)
            decoded_while_waiting = list(inflated)
            waiting = [post(body) for body in large[3:]]
            _until(lambda: gate.waiting == 16)
            refused = httpx.post(f"{base}/v1/records", content=large[0], headers=auth,
                                 timeout=30)  # fmt: skip
            inside = sink.inside
            health = httpx.get(f"{base}/healthz", timeout=5)
            small = httpx.post(f"{base}/v1/records", content=_gated_batch("gate-small-", 1),
                               headers=auth, timeout=10)  # fmt: skip
        finally:
            sink.release.set()
        codes = [f.result().status_code for f in [*holding, zipped, *waiting]]
    assert inside == 2 and sink.most <= 3  # two large ones, and the small one beside them
    assert decoded_while_waiting == [bodies.LARGE_BODY_BYTES]  # not past 1 MiB before a slot
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
    assert "busy" in refused.json()["detail"]
    assert health.status_code == 200 and small.status_code == 200, small.text
    assert codes == [200] * len(large)
    assert len(sink.kept.records) == len(large) * 6_000 + 1
