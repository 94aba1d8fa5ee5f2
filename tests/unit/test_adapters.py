"""Every source adapter over its sample payloads in tests/fixtures, checked against the record
contract itself (no server, no network)."""

from __future__ import annotations

import csv
import hashlib
import json
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collector.adapters import cloudevents, csv_export, litellm, openai_log, opengatellm, otlp
from collector.adapters.common import Context, Mapped, Rejected, as_int, as_time, run
from collector.bodies import json_items
from collector.imports import MAX_LINE_BYTES, Checkpoints, FileStopped, read_csv, read_jsonl
from tracker.contract import UsageRecord, parse_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ONE = Context(default_agency="in-mohfw", agencies=frozenset({"in-mohfw"}))
NONE = Context(agencies=frozenset({"in-moe", "in-cbse"}))


def _valid(mapped: Mapped) -> UsageRecord:
    assert isinstance(mapped, dict), mapped
    return parse_record(mapped, gateway_id="gw-test")


def _otlp_items() -> list[otlp.SpanItem]:
    body = (FIXTURES / "otlp/genai_trace.json").read_bytes()
    return list(otlp.spans(otlp.decode(body, "application/json")))


def test_otlp_json_maps_genai_spans_only() -> None:
    items = _otlp_items()
    mapped = [run(otlp.map_span, item, NONE) for item in items]
    chat, embed, agent, http = mapped
    assert agent is None and http is None
    record = _valid(chat)
    # The span's own ids, not its gen_ai.response.id (chatcmpl-AbC123); the resource's
    # cloud.region (where the app runs) is not the region that served the call.
    assert (record.record_id, record.agency_id, record.provider, record.model) == (
        "otel:5b8efff798038103d269b633813fc60ceee19b7ec3c1b174", "in-mohfw", "azure_openai",
        "gpt-4o-2024-08-06")  # fmt: skip
    assert (record.region, record.endpoint_host, record.latency_ms) == (
        None, "moh-prod.openai.azure.com", 1250)  # fmt: skip
    assert (record.input_tokens, record.output_tokens, record.status) == (812, 164, "ok")
    errored = _valid(embed)
    assert errored.record_id == "otel:5b8efff798038103d269b633813fc60ceee19b7ec3c1b175"
    assert (errored.operation, errored.status, errored.provider) == (
        "embeddings",
        "error",
        "sarvam",
    )


def test_otlp_protobuf_and_json_decode_alike() -> None:
    body = (FIXTURES / "otlp/genai_trace.json").read_bytes()
    export = otlp.decode(body, "application/json")
    again = otlp.decode(export.request.SerializeToString(), "application/x-protobuf")
    assert again == export
    assert again.request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() == (
        "5b8efff798038103d269b633813fc60c")  # fmt: skip
    # An id that is not hex refuses its span only (it used to refuse the whole body).
    (zz,) = otlp.spans(otlp.decode(
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        "application/json"))  # fmt: skip
    assert zz.unreadable == ("traceId", "not hex: 'zz'")


def test_otlp_without_agency_and_several_agencies_is_refused() -> None:
    item = _otlp_items()[0]
    bare = otlp.SpanItem(item.span, {})
    refused = run(otlp.map_span, bare, NONE)
    assert isinstance(refused, Rejected) and refused.field == "agency_id"
    assert _valid(run(otlp.map_span, bare, ONE)).agency_id == "in-mohfw"


def test_otlp_response_is_unset_on_full_success() -> None:
    assert not otlp.response(0, "").HasField("partial_success")
    partial = otlp.response(2, "why")
    assert partial.partial_success.rejected_spans == 2


def test_litellm_payloads_and_spend_rows_share_ids() -> None:
    payloads = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())
    rows = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())
    ctx = Context(agencies=frozenset({"in-mohfw", "in-cbse"}))
    from_payloads = [_valid(run(litellm.map_payload, p, ctx)) for p in payloads]
    from_rows = [_valid(run(litellm.map_spend_log, r, ctx)) for r in rows]
    assert [r.record_id for r in from_payloads] == [r.record_id for r in from_rows]
    assert [r.agency_id for r in from_payloads] == ["in-mohfw", "in-cbse", "in-mohfw", "in-mohfw"]
    assert [r.operation for r in from_payloads] == ["chat", "chat", "embeddings", "chat"]
    assert from_payloads[3].status == "error" and from_rows[3].status == "error"
    assert from_payloads[0].currency == "USD"
    assert from_payloads[0].cost == Decimal(str(payloads[0]["response_cost"])).quantize(
        Decimal("1e-9"))  # fmt: skip


def test_litellm_team_alias_only_when_it_is_an_agency_and_cache_hits_ignored() -> None:
    payload = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())[0]
    stranger = Context(default_agency="in-moe", agencies=frozenset({"in-moe"}))
    assert _valid(run(litellm.map_payload, payload, stranger)).agency_id == "in-moe"
    tagged = {**payload, "request_tags": ["team:x", "agency:in-cbse"]}
    assert _valid(run(litellm.map_payload, tagged, stranger)).agency_id == "in-cbse"
    with_base = {**payload, "api_base": "https://moh-prod.openai.azure.com/openai/"}
    assert _valid(run(litellm.map_payload, with_base, ONE)).endpoint_host == (
        "moh-prod.openai.azure.com")  # fmt: skip
    assert run(litellm.map_payload, {**payload, "cache_hit": True}, ONE) is None


def test_litellm_calls_sharing_a_response_id_count_apart_and_pushed_or_pulled_once() -> None:
    """Found in review (2026-11-26): the record id was the payload's `id`, the provider's
    response id when it gives one; behind Ollama's OpenAI-compatible API (chatcmpl-<0..998>)
    distinct calls shared it and all but one were dropped as resends. LiteLLM's own call id is
    part of the key now, in both shapes (a spend-log column, and a key of its metadata)."""
    payload = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())[0]
    row = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())[0]
    calls = [{**payload, "id": "chatcmpl-417", "litellm_call_id": call} for call in ("c-a", "c-b")]
    ids = [_valid(run(litellm.map_payload, call, ONE)).record_id for call in calls]
    assert ids == ["c-a/chatcmpl-417", "c-b/chatcmpl-417"]
    rows = [{**row, "request_id": "chatcmpl-417", "litellm_call_id": "c-a"},
            {**row, "request_id": "chatcmpl-417", "litellm_call_id": None,
             "metadata": {"litellm_call_id": "c-b"}}]  # fmt: skip
    assert [_valid(run(litellm.map_spend_log, r, ONE)).record_id for r in rows] == ids
    # An older proxy's payload without a call id: its request id, as before.
    older = {k: v for k, v in payload.items() if k != "litellm_call_id"}
    assert _valid(run(litellm.map_payload, older, ONE)).record_id == payload["id"]


def test_litellm_a_failed_attempt_and_the_fallback_that_answered_are_two_records() -> None:
    """Found in review of the call-id change (2026-11-26): the proxy gives every retry and
    fallback of one request the same call id, and a failed attempt's request id is that call
    id (it has no response). Keyed by the call id alone, the failure landed first and the
    answer, with its tokens and cost, was dropped as its resend. Pushed or pulled, each is
    keyed the same."""
    payload = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())[0]
    row = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())[0]
    call = "3f1c2b8e-1111-4a5b-9c0d-5f6071829f60"
    failed = {**payload, "id": call, "litellm_call_id": call, "status": "failure",
              "prompt_tokens": 0, "completion_tokens": 0, "response_cost": 0}  # fmt: skip
    answered = {**payload, "id": "chatcmpl-AbC123", "litellm_call_id": call}
    pushed = [_valid(run(litellm.map_payload, p, ONE)) for p in (failed, answered)]
    assert [r.record_id for r in pushed] == [call, f"{call}/chatcmpl-AbC123"]
    assert [r.status for r in pushed] == ["error", "ok"]
    pulled = [
        {**row, "request_id": call, "litellm_call_id": call, "status": "failure"},
        {**row, "request_id": "chatcmpl-AbC123", "litellm_call_id": call},
    ]
    assert [_valid(run(litellm.map_spend_log, r, ONE)).record_id for r in pulled] == [
        r.record_id for r in pushed
    ]
    # How earlier releases keyed the same rows (a pull re-reading rows they sent keys so).
    answer = pulled[1]
    assert _valid(litellm.map_spend_log(answer, ONE, ids="call")).record_id == call
    assert _valid(litellm.map_spend_log(answer, ONE, ids="request")).record_id == (
        "chatcmpl-AbC123")  # fmt: skip


def test_litellm_ids_holding_a_slash_do_not_make_one_key_of_two_calls() -> None:
    """Found in review: ("a", "b/c") and ("a/b", "c") both read a/b/c, one record id for two
    calls. Such a pair is keyed by a hash of both, the same pushed or pulled."""
    payload = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())[0]
    row = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())[0]
    pairs = [("a", "b/c"), ("a/b", "c"), ("a", "b")]
    pushed = [_valid(run(litellm.map_payload, {**payload, "litellm_call_id": c, "id": r}, ONE))
              for c, r in pairs]  # fmt: skip
    ids = [r.record_id for r in pushed]
    assert len(set(ids)) == 3 and ids[2] == "a/b"
    assert ids[0].startswith("litellm-pair:") and ids[1].startswith("litellm-pair:")
    pulled = [_valid(run(litellm.map_spend_log, {**row, "litellm_call_id": c, "request_id": r},
                         ONE)).record_id for c, r in pairs]  # fmt: skip
    assert pulled == ids


def test_litellm_health_checks_are_known_by_the_key_not_by_what_a_caller_chooses() -> None:
    """Found in review (2026-11-26): the proxy's periodic health checks are real model calls,
    made with its service key and team `litellm-internal-health-check`, and were counted as
    the gateway's agency's requests. Found in review of that change: they were also known by
    the request tag and the key's or team's alias, which callers (the `x-litellm-tags`
    header) and key creators choose, so an agency's own calls could be made to vanish."""
    payload = json.loads((FIXTURES / "litellm/standard_logging_payloads.json").read_text())[0]
    row = json.loads((FIXTURES / "litellm/spend_logs.json").read_text())[0]
    name = "litellm-internal-health-check"
    hashed = "2ee659761968def976c7905217d96fa6e765f300dfb066f6c73fd3c279b3435a"
    # A call made with an agency's key, as the proxy logs it (the key hashed).
    metadata = {
        **payload["metadata"],
        "user_api_key_hash": hashlib.sha256(b"sk-agency").hexdigest(),
    }
    payload = {**payload, "metadata": metadata}
    # The health checks: by the key (as the name, or hashed) or the proxy's team for them.
    for marks in ({"user_api_key_hash": name}, {"user_api_key_hash": hashed},
                  {"user_api_key_hash": None, "user_api_key_team_id": name}):  # fmt: skip
        assert run(litellm.map_payload, {**payload, "metadata": {**metadata, **marks}}, ONE) is None
    assert run(litellm.map_spend_log, {**row, "api_key": hashed}, ONE) is None
    assert run(litellm.map_spend_log, {**row, "api_key": name}, ONE) is None
    assert run(litellm.map_spend_log, {**row, "team_id": name}, ONE) is None
    # A caller's own call, tagged or aliased so by whoever chose the tag or the alias: counted.
    tagged = {**payload, "request_tags": [name]}
    aliased = {**payload, "metadata": {**metadata, "user_api_key_alias": name,
                                       "user_api_key_team_alias": name}}  # fmt: skip
    for call in (payload, tagged, aliased):
        assert _valid(run(litellm.map_payload, call, ONE)).record_id
    assert row["api_key"] not in (name, hashed)
    for r in (
        {**row, "request_tags": f'["{name}"]'},
        {**row, "metadata": {"user_api_key_alias": name, "user_api_key_team_alias": name}},
    ):
        assert _valid(run(litellm.map_spend_log, r, ONE)).record_id


def test_openai_jsonl_lines() -> None:
    lines = (FIXTURES / "openai/access.jsonl").read_text().splitlines()
    mapped = [run(openai_log.map_line, json.loads(line), ONE) for line in lines]
    chat, batch, responses, embeddings = (_valid(m) for m in mapped[:4])
    assert (chat.record_id, chat.agency_id, chat.latency_ms) == ("chatcmpl-9xY1", "in-cbse", 412)
    # A Batch output line: its request id (req_77), not the body's chatcmpl-b7.
    assert (batch.record_id, batch.input_tokens, batch.provider) == ("req_77", 900, "openai")
    assert responses.record_id.startswith("oai:") and responses.status == "error"
    assert (responses.provider, responses.region, responses.output_tokens) == (
        "azure_openai", "centralindia", 7)  # fmt: skip
    assert embeddings.operation == "embeddings"
    assert isinstance(mapped[4], Rejected) and mapped[4].field == "usage"


def test_hash_ids_are_stable_whatever_the_key_order() -> None:
    line = json.loads((FIXTURES / "openai/access.jsonl").read_text().splitlines()[2])
    reordered = dict(reversed(list(line.items())))
    first, second = run(openai_log.map_line, line, ONE), run(openai_log.map_line, reordered, ONE)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["record_id"] == second["record_id"]
    changed = run(openai_log.map_line, {**line, "status_code": 200}, ONE)
    assert isinstance(changed, dict) and changed["record_id"] != first["record_id"]


def test_csv_rows_aliases_and_naive_time_refused() -> None:
    with (FIXTURES / "csv/usage_export.csv").open() as f:
        rows = list(csv.DictReader(f))
    first, second, naive = (run(csv_export.map_row, r, NONE) for r in rows)
    record = _valid(first)
    assert (record.input_tokens, record.cost, record.currency) == (120, Decimal("0.0042"), "USD")
    assert _valid(second).occurred_at.hour == 18  # +05:30 converted to UTC
    assert isinstance(naive, Rejected) and naive.field == "occurred_at"
    assert csv_export.ignored_columns(list(rows[0])) == ["total_tokens"]


def test_a_csv_header_that_does_not_say_which_column_gives_a_field_stops_its_file(
    tmp_path: Path,
) -> None:
    """Found in review: with `request_id` and `id` (a row number) the later column won, so rows
    of two exports sharing a row number counted as one record. Two aliases of one field, or a
    repeated column, now stop the file naming them; the field's own name beside an alias wins."""
    conflicts = csv_export.header_conflicts
    assert conflicts(["request_id", "agency_id", "id"]) == (
        "columns 'request_id' and 'id' all give record_id: the importer cannot tell which to "
        "read; rename the one to use 'record_id', or drop the others, and run again")  # fmt: skip
    assert "'timestamp' and 'created_at' all give occurred_at" in str(
        conflicts(["timestamp", "model", "created_at"]))  # fmt: skip
    assert conflicts(["model", "x", "model"]) == (
        "the CSV header repeats column(s) 'model': keep one")  # fmt: skip
    assert "'Model' and 'model'" in str(conflicts(["Model", "model"]))  # two of its own name
    assert conflicts(["record_id", "request_id", "id", "notes", "total"]) is None
    row = {"id": "7", "record_id": "req-aaa", "agency_id": "in-moe", "occurred_at":
           "2026-07-01T10:00:00Z", "provider": "sarvam", "model": "m"}  # fmt: skip
    assert _valid(run(csv_export.map_row, row, NONE)).record_id == "req-aaa"
    assert _valid(run(csv_export.map_row, {**row, "record_id": ""}, NONE)).record_id == "7"
    export = tmp_path / "two.csv"
    export.write_text("request_id,agency_id,occurred_at,provider,model,id\n"
                      "req-1,in-moe,2026-07-01T10:00:00Z,sarvam,m,1\n")  # fmt: skip
    with pytest.raises(FileStopped, match="'request_id' and 'id' all give record_id") as stop:
        list(read_csv(export, 0, 0, NONE))
    assert stop.value.line == 1


def test_an_agency_named_by_something_other_than_text_is_refused_not_defaulted() -> None:
    """Found in review: `agency_id: 42` (or a list, or an int OTLP attribute) fell through to
    the default agency, so the usage counted for another agency. Blank still means unnamed."""
    line = json.loads((FIXTURES / "openai/access.jsonl").read_text().splitlines()[0])
    for odd in (42, ["in-moe"], {"id": "in-moe"}, True):
        refused = run(openai_log.map_line, {**line, "agency_id": odd}, ONE)
        assert isinstance(refused, Rejected) and refused.field == "agency_id", odd
        assert "an agency is named by a string" in refused.reason
    blank = run(openai_log.map_line, {**line, "agency_id": "  ", "metadata": {}}, ONE)
    assert _valid(blank).agency_id == "in-mohfw"
    item = _otlp_items()[0]
    numbered = otlp.SpanItem(item.span, {**item.resource, "tracker.agency_id": 7})
    assert isinstance(run(otlp.map_span, numbered, ONE), Rejected)


def test_a_line_over_the_limit_is_refused_unread_and_the_lines_after_it_are_read(
    tmp_path: Path,
) -> None:
    """Found in review: each line was read whole before any check, so one line of gigabytes
    took all memory (a 200 MB JSONL line was parsed and accepted). A line over MAX_LINE_BYTES
    is now skipped in chunks: refused in JSON Lines, where the next line is read; in CSV, where
    its cells and quotes cannot be told unread, the file stops there, the rows before it read."""
    good = json.dumps({"request_id": "r-ok", "timestamp": "2026-07-01T10:00:00Z",
                       "model": "m", "usage": {"prompt_tokens": 1}})  # fmt: skip
    long_line = b'{"pad": "' + b"x" * (4 * MAX_LINE_BYTES) + b'"}\n'
    log = tmp_path / "big.jsonl"
    log.write_bytes(good.encode() + b"\n" + long_line + good.replace("r-ok", "r-ok2").encode())
    tracemalloc.start()
    try:
        items = list(read_jsonl(log, 0, 0, ONE))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * MAX_LINE_BYTES  # the 64 MiB line was never held whole (readline copies)
    assert [i.line for i in items] == [1, 2, 3]
    assert [_valid(items[i].mapped).record_id for i in (0, 2)] == ["r-ok", "r-ok2"]
    assert isinstance(items[1].mapped, Rejected) and items[1].mapped.field == "line"
    assert "longer than 16,777,216 bytes" in items[1].mapped.reason
    assert items[2].end == log.stat().st_size

    header = "record_id,agency_id,occurred_at,provider,model\n"
    row = "c-{},in-moe,2026-07-01T10:00:00Z,sarvam,m\n"
    export = tmp_path / "big.csv"
    export.write_bytes((header + row.format(1)).encode() + long_line + row.format(2).encode())
    read: list[Any] = []
    with pytest.raises(FileStopped, match="longer than 16,777,216 bytes") as stop:
        read.extend(read_csv(export, 0, 0, NONE))
    assert stop.value.line == 3
    assert [_valid(i.mapped).record_id for i in read] == ["c-1"]
    huge_header = tmp_path / "head.csv"
    huge_header.write_bytes(long_line)
    with pytest.raises(FileStopped, match="the CSV header is longer than"):
        list(read_csv(huge_header, 0, 0, NONE))


def test_opengatellm_rows_and_me_usage() -> None:
    rows = json.loads((FIXTURES / "opengatellm/usage_rows.json").read_text())
    chat, rerank, files = (run(opengatellm.map_row, r, ONE) for r in rows)
    record = _valid(chat)
    assert (record.record_id, record.operation, record.latency_ms) == (
        "opengatellm-101", "chat", 1200)  # fmt: skip
    assert (record.endpoint_host, record.currency, record.output_tokens) == (
        "albert.api.etalab.gouv.fr", "EUR", 71)  # fmt: skip
    assert record.energy_wh == pytest.approx(1.5)
    assert _valid(rerank).status == "error" and files is None
    me = opengatellm.unwrap(json.loads((FIXTURES / "opengatellm/me_usage.json").read_text()))
    usage = _valid(run(opengatellm.map_row, me[0], ONE))
    assert (usage.latency_ms, usage.input_tokens) == (350, 12)
    assert usage.energy_wh == pytest.approx(0.2)


# A row of OpenGateLLM's current usage table (api/infrastructure/postgres/models.py, class
# Usage, etalab-ia/OpenGateLLM dc29c62), with the provider's url joined in as client_url.
CURRENT_OGL_ROW = {
    "id": 5001, "created": "2026-09-25T10:00:00.123+00:00", "user_id": 12, "token_id": 40,
    "router_id": 3, "provider_id": 7, "user_email": "a@b.fr", "token_name": "k",
    "router_name": "albert-large", "provider_model_name": "mistralai/Mistral-Small-3.2",
    "request_id": "req-abc", "endpoint": "/v1/chat/completions", "latency": 1200, "ttft": 180,
    "status": 200, "prompt_tokens": 230, "completion_tokens": 71.0, "total_tokens": 301,
    "cost": 0.0031, "kwh": 0.0015, "kgco2eq": 0.00007,
    "client_url": "https://llm.numerique.gouv.fr/v1",
}  # fmt: skip


def test_opengatellm_current_usage_rows_and_answers() -> None:
    """Found in review (2026-11-26): rows of OpenGateLLM's current usage table (`created`,
    `router_name`/`provider_model_name`, `latency`, `kwh`) were taken for rows without a
    model and ignored with a 200, and its current answer items (`"object": "usage"`, `kWh` a
    number) were refused for a missing `datetime`."""
    for mapped in (
        run(opengatellm.map_row, CURRENT_OGL_ROW, ONE),
        run(openai_log.map_line, CURRENT_OGL_ROW, ONE),  # a JSON Lines export
        run(csv_export.map_row, {k: str(v) for k, v in CURRENT_OGL_ROW.items()}, ONE),  # CSV
    ):
        record = _valid(mapped)
        assert (record.record_id, record.model, record.operation) == (
            "opengatellm-5001", "mistralai/Mistral-Small-3.2", "chat")  # fmt: skip
        assert (record.input_tokens, record.output_tokens, record.latency_ms) == (230, 71, 1200)
        assert record.occurred_at == datetime(2026, 9, 25, 10, 0, 0, 123000, tzinfo=UTC)
        assert record.energy_wh == pytest.approx(1.5)
        assert record.endpoint_host == "llm.numerique.gouv.fr"
    asked_only = {k: v for k, v in CURRENT_OGL_ROW.items() if k != "provider_model_name"}
    assert _valid(run(opengatellm.map_row, asked_only, ONE)).model == "albert-large"
    item = {"object": "usage", "model": "albert-large", "key": "k",
            "endpoint": "/v1/chat/completions", "created": 1767258000,
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
                      "cost": 0.0004, "impacts": {"kWh": 0.0002, "kgCO2eq": 0.00001},
                      "metrics": {"latency": 350, "ttft": 90}}}  # fmt: skip
    answer = {"object": "list", "total": 1, "offset": 0, "limit": 10, "data": [item]}
    (opened,) = opengatellm.unwrap([answer])
    usage = _valid(run(opengatellm.map_row, opened, ONE))
    assert (usage.latency_ms, usage.input_tokens, usage.output_tokens) == (350, 12, 30)
    assert usage.energy_wh == pytest.approx(0.2)


def test_cloudevents_batch() -> None:
    events = json.loads((FIXTURES / "cloudevents/batch.json").read_text())
    usage, ogl, no_time, bad_name = (run(cloudevents.map_event, e, NONE) for e in events)
    record = _valid(usage)
    assert (record.agency_id, record.use_case, record.record_id[:3]) == (
        "in-moe",
        "education",
        "ce:",
    )
    assert _valid(ogl).record_id == "opengatellm-4411"
    refused = parse_record_error(no_time)
    assert refused == "occurred_at"
    assert isinstance(bad_name, Rejected) and "lowercase" in bad_name.reason


def parse_record_error(mapped: Mapped) -> str:
    from pydantic import ValidationError

    assert isinstance(mapped, dict)
    with pytest.raises(ValidationError) as info:
        parse_record(mapped, gateway_id="gw")
    return str(info.value.errors()[0]["loc"][0])


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"specversion": "1.0", "id": "", "source": "s", "type": cloudevents.USAGE_TYPE}, "id"),
        ({"specversion": "1.0", "id": 5, "source": "s", "type": cloudevents.USAGE_TYPE}, "id"),
        ({"id": "a", "source": "s", "type": cloudevents.USAGE_TYPE}, "specversion"),
        (
            {
                "specversion": "1.0",
                "id": "a",
                "source": "s",
                "type": cloudevents.USAGE_TYPE,
                "data": {},
                "data_base64": "e30=",
            },
            "event",
        ),
        (
            {
                "specversion": "1.0",
                "id": "a",
                "source": "s",
                "type": cloudevents.USAGE_TYPE,
                "time": "2026-01-01T00:00:00",
            },
            "time",
        ),
    ],
)
def test_cloudevents_spec_is_strict(event: dict[str, Any], field: str) -> None:
    refused = run(cloudevents.map_event, event, ONE)
    assert isinstance(refused, Rejected) and refused.field == field


def test_coercions() -> None:
    assert as_int("12") == 12 and as_int(12.0) == 12 and as_int("") is None
    for bad in ("1.5", True, "x"):
        with pytest.raises(ValueError):
            as_int(bad)
    assert as_time(1767225600).isoformat() == "2026-01-01T00:00:00+00:00"
    assert as_time(1767225600000) == as_time("2026-01-01T00:00:00Z")
    assert as_time("2026-01-01 00:00:00", assume_utc=True) == as_time(1767225600)
    with pytest.raises(ValueError):
        as_time("2026-01-01 00:00:00")


def test_jsonl_reader_lines_offsets_and_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = (FIXTURES / "openai/access.jsonl").read_text().splitlines()[0]
    path.write_text(f"{good}\n\nnot json\n{good}")
    # While the file may still grow (the watcher), the unterminated last line is left.
    items = list(read_jsonl(path, 0, 0, ONE, final=False))
    assert [i.line for i in items] == [1, 3]  # blank skipped, unfinished last line left
    assert isinstance(items[1].mapped, Rejected)
    assert items[-1].end == len(f"{good}\n\nnot json\n")


def test_csv_reader_quoted_newlines_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('model,provider,agency_id,timestamp,use_case\n'
                    'm1,p,in-mohfw,2026-01-01T00:00:00Z,"two\nlines"\n'
                    'm2,p,in-mohfw,2026-01-01T00:00:00Z,x\n')  # fmt: skip
    items = list(read_csv(path, 0, 0, ONE))
    assert [i.line for i in items] == [2, 4]
    resumed = list(read_csv(path, items[0].end, 3, ONE))
    assert [(i.line, _valid(i.mapped).model) for i in resumed] == [(4, "m2")]


def test_checkpoints_resume_append_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_text("one\ntwo\n")
    marks = Checkpoints(tmp_path / "cp.json")
    assert marks.resume(log) == (0, 0)
    marks.save(log, 8, 2)
    with log.open("a") as f:
        f.write("three\n")
    assert Checkpoints(tmp_path / "cp.json").resume(log) == (8, 2)  # appended: continue
    log.write_text("new\n")  # truncated and rewritten: start over
    assert Checkpoints(tmp_path / "cp.json").resume(log) == (0, 0)
    log.unlink()
    (tmp_path / "b.jsonl").write_text("xxx\nyyy\nzzz\n")
    (tmp_path / "b.jsonl").rename(log)  # another file under the same name
    assert Checkpoints(tmp_path / "cp.json").resume(log) == (0, 0)


# --- Defects found in review (tests fail without their fixes) -------------------------------


def _otlp_request(resource: dict[str, str], *spans: dict[str, Any]) -> list[otlp.SpanItem]:
    """An OTLP/JSON ExportTraceServiceRequest (hex ids, string attributes except token counts),
    decoded the way /v1/traces decodes it."""

    def kv(key: str, value: Any) -> dict[str, Any]:
        if isinstance(value, int):
            return {"key": key, "value": {"intValue": str(value)}}
        return {"key": key, "value": {"stringValue": value}}

    body = {"resourceSpans": [{
        "resource": {"attributes": [kv(k, v) for k, v in resource.items()]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": [
            {"kind": 3, **{k: v for k, v in span.items() if k != "attributes"},
             "name": "chat",
             "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000",
             "attributes": [kv(k, v) for k, v in span["attributes"].items()]}
            for span in spans]}]}]}  # fmt: skip
    return list(otlp.spans(otlp.decode(json.dumps(body).encode(), "application/json")))


CHAT_SPAN: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "aws.bedrock",
    "gen_ai.request.model": "anthropic.claude-3-5-sonnet",
    "server.address": "bedrock-runtime.us-east-1.amazonaws.com",
    "gen_ai.usage.input_tokens": 100,
}


def test_otlp_region_is_the_called_service_s_not_the_application_s() -> None:
    # OTel semconv: a resource's cloud.region is where the instrumented app runs; on a client
    # span it "identifies the region where the called destination is deployed". An app in
    # ap-south-1 calling Bedrock in us-east-1 must not be recorded as served in ap-south-1.
    app_in_mumbai = {"cloud.provider": "aws", "cloud.region": "ap-south-1"}
    ids = {"traceId": "0af7651916cd43dd8448eb211c80319c"}
    unstated, stated = _otlp_request(
        app_in_mumbai,
        {**ids, "spanId": "b7ad6b7169203331", "attributes": CHAT_SPAN},
        {**ids, "spanId": "b7ad6b7169203332",
         "attributes": {**CHAT_SPAN, "cloud.region": "us-east-1"}},
    )  # fmt: skip
    assert _valid(run(otlp.map_span, unstated, ONE)).region is None
    assert _valid(run(otlp.map_span, stated, ONE)).region == "us-east-1"


def test_otlp_record_id_is_the_span_not_a_repeated_response_id() -> None:
    # Ollama's OpenAI-compatible API names every answer chatcmpl-<rand.Intn(999)>: two distinct
    # calls may share gen_ai.response.id, and must still count twice.
    ollama = {**CHAT_SPAN, "gen_ai.provider.name": "openai", "gen_ai.response.id": "chatcmpl-512"}
    spans = (
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "attributes": ollama},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
         "attributes": {**ollama, "gen_ai.usage.input_tokens": 900}},
    )  # fmt: skip
    first = [_valid(run(otlp.map_span, item, ONE)) for item in _otlp_request({}, *spans)]
    assert [r.record_id for r in first] == [
        "otel:0af7651916cd43dd8448eb211c80319cb7ad6b7169203331",
        "otel:4bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b7",
    ]
    # An exporter's retry resends the same spans: the same ids, so they land once.
    again = [_valid(run(otlp.map_span, item, ONE)) for item in _otlp_request({}, *spans)]
    assert [r.record_id for r in again] == [r.record_id for r in first]
    # Only a span without ids (OTLP requires them) falls back on the response id.
    (idless,) = _otlp_request({}, {"attributes": ollama})
    assert _valid(run(otlp.map_span, idless, ONE)).record_id == "chatcmpl-512"


# Every gen_ai.operation.name of the current GenAI semantic conventions registry
# (open-telemetry/semantic-conventions-genai model/gen-ai/registry.yaml) that is not a call to
# a model, with the attributes its span definition (spans.yaml) gives it.
NOT_MODEL_CALLS = [
    ("create_agent", {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}),
    ("invoke_agent", {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}),
    ("invoke_workflow", {"gen_ai.workflow.name": "multi_agent_rag"}),
    ("plan", {"gen_ai.agent.name": "triage"}),
    ("execute_tool", {"gen_ai.tool.name": "Flights"}),
    ("retrieval", {"gen_ai.provider.name": "openai", "gen_ai.request.model":
                   "text-embedding-3-small", "gen_ai.data_source.id": "vs_123"}),
    ("search_memory", {"gen_ai.provider.name": "aws.bedrock", "gen_ai.memory.store.id": "ms_1"}),
    ("create_memory", {"gen_ai.memory.store.id": "ms_1"}),
    ("update_memory", {"gen_ai.memory.store.id": "ms_1"}),
    ("upsert_memory", {"gen_ai.memory.store.id": "ms_1"}),
    ("delete_memory", {"gen_ai.memory.store.id": "ms_1"}),
    ("create_memory_store", {"gen_ai.provider.name": "aws.bedrock"}),
    ("delete_memory_store", {"gen_ai.provider.name": "aws.bedrock"}),
]  # fmt: skip


@pytest.mark.parametrize(("operation", "attributes"), NOT_MODEL_CALLS)
def test_otlp_ignores_operations_that_are_not_model_calls(
    operation: str, attributes: dict[str, Any]
) -> None:
    # An agent invoked in process (INTERNAL) wraps model-call spans of its own; a CLIENT one
    # calls a remote agent service and is counted (the test below).
    kind = 1 if operation == "invoke_agent" else 3
    (item,) = _otlp_request(
        {"tracker.agency_id": "in-mohfw"},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "kind": kind, "attributes": {"gen_ai.operation.name": operation, **attributes}},
    )  # fmt: skip
    assert run(otlp.map_span, item, NONE) is None  # neither counted nor refused


def test_otlp_counts_a_remote_agent_invocation() -> None:
    """Found in review (2026-11-26): an `invoke_agent` span of kind CLIENT (semantic
    conventions `gen_ai.invoke_agent.client`: an agent a remote service runs, e.g. AWS Bedrock
    Agents) is the only record of its inference, whose model calls have no spans in the
    caller's trace; it was ignored like the INTERNAL spans that wrap model-call spans."""
    remote = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "aws.bedrock",
              "gen_ai.request.model": "anthropic.claude-3-5-sonnet",
              "server.address": "bedrock-agent-runtime.ap-south-1.amazonaws.com",
              "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}  # fmt: skip
    client, internal = _otlp_request(
        {"tracker.agency_id": "in-mohfw"},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "kind": 3, "attributes": remote},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203332",
         "kind": 1, "attributes": remote},
    )  # fmt: skip
    record = _valid(run(otlp.map_span, client, NONE))
    assert (record.input_tokens, record.output_tokens, record.operation) == (1200, 300, "other")
    assert record.endpoint_host == "bedrock-agent-runtime.ap-south-1.amazonaws.com"
    assert run(otlp.map_span, internal, NONE) is None


def test_otlp_an_in_process_agents_client_span_is_not_counted_beside_its_model_calls() -> None:
    """Found in review of the remote-agent change (2026-11-26): some frameworks give their
    in-process agent's `invoke_agent` span kind CLIENT (JetBrains Koog), with the provider, the
    model and the run's summed tokens, and a `chat` span per model call under it: counting the
    agent span counted each run once more and its tokens twice. A remote agent's span names
    the service it called (`server.address`); one without it is ignored."""
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
             "gen_ai.usage.output_tokens": 20}  # fmt: skip
    chat = {**agent, "gen_ai.operation.name": "chat"}
    trace = "0af7651916cd43dd8448eb211c80319c"
    agent_item, chat_item, blank_item = _otlp_request(
        {"tracker.agency_id": "in-mohfw"},
        {"traceId": trace, "spanId": "b7ad6b7169203331", "kind": 3, "attributes": agent},
        {"traceId": trace, "spanId": "b7ad6b7169203332", "parentSpanId": "b7ad6b7169203331",
         "kind": 3, "attributes": chat},
        {"traceId": trace, "spanId": "b7ad6b7169203333", "kind": 3,
         "attributes": {**agent, "server.address": "  "}},
    )  # fmt: skip
    assert run(otlp.map_span, agent_item, NONE) is None
    assert run(otlp.map_span, blank_item, NONE) is None
    counted = _valid(run(otlp.map_span, chat_item, NONE))
    assert (counted.operation, counted.input_tokens) == ("chat", 100)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [("chat", "chat"), ("generate_content", "chat"), ("text_completion", "completion"),
     ("embeddings", "embeddings")],
)  # fmt: skip
def test_otlp_model_calls_still_count(operation: str, expected: str) -> None:
    (item,) = _otlp_request(
        {},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "attributes": {**CHAT_SPAN, "gen_ai.operation.name": operation}},
    )  # fmt: skip
    assert _valid(run(otlp.map_span, item, ONE)).operation == expected


def test_openai_log_record_id_is_the_request_s_not_a_repeated_response_id() -> None:
    def line(request_id: str | None, hour: int, tokens: int) -> dict[str, Any]:
        logged = {"timestamp": f"2026-01-01T{hour:02d}:00:00Z", "endpoint_host": "ollama.moh.in",
                  "response": {"id": "chatcmpl-512", "object": "chat.completion",
                               "created": 1767225600 + 3600 * hour, "model": "llama3.1:8b",
                               "usage": {"prompt_tokens": tokens, "completion_tokens": 5}}}  # fmt: skip
        return logged if request_id is None else {"request_id": request_id, **logged}

    a, b = (_valid(run(openai_log.map_line, line(r, h, t), ONE))
            for r, h, t in (("req-1", 0, 100), ("req-2", 1, 900)))  # fmt: skip
    assert (a.record_id, b.record_id) == ("req-1", "req-2")
    resent = _valid(run(openai_log.map_line, json.loads(json.dumps(line("req-1", 0, 100))), ONE))
    assert resent.record_id == "req-1"
    # Nothing better on the line: the response id is the fallback.
    assert _valid(run(openai_log.map_line, line(None, 2, 7), ONE)).record_id == "chatcmpl-512"


def test_openai_batch_output_of_responses_api_is_dated_by_created_at() -> None:
    # One line of an OpenAI Batch output file for /v1/responses: the body is a Response object,
    # dated `created_at` (a Chat Completion says `created`).
    batch_line = {"id": "batch_req_1", "custom_id": "r-1", "error": None,
                  "response": {"status_code": 200, "request_id": "req_abc", "body": {
                      "id": "resp_67ccd2bed1ec8190", "object": "response",
                      "created_at": 1741476542, "status": "completed",
                      "model": "gpt-4o-2024-08-06",
                      "usage": {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123}}}}  # fmt: skip
    record = _valid(run(openai_log.map_line, batch_line, ONE))
    assert record.occurred_at == as_time(1741476542)
    assert (record.record_id, record.operation, record.input_tokens) == ("req_abc", "chat", 36)


def test_a_last_line_without_line_break_is_read_once(tmp_path: Path) -> None:
    # RFC 4180 §2.2 and JSON Lines make the final line break optional: a finished file's last
    # record must be read, and the checkpoint must then end past it.
    jsonl, csv_file = tmp_path / "access.jsonl", tmp_path / "export.csv"
    jsonl.write_text(
        '{"id":"chatcmpl-1","created":1767225600,"model":"gpt-4o","usage":{"prompt_tokens":1}}\n'
        '{"id":"chatcmpl-2","created":1767225660,"model":"gpt-4o","usage":{"prompt_tokens":3}}'
    )
    csv_file.write_bytes(b"record_id,occurred_at,provider,model,input_tokens\r\n"
                         b"r1,2026-01-01T00:00:00Z,openai,gpt-4o,10\r\n"
                         b"r2,2026-01-01T00:01:00Z,openai,gpt-4o,20")  # fmt: skip
    marks = Checkpoints(tmp_path / "cp.json")
    for path, reader, ids in ((jsonl, read_jsonl, ["chatcmpl-1", "chatcmpl-2"]),
                              (csv_file, read_csv, ["r1", "r2"])):  # fmt: skip
        items = list(reader(path, 0, 0, ONE))
        assert [_valid(i.mapped).record_id for i in items] == ids
        assert items[-1].end == path.stat().st_size
        marks.save(path, items[-1].end, items[-1].line)
        offset, line = Checkpoints(tmp_path / "cp.json").resume(path)
        assert list(reader(path, offset, line, ONE)) == []  # a re-run reads nothing twice
        # Held back only while the file may still grow (the watcher, before it settles).
        assert [_valid(i.mapped).record_id for i in reader(path, 0, 0, ONE, final=False)] == (
            ids[:1])  # fmt: skip


def test_a_json_array_file_is_refused_saying_json_lines(tmp_path: Path) -> None:
    # docs/collectors.md once said an OpenGateLLM usage export in JSON could be imported; only
    # JSON Lines is read, and a whole-array file says so rather than a bare type error.
    path = tmp_path / "usage.json"
    path.write_text('[{"id": 7, "datetime": "2025-10-10 12:00:00", "model": "albert-large"}]\n')
    (item,) = read_jsonl(path, 0, 0, ONE)
    assert isinstance(item.mapped, Rejected) and "JSON Lines" in item.mapped.reason


def test_cloudevents_extension_names_over_20_characters_are_accepted() -> None:
    # CloudEvents 1.0: names "SHOULD NOT exceed 20 characters" (advice), but MUST be lowercase
    # a-z or 0-9 (a rule, still enforced).
    event = {"specversion": "1.0", "id": "evt-1", "source": "//gw.example/app",
             "type": cloudevents.USAGE_TYPE, "time": "2026-01-01T00:00:00Z",
             "deploymentenvironment": "prod", "agencyid": "in-moe",
             "data": {"provider": "krutrim", "model": "krutrim-2", "input_tokens": 300}}  # fmt: skip
    assert _valid(run(cloudevents.map_event, event, NONE)).agency_id == "in-moe"
    for bad in ("deployment_environment", "Deploymentenvironment", "env\n"):
        refused = run(cloudevents.map_event, {**event, bad: "prod"}, NONE)
        assert isinstance(refused, Rejected) and "lowercase" in refused.reason, bad


def test_opengatellm_answers_are_opened_wherever_they_stand() -> None:
    # Found in review: a /v1/me/usage answer holding a number orjson cannot read (1e400) came
    # to unwrap as a one-item list (json_items), was left whole, taken for a row without a
    # model and ignored with a 200: every record in it lost.
    item = {"object": "me.usage", "model": "albert-large", "endpoint": "/v1/chat/completions",
            "status": 200, "created": 1767225600, "usage": {"prompt_tokens": 10}}  # fmt: skip
    answer = json.dumps({"object": "list", "data": [item, {**item, "created": 1767225601}]})
    body = answer[:-2] + ', {"object": "me.usage", "model": "albert-large", ' \
        '"created": 1767225602, "usage": {"prompt_tokens": 1e400}}]}'  # fmt: skip
    mapped = [run(opengatellm.map_row, row, ONE)
              for row in opengatellm.unwrap(json_items(body.encode()))]  # fmt: skip
    assert [_valid(m).input_tokens for m in mapped[:2]] == [10, 10]
    assert isinstance(mapped[2], Rejected) and mapped[2].field == "prompt_tokens", mapped
    page = json.dumps({"object": "list", "data": [item]})  # pages of answers as JSON lines
    assert len(opengatellm.unwrap(json_items(f"{page}\n{page}".encode()))) == 2
    refused = run(opengatellm.map_row, {"object": "list", "data": {"model": "m"}}, ONE)
    assert isinstance(refused, Rejected) and refused.field == "data", refused


def _usage_event(**attributes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "evt-1", "source": "//gw.example/app",
            "type": cloudevents.USAGE_TYPE, "time": "2026-01-01T00:00:00Z",
            "data": {"provider": "krutrim", "model": "krutrim-2"}, **attributes}  # fmt: skip


def test_cloudevents_record_ids_are_unambiguous_and_kept_across_the_upgrade() -> None:
    # Found in review: the id hashed source + "\n" + id, so these two distinct events shared
    # one record id and the second counted as a resend of the first.
    def record_id(source: str, event_id: str) -> str:
        mapped = run(cloudevents.map_event, _usage_event(source=source, id=event_id), ONE)
        return _valid(mapped).record_id

    assert record_id("//gw/a\nb", "c") != record_id("//gw/a", "b\nc")
    # A single-line pair (nearly every event) keeps the id earlier releases gave it, so its
    # resend after the upgrade still lands once.
    assert record_id("//gw/a", "b") == "ce:" + hashlib.sha256(b"//gw/a\nb").hexdigest()[:40]


@pytest.mark.parametrize("when", [1767225600, 1767225600.5, "1767225600", "2026-01-01T00:00:00"])
def test_cloudevents_time_is_rfc3339_text_only(when: Any) -> None:
    # Found in review: a number or a string of digits was read as Unix time (pydantic's lax
    # datetime), though the specification and docs/collectors.md say RFC 3339.
    refused = run(cloudevents.map_event, _usage_event(time=when), ONE)
    assert isinstance(refused, Rejected) and refused.field == "time", refused
    assert "RFC 3339" in refused.reason
    zoned = _valid(run(cloudevents.map_event, _usage_event(time="2026-01-01T05:30:00+05:30"), ONE))
    assert zoned.occurred_at.isoformat() == "2026-01-01T00:00:00+00:00"


def test_otlp_json_value_no_field_holds_refuses_its_span_only() -> None:
    # Found in review: one 1e400 was a 400 for the whole export (orjson refused the document),
    # and an exporter drops an export refused with 400.
    def span(number: int, **fields: Any) -> dict[str, Any]:
        attributes = {"gen_ai.operation.name": {"stringValue": "chat"},
                      "gen_ai.provider.name": {"stringValue": "openai"},
                      "gen_ai.request.model": {"stringValue": "gpt-4o"},
                      "gen_ai.usage.input_tokens": {"intValue": "12"},
                      **fields.pop("attributes", {})}  # fmt: skip
        return {"traceId": f"{number:032x}", "spanId": f"{number:016x}", "name": "chat",
                "startTimeUnixNano": "1767225600000000000",
                "endTimeUnixNano": "1767225601000000000",
                "attributes": [{"key": k, "value": v} for k, v in attributes.items()],
                **fields}  # fmt: skip

    spans = [span(1), span(2, attributes={"gen_ai.usage.input_tokens": {"doubleValue": "@1"}}),
             span(3, startTimeUnixNano="@2"),
             {"traceId": f"{4:032x}", "spanId": f"{4:016x}", "name": "GET /",
              "attributes": [{"key": "http.x", "value": {"doubleValue": "@3"}}]}]  # fmt: skip
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    for marker, number in (("@1", "1e400"), ("@2", "1" + "0" * 400), ("@3", "NaN")):
        body = body.replace(f'"{marker}"', number)
    items = list(otlp.spans(otlp.decode(body.encode(), "application/json")))
    good, big_float, big_int, not_genai = (run(otlp.map_span, item, ONE) for item in items)
    assert _valid(good).input_tokens == 12
    assert isinstance(big_float, Rejected), big_float
    assert big_float.field == "gen_ai.usage.input_tokens" and "Infinity" in big_float.reason
    assert isinstance(big_int, Rejected) and big_int.field == "startTimeUnixNano", big_int
    assert len(big_int.reason) <= 200
    # Counted as refused rather than lost in silence: the unreadable value might have been
    # the very attribute saying it is a GenAI span.
    assert isinstance(not_genai, Rejected) and not_genai.field == "http.x", not_genai
    assert otlp.describe(items[1]).startswith(f"span {2:016x} of trace")
    with pytest.raises(otlp.OtlpDecodeError):  # outside every span: the body is refused
        otlp.decode(b'{"resourceSpans": [{"resource": {"attributes": [{"key": "x", "value": '
                    b'{"doubleValue": 1e400}}]}}]}', "application/json")  # fmt: skip


def test_otlp_json_lone_surrogate_refuses_its_span_only() -> None:
    # Found in review: one lone surrogate escape (an emoji cut by JSON.stringify) anywhere in an
    # OTLP/JSON export was a 400 for the whole export.
    spans = [
        {"traceId": f"{n:032x}", "spanId": f"{n:016x}", "name": name,
         "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000",
         "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in (
             ("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
             ("gen_ai.request.model", model))]}
        for n, name, model in ((1, "chat", "gpt-4o"), (2, "chat", "gpt-4o@cut"),
                               (3, "chat @cut", "gpt-4o"))
    ]  # fmt: skip
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    body = body.replace("@cut", "\\ud83d")
    items = list(otlp.spans(otlp.decode(body.encode(), "application/json")))
    good, in_attribute, in_name = (run(otlp.map_span, item, ONE) for item in items)
    assert _valid(good).model == "gpt-4o"
    assert isinstance(in_attribute, Rejected), in_attribute
    assert in_attribute.field == "gen_ai.request.model" and "surrogate" in in_attribute.reason
    assert isinstance(in_name, Rejected) and in_name.field == "name", in_name
    assert otlp.describe(items[1]).startswith(f"span {2:016x} of trace")  # its ids are kept
    with pytest.raises(otlp.OtlpDecodeError, match=r"resourceSpans\.0\.resource\.attributes\.0"):
        otlp.decode(b'{"resourceSpans": [{"resource": {"attributes": [{"key": "x", "value": '
                    b'{"stringValue": "\\udc00"}}]}}]}', "application/json")  # fmt: skip


def _otlp_json(*spans: dict[str, Any]) -> list[otlp.SpanItem]:
    """OTLP/JSON spans with raw AnyValue attributes, decoded the way /v1/traces decodes them."""
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"name": "chat", "startTimeUnixNano": "1767225600000000000",
         "endTimeUnixNano": "1767225601000000000",
         **{k: v for k, v in span.items() if k != "attributes"},
         "attributes": [{"key": k, "value": v} for k, v in span["attributes"].items()]}
        for span in spans]}]}]}  # fmt: skip
    return list(otlp.spans(otlp.decode(json.dumps(body).encode(), "application/json")))


RAW_CHAT: dict[str, Any] = {
    "gen_ai.operation.name": {"stringValue": "chat"},
    "gen_ai.provider.name": {"stringValue": "openai"},
    "gen_ai.request.model": {"stringValue": "gpt-4o"},
}


def test_otlp_operation_name_that_is_no_string_refuses_its_span_only() -> None:
    # Found in review: an array (unhashable) in `... in NOT_INFERENCES` raised TypeError, a 500
    # that lost every span of the export.
    ids = {"traceId": "5b8efff798038103d269b633813fc60c"}
    odd = [{"arrayValue": {"values": [{"stringValue": "chat"}]}},
           {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "chat"}}]}},
           {"intValue": "3"}]  # fmt: skip
    items = _otlp_json(
        {**ids, "spanId": f"{1:016x}", "attributes": RAW_CHAT},
        *({**ids, "spanId": f"{2 + i:016x}",
           "attributes": {**RAW_CHAT, "gen_ai.operation.name": value}}
          for i, value in enumerate(odd)),
    )  # fmt: skip
    good, *refused = (run(otlp.map_span, item, ONE) for item in items)
    assert _valid(good).operation == "chat"
    for mapped in refused:
        assert isinstance(mapped, Rejected) and mapped.field == "gen_ai.operation.name", mapped
        assert "string" in mapped.reason


def test_otlp_invalid_ids_count_as_missing() -> None:
    # Found in review: all-zero ids (invalid in OTLP, sent by a misconfigured SDK) made every
    # such span otel:000...0, so distinct calls counted once. Like missing ids, they fall back
    # on gen_ai.response.id; so do ids of the wrong length.
    def span(trace_id: str, span_id: str, response_id: str | None) -> dict[str, Any]:
        extra = {"gen_ai.response.id": {"stringValue": response_id}} if response_id else {}
        return {"traceId": trace_id, "spanId": span_id, "attributes": {**RAW_CHAT, **extra}}

    zero = ("0" * 32, "0" * 16)
    items = _otlp_json(
        span(*zero, "chatcmpl-1"), span(*zero, "chatcmpl-2"),
        span("0af7651916cd43dd", "b7ad6b7169203331", "chatcmpl-3"),  # trace id of 8 bytes
        span("0af7651916cd43dd8448eb211c80319c", "00" * 7 + "01", "chatcmpl-4"),
        span("0af7651916cd43dd8448eb211c80319c", "b7ad6b71692033", "chatcmpl-5"),  # 7 bytes
        span(*zero, None),
    )  # fmt: skip
    *fallback, nothing = (run(otlp.map_span, item, ONE) for item in items)
    assert [_valid(m).record_id for m in fallback] == [
        "chatcmpl-1", "chatcmpl-2", "chatcmpl-3",
        "otel:0af7651916cd43dd8448eb211c80319c0000000000000001",  # a valid non-zero span id
        "chatcmpl-5",
    ]  # fmt: skip
    # Nothing to recognise a resend by: refused, as a span without ids is.
    assert parse_record_error(nothing) == "record_id"


def test_otlp_json_ids_that_are_not_hex_refuse_their_span_only() -> None:
    # Found in review: base64 ids (protobuf's generic JSON mapping of bytes) in one span made
    # the whole body a 400, and an exporter drops an export refused with 400.
    good_ids = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}
    link = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "zz"}
    items = _otlp_json(
        {**good_ids, "attributes": RAW_CHAT},
        {"traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": "7uGbfsPBsXU=", "attributes": RAW_CHAT},
        {**good_ids, "spanId": "eee19b7ec3c1b175", "links": [link], "attributes": RAW_CHAT},
        {"traceId": "zz", "attributes": {"http.route": {"stringValue": "/"}}},
    )  # fmt: skip
    good, base64_ids, bad_link, not_genai = (run(otlp.map_span, item, ONE) for item in items)
    assert _valid(good).record_id == "otel:5b8efff798038103d269b633813fc60ceee19b7ec3c1b174"
    assert isinstance(base64_ids, Rejected) and base64_ids.field == "traceId", base64_ids
    assert "not hex" in base64_ids.reason and "W47/95gDgQPSabYzgT/GDA==" in base64_ids.reason
    assert isinstance(bad_link, Rejected) and bad_link.field == "links.spanId", bad_link
    assert otlp.describe(items[2]).startswith("span eee19b7ec3c1b175 of trace 5b8efff7")
    # Refused like any unreadable span: its value could have been what says it is GenAI.
    assert isinstance(not_genai, Rejected) and not_genai.field == "traceId", not_genai


@pytest.mark.parametrize(
    "nanos", [1767225599_999_999_999, 1767225599_999_999_600, 1767225599_999_500_000]
)
def test_otlp_start_time_is_not_rounded_through_a_float(nanos: int) -> None:
    # Found in review: nanos / 1e9 rounded the last microsecond of 2025 into 2026.
    (item,) = _otlp_json(
        {"traceId": f"{1:032x}", "spanId": f"{1:016x}", "attributes": RAW_CHAT,
         "startTimeUnixNano": str(nanos), "endTimeUnixNano": str(nanos + 10**9)}
    )  # fmt: skip
    record = _valid(run(otlp.map_span, item, ONE))
    assert record.occurred_at.isoformat() == "2025-12-31T23:59:59.999000+00:00"
    assert record.latency_ms == 1000


def test_other_formats_are_not_taken_for_opengatellm_rows() -> None:
    """Found in review (2026-11-26) of the rule that read OpenGateLLM's current rows: `endpoint`
    with any two of that table's other columns (`ttft`, `kwh`, `user_email`...) took an
    access-log line and a generic CSV export for its rows, refused then for a missing
    `created`."""
    line = {"request_id": "req-1", "timestamp": "2026-09-25T10:00:00Z",
            "endpoint": "/v1/chat/completions", "model": "gpt-4o", "ttft": 90,
            "user_email": "a@b.in", "response": {"usage": {"prompt_tokens": 3,
                                                          "completion_tokens": 4}}}  # fmt: skip
    assert not opengatellm.is_usage_row(line)
    assert _valid(run(openai_log.map_line, line, ONE)).record_id == "req-1"
    exported = {"record_id": "r-1", "occurred_at": "2026-09-25T10:00:00Z", "agency_id": "in-mohfw",
                "provider": "sarvam", "model": "m", "endpoint": "/v1/chat/completions",
                "kwh": "0.1", "kgco2eq": "0.01", "request_count": "1"}  # fmt: skip
    assert not opengatellm.is_usage_row(exported)
    assert _valid(run(csv_export.map_row, exported, ONE)).record_id == "r-1"
    assert not opengatellm.is_usage_row({"object": "usage"})
    assert opengatellm.is_usage_row(CURRENT_OGL_ROW)
