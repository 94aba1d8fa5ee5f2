"""`GET /docs`: the API's reference, rendered on this server from its own OpenAPI schema.

FastAPI's default /docs page loads Swagger UI from a CDN: third-party JavaScript running on the
API's own origin, where auditors and admins would type their keys, and a blank page where the
deploy has no internet (found in review). This page is plain HTML built here, every value
escaped, no script; the machine-readable schema stays at /openapi.json for any client or tool.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_METHODS = ("get", "post", "put", "patch", "delete")
_STYLE = '<link rel="stylesheet" href="/static/page.css">'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _schema_text(schema: dict[str, Any], named: dict[str, Any] | None = None) -> str:
    """A parameter's type and bounds, as one line; a named schema (`$ref`) by its name, with
    its values when it is an enumeration (found in review: `basis` read only "Basis")."""
    named = named or {}
    if "anyOf" in schema:
        return " or ".join(
            _schema_text(s, named) for s in schema["anyOf"] if s.get("type") != "null"
        )
    kind = str(schema.get("type", ""))
    if "$ref" in schema:
        kind = str(schema["$ref"]).rsplit("/", 1)[-1]
        values = named.get(kind, {}).get("enum")
        if values:
            kind += " (" + ", ".join(map(str, values)) + ")"
    if "items" in schema:
        kind = f"list of {_schema_text(schema['items'], named)}"
    if "enum" in schema:
        kind += " (" + ", ".join(map(str, schema["enum"])) + ")"
    for key, word in (("minimum", "min"), ("maximum", "max"), ("maxLength", "max length"),
                      ("format", "format")):  # fmt: skip
        if key in schema:
            kind += f", {word} {schema[key]}"
    if "default" in schema:
        kind += f", default {schema['default']}"
    return kind


def render(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    named: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(info.get('title', 'API'))} — API reference</title>{_STYLE}</head><body>",
        f"<header><h1>{_e(info.get('title', 'API'))} {_e(info.get('version', ''))}</h1>",
        f'<p class="lede">{_e(info.get("description", ""))}</p>',
        "<p>Public routes answer without a key. Agency, auditor and admin keys are sent as "
        "<code>Authorization: Bearer &lt;key&gt;</code>; gateways send theirs to the ingest "
        'routes. The schema itself: <a href="/openapi.json">/openapi.json</a>.</p>',
        "</header><main>",
    ]
    for path, item in sorted(schema.get("paths", {}).items()):
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            parts.append(f'<section id="{_e(method + path)}"><h2><code>{_e(method.upper())} '
                         f"{_e(path)}</code></h2>")  # fmt: skip
            if op.get("summary"):
                parts.append(f"<p><strong>{_e(op['summary'])}</strong></p>")
            if op.get("description"):
                parts.append(f"<p>{_e(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<table><thead><tr><th scope=\"col\">parameter</th>"
                             "<th scope=\"col\">in</th><th scope=\"col\">type</th>"
                             "<th scope=\"col\">meaning</th></tr></thead><tbody>")  # fmt: skip
                for p in params:
                    name = p.get("name", "") + (" (required)" if p.get("required") else "")
                    parts.append(
                        f"<tr><td><code>{_e(name)}</code></td><td>{_e(p.get('in', ''))}</td>"
                        f"<td>{_e(_schema_text(p.get('schema', {}), named))}</td>"
                        f"<td>{_e(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</tbody></table>")
            body = op.get("requestBody")
            if body:
                kinds = "; ".join(
                    f"{media} ({_schema_text(content.get('schema', {}), named) or 'any'})"
                    for media, content in body.get("content", {}).items()
                )
                said = f" {body['description']}" if body.get("description") else ""
                parts.append(f"<p>Body{' (required)' if body.get('required') else ''}: "
                             f"{_e(kinds or 'see the description')}.{_e(said)}</p>")  # fmt: skip
            codes = ", ".join(
                f"{code} {reply.get('description', '')}"
                for code, reply in sorted(op.get("responses", {}).items())
            )
            parts.append(f'<p class="hint">Answers: {_e(codes)}</p></section>')
    parts.append("</main></body></html>")
    return "".join(parts)


@router.api_route("/docs", methods=["GET", "HEAD"])
def reference(request: Request) -> HTMLResponse:
    return HTMLResponse(render(request.app.openapi()))
