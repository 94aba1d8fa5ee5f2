"""422 answers for invalid parameters, with what the caller sent echoed only in part.

FastAPI's own handler returns each error with the whole `input`: a path or query value of any
length (a 20,000-character proposal id, found in review) came back whole in the answer. Here
an echoed string is cut to its first `ECHO_CHARS` characters, and any other input whose JSON is
longer is left out; the location, type, message and context stay as FastAPI gives them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

ECHO_CHARS = 200


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "..."
    encoded = jsonable_encoder(value)
    if len(orjson.dumps(encoded, default=str)) <= ECHO_CHARS:
        return encoded
    return f"(not shown: over {ECHO_CHARS} characters)"


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**error, "input": _bounded(error["input"])} if "input" in error else error
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})
