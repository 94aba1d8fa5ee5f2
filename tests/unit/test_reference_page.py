"""The API reference page (`/docs`) renders the schema's own text escaped, never as markup."""

from __future__ import annotations

from api.routes.reference import render


def test_every_value_from_the_schema_is_escaped() -> None:
    schema = {
        "info": {"title": "<script>alert(1)</script>", "version": "1", "description": "a & b"},
        "paths": {
            "/v1/x": {
                "get": {
                    "summary": "<b>s</b>",
                    "parameters": [
                        {"name": "q\"><img src=x>", "in": "query", "required": True,
                         "schema": {"type": "string", "enum": ["<a>"], "maxLength": 5},
                         "description": "<i>d</i>"},
                    ],
                    "responses": {"200": {"description": "<ok>"}},
                }
            }
        },
    }  # fmt: skip
    page = render(schema)
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "<img" not in page and "<a>" not in page and "<ok>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a &amp; b" in page
    assert "q&quot;&gt;&lt;img src=x&gt; (required)" in page
    assert "string (&lt;a&gt;), max length 5" in page
    assert "<code>GET /v1/x</code>" in page


def test_named_values_and_bodies_are_said() -> None:
    """Found in review: a parameter of a named enumeration read only its name ("Basis"), and
    no route said what body it takes."""
    schema = {
        "info": {"title": "t", "version": "1"},
        "components": {"schemas": {"Basis": {"enum": ["requests", "tokens"], "type": "string"}}},
        "paths": {
            "/v1/share": {"get": {"parameters": [
                {"name": "basis", "in": "query",
                 "schema": {"$ref": "#/components/schemas/Basis", "default": "requests"}},
                {"name": "tier", "in": "query", "schema": {"anyOf": [
                    {"type": "array", "items": {"$ref": "#/components/schemas/Basis"}},
                    {"type": "null"}]}},
            ]}},
            "/v1/records": {"post": {"requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "array"}},
                "application/x-ndjson": {}}}}},
        },
    }  # fmt: skip
    page = render(schema)
    assert "Basis (requests, tokens), default requests" in page
    assert "list of Basis (requests, tokens)" in page
    assert "Body (required): application/json (array); application/x-ndjson (any)." in page
