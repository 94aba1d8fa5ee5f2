"""Every source adapter over its sample payloads in tests/fixtures, checked against the record
contract itself (no server, no network)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collector.adapters import cloudevents, csv_export, litellm, openai_log, opengatellm, otlp
from collector.adapters.common import Context, Mapped, Rejected, as_int, as_time, run
from collector.imports import Checkpoints, read_csv, read_jsonl
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
    assert (record.record_id, record.agency_id, record.provider, record.model) == (
        "chatcmpl-AbC123", "in-mohfw", "azure_openai", "gpt-4o-2024-08-06")  # fmt: skip
    assert (record.region, record.endpoint_host, record.latency_ms) == (
        "centralindia", "moh-prod.openai.azure.com", 1250)  # fmt: skip
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
    request = otlp.decode(body, "application/json")
    again = otlp.decode(request.SerializeToString(), "application/x-protobuf")
    assert again == request
    assert again.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() == (
        "5b8efff798038103d269b633813fc60c")  # fmt: skip
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.decode(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                    "application/json")  # fmt: skip


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


def test_openai_jsonl_lines() -> None:
    lines = (FIXTURES / "openai/access.jsonl").read_text().splitlines()
    mapped = [run(openai_log.map_line, json.loads(line), ONE) for line in lines]
    chat, batch, responses, embeddings = (_valid(m) for m in mapped[:4])
    assert (chat.record_id, chat.agency_id, chat.latency_ms) == ("chatcmpl-9xY1", "in-cbse", 412)
    assert (batch.record_id, batch.input_tokens, batch.provider) == ("chatcmpl-b7", 900, "openai")
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
            "event",
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
    items = list(read_jsonl(path, 0, 0, ONE))
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
