"""Who is calling, how often, and the trace of every keyed look.

One ASGI middleware in front of every read (GET/HEAD) request and every request to the registry's
admin routes (POST /v1/registry/proposals...), in this order:
0. size: a query string longer than the audit log keeps whole is refused (414), before anything;
1. identity: no Authorization header is the public; `Bearer <key>` must be a live API key
   (401 otherwise, never a silent fall-back to public); failed keys are limited per client IP
   (429 before the next key is even looked up);
2. rate limit: a token bucket per key, or per client IP for the public (429 + Retry-After);
3. audit (keyed callers): a `begin` row before the route runs (503 if it cannot be written:
   no trace, no data), and an `end` row with status and row count after the last byte, also for
   streamed exports and for requests that fail or are refused (403).
Ingest (POST, gateway keys, mounted beside these routes by `tracker up`) passes through
untouched: it has its own authentication.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker import audit
from tracker.access import PUBLIC, Identity, KeyAuth, Role
from tracker.classify import ip_literal
from tracker.clickhouse import ClientPool

log = logging.getLogger(__name__)

_MAX_BUCKETS = 100_000
# The audit `end` status of a response cut off before its end (nginx's "client closed request").
CLIENT_CLOSED = 499
# The writes of the read API's own app (admin keys, api/routes/registry.py); every other write
# that reaches the middleware is ingest.
_KEYED_WRITES = ("/v1/registry/",)


class Problem(BaseModel):
    detail: str = Field(examples=["rate limit exceeded"])


# Answers any read route can give besides its own, declared once for the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "invalid or revoked API key, or a key is needed"},
    403: {"model": Problem, "description": "the key's role or agency does not allow this"},
    414: {
        "model": Problem,
        "description": f"query string over {audit.MAX_QUERY_CHARS} characters "
        "(the audit log keeps a query string whole or refuses it)",
    },
    429: {
        "model": Problem,
        "description": "rate limit exceeded; retry after the Retry-After header's seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    503: {"model": Problem, "description": "storage or audit log unavailable"},
}


class RateLimiter:
    """Token buckets: `per_minute` sustained, bursts up to a sixth of that (at least 5).
    In-process: behind several API replicas each enforces its own share (docs/api.md)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(
        self, key: str, per_minute: int, now: float | None = None, *, spend: bool = True
    ) -> float:
        """Spend one token; returns 0 when allowed, else the seconds until one is available.
        With `spend=False`, only says so: for a cost known only after the work (a failed key)."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        burst = max(5.0, per_minute / 6.0)
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            allowed = tokens >= 1.0
            wait = 0.0 if allowed else (1.0 - tokens) / rate
            if not spend:  # a look only: every keyed request makes one, so it stores nothing
                return wait
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            # Checked on every new key, allowed or not: callers choose their keys (one per
            # address of an IPv6 range), so the table is bounded here or not at all.
            if len(self._buckets) > _MAX_BUCKETS:
                self._prune(now)
            return wait

    def _prune(self, now: float) -> None:
        # Forget the idle first: a bucket untouched for a minute has refilled to its burst, so
        # it carries no state worth keeping.
        kept = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}
        room = _MAX_BUCKETS * 9 // 10  # pruned below the cap, so not again on the next call
        if len(kept) > room:
            # Still too many clients at once: keep the most recently seen. Forgetting a bucket
            # only refills it, which a caller with that many addresses had anyway.
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-room:])
        self._buckets = kept


# IPv6 clients are limited by their /64: a site is given a /64 (or more) and may send from any
# address of it, so a limit per address was no limit (found in review: 30 addresses of one /64
# got 30 answers past a burst of 10).
_IPV6_PREFIX = 64


def _network(client_ip: str) -> str:
    """What an address's rate limits are kept by: the address (IPv4, an IPv4-mapped one read
    as IPv4), or its /64 (IPv6)."""
    address = ip_literal(client_ip)
    if address is None:
        return client_ip  # not an address (a test client's name, a Unix socket): as it is
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        pool: ClientPool,
        keys: KeyAuth,
        limiter: RateLimiter,
        public_per_minute: int,
        key_per_minute: int,
    ) -> None:
        self.app = app
        self.pool = pool
        self.keys = keys
        self.limiter = limiter
        self.public_per_minute = public_per_minute
        self.key_per_minute = key_per_minute

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] not in ("GET", "HEAD") and not scope["path"].startswith(_KEYED_WRITES)
        ):
            await self.app(scope, receive, send)
            return
        query_chars = len(scope.get("query_string", b""))
        if query_chars > audit.MAX_QUERY_CHARS:
            # The audit log stores a query string whole or not at all: cut, the filters at its
            # end (which agency was read) would be lost (found in review). Refused before any
            # key is looked up or data read, for the public too, so every route has one limit.
            detail = (
                f"query string is {query_chars} characters, over the limit of "
                f"{audit.MAX_QUERY_CHARS} (the audit log keeps a query string whole)"
            )
            await _problem(414, detail)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client_ip = scope["client"][0] if scope.get("client") else ""
        client_net = _network(client_ip)
        identity = PUBLIC
        authorization = headers.get("authorization")
        if authorization is not None:
            # Failed keys spend from a bucket of the client IP's own, checked before the key is
            # looked up, so keys cannot be tried at full speed; a good key spends nothing here.
            # The keys are read again first, if due (I/O, in a thread); then the look, the
            # lookup (in memory) and the spend run with no await between them. Found in review:
            # with the lookup awaited between the look and the spend, every guess in flight
            # passed the look (200 guesses sent at once, 200 lookups, with a burst of 5).
            if self.keys.stale():
                try:
                    await anyio.to_thread.run_sync(self.keys.refresh_if_stale)
                except Exception:  # the store is unreachable: no key can be checked
                    log.exception("cannot read the API keys")
                    detail = "API keys cannot be checked right now; retry later"
                    await _problem(503, detail, {"Retry-After": "5"})(scope, receive, send)
                    return
            failures = f"auth-failed:{client_net}"
            wait = self.limiter.take(failures, self.public_per_minute, spend=False)
            if wait > 0:
                retry = {"Retry-After": str(max(1, math.ceil(wait)))}
                detail = "too many invalid API keys from this address"
                await _problem(429, detail, retry)(scope, receive, send)
                return
            scheme, _, token = authorization.partition(" ")
            found = None
            if scheme.lower() == "bearer" and token.strip():
                found = self.keys.cached(token.strip())
            if found is None:
                self.limiter.take(failures, self.public_per_minute)
                bearer = {"WWW-Authenticate": "Bearer"}
                await _problem(401, "invalid or revoked API key", bearer)(scope, receive, send)
                return
            identity = found
        if identity.role is Role.public:
            wait = self.limiter.take(f"ip:{client_net}", self.public_per_minute)
        else:
            wait = self.limiter.take(f"key:{identity.key_id}", self.key_per_minute)
        if wait > 0:
            retry = {"Retry-After": str(max(1, math.ceil(wait)))}
            await _problem(429, "rate limit exceeded", retry)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["identity"] = identity
        state["rows"] = [0]
        if not identity.audited:
            await self.app(scope, receive, send)
            return
        await self._audited(scope, receive, send, identity, client_ip, state["rows"])

    async def _audited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        identity: Identity,
        client_ip: str,
        rows: list[int],
    ) -> None:
        request_id = uuid.uuid4().hex
        started = time.monotonic()
        query = scope.get("query_string", b"").decode("latin-1")

        def entry(phase: str, status: int) -> audit.AuditEntry:
            return audit.AuditEntry(
                at=datetime.now(UTC), request_id=request_id, phase=phase,
                key_id=identity.key_id, role=identity.role.value, agency_id=identity.agency_id,
                client_ip=client_ip, method=scope["method"], path=scope["path"], query=query,
                status=status, rows=rows[0], duration_ms=int((time.monotonic() - started) * 1000),
            )  # fmt: skip

        def write(e: audit.AuditEntry) -> None:
            audit.write(self.pool.get(), e)

        try:
            await anyio.to_thread.run_sync(write, entry("begin", 0))
        except Exception:  # fail closed: a look that cannot be traced is not served
            await _problem(503, "audit log unavailable; try again later", {"Retry-After": "5"})(
                scope, receive, send
            )
            return
        status = [500]
        whole = [False]  # the response's last body message reached the client

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                whole[0] = True

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            # A response that started but never ended (the client went away mid-export, or the
            # stream failed) is 499, not the 200 its first message carried: an auditor reading
            # the log must not take a cut-off export for a complete one (found in review).
            if status[0] != 500 and not whole[0]:
                status[0] = CLIENT_CLOSED
            # Shielded: a client that disconnects mid-export still leaves its `end` row.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(write, entry("end", status[0]))


# Declared on every read route and the registry's admin routes so the OpenAPI schema documents
# the bearer key; the middleware has already checked it.
_bearer = HTTPBearer(
    auto_error=False,
    description="API key of an agency, auditor or admin (`tracker key add`); none for public",
)


def _caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    identity: Identity = getattr(request.state, "identity", PUBLIC)
    return identity


Caller = Annotated[Identity, Depends(_caller)]


def require(identity: Identity, *roles: Role) -> None:
    """401 for the public where a key is needed, 403 for a key of another role."""
    if identity.role in roles:
        return
    needed = " or ".join(r.value for r in roles)
    if identity.role is Role.public:
        raise HTTPException(401, f"needs an API key ({needed})", {"WWW-Authenticate": "Bearer"})
    # "use", not "read": writes answer this too (a proposal by an auditor key; found in review).
    role = identity.role.value
    article = "an" if role[:1] in "aeiou" else "a"
    raise HTTPException(403, f"{article} {role} key cannot use this (needs {needed})")


def count_rows(request: Request, n: int) -> None:
    """Record how many rows this response carries (the audit log's `rows`)."""
    rows = getattr(request.state, "rows", None)
    if isinstance(rows, list):
        rows[0] = n
