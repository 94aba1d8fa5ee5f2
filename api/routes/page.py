"""`GET /`: the public transparency page. Its assets are served from api/static by this same
server (no CDN, no third-party requests), and it reads only the public API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


# HEAD too, as /docs and /static answer it: uptime monitors check a page so, and got 405
# (found in review).
@router.api_route("/", methods=["GET", "HEAD"])
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")
