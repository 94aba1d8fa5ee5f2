"""Response headers every answer of the API's server carries, and those of its pages.

Found in review: no answer said how it may be cached or framed, so a browser guessed from file
dates and could pair a new index.html with a stale page.js after an upgrade, and nothing kept
the pages from being framed or a response from being sniffed as another type.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The page and the reference read only this server: no inline script, no other origin.
PAGE_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_ALWAYS: Final = [(b"x-content-type-options", b"nosniff")]
_PAGES: Final = [
    (b"content-security-policy", PAGE_POLICY.encode()),
    (b"referrer-policy", b"no-referrer"),
    # Revalidated each time (ETag / Last-Modified): a deploy's new page and script arrive
    # together, never one cached beside the other.
    (b"cache-control", b"no-cache"),
]


def is_page(path: str) -> bool:
    return path in ("/", "/docs") or path.startswith("/static/")


class SecurityHeaders:
    """ASGI middleware: nosniff on every answer; on the pages (`/`, `/docs`, `/static/...`) a
    content security policy, no referrer, and revalidation before reuse."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _ALWAYS + (_PAGES if is_page(scope.get("path", "")) else [])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name, value) for name, value in extra if name not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
