"""Gateway authentication for push endpoints: `Authorization: Bearer <gateway key>`, plus an
HMAC signature of the raw body for gateways registered with signing (collector/signing.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from collector.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    SignatureVerifier,
)
from tracker.gateways import Gateway, GatewayAuth
from tracker.request_body import read_body
from tracker.settings import IngestLimits

_bearer = HTTPBearer(auto_error=False, description="Gateway API key")

# Bound of the body read to check a signature when the app does not state its own
# (`app.state.max_body_bytes`): the ingest limit's default.
_DEFAULT_MAX_BODY = int(IngestLimits.model_fields["max_body_bytes"].default)
# Above this, the HMAC runs off the event loop (about 1 ms per MB).
_HMAC_INLINE_BYTES = 256 * 1024


def _authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Gateway:
    # Sync on purpose: FastAPI runs it in the thread pool, as authenticate() may query ClickHouse.
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401,
            "missing gateway key: send Authorization: Bearer KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    auth: GatewayAuth = request.app.state.gateway_auth
    gateway = auth.authenticate(credentials.credentials)
    if gateway is None:
        raise HTTPException(
            401, "unknown or revoked gateway key", headers={"WWW-Authenticate": "Bearer"}
        )
    return gateway


def signature_verifier(app: FastAPI) -> SignatureVerifier:
    """The app's verifier (`app.state.signature_verifier`), created with the defaults (300 s,
    replay refusal on) the first time a signed gateway calls, when the wiring set none."""
    verifier: SignatureVerifier | None = getattr(app.state, "signature_verifier", None)
    if verifier is None:
        verifier = SignatureVerifier()
        app.state.signature_verifier = verifier
    return verifier


async def _raw_body(request: Request, limit: int) -> bytes:
    """The body as received (still compressed if it is), bounded like the routes bound it, and
    kept on the request so the route reads the same bytes again (Starlette's body cache)."""
    body = await read_body(request, limit)
    # Starlette's own cache attribute: Request.stream() and .body() serve it from now on.
    request._body = body
    return body


async def GatewayDep(
    request: Request,
    gateway: Annotated[Gateway, Depends(_authenticated)],
    timestamp: Annotated[
        str | None,
        Header(
            alias=TIMESTAMP_HEADER,
            description="Unix seconds; required for gateways registered with --signed",
        ),
    ] = None,
    signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description='sha256=<hex HMAC-SHA256(signing secret, timestamp + "." + raw body)>; '
            "required for gateways registered with --signed",
        ),
    ] = None,
) -> Gateway:
    """The authenticated gateway; for a signing gateway, only once its signature verified.
    Unsigned gateways pay nothing here: their body is not read before the route."""
    if gateway.signing_secret is None:
        return gateway
    verifier = signature_verifier(request.app)
    limit = int(getattr(request.app.state, "max_body_bytes", _DEFAULT_MAX_BODY))
    # Missing headers are refused before the body is read.
    if timestamp and signature:
        body = await _raw_body(request, limit)
    else:
        body = b""
    args = (gateway.gateway_id, gateway.signing_secret, timestamp, signature, body)
    try:
        if len(body) > _HMAC_INLINE_BYTES:
            await run_in_threadpool(verifier.verify, *args)
        else:
            verifier.verify(*args)
    except SignatureError as exc:
        raise HTTPException(
            401, f"bad request signature: {exc.reason}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    return gateway
