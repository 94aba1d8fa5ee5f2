"""Gateway authentication for push endpoints: `Authorization: Bearer <gateway key>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tracker.gateways import Gateway, GatewayAuth

_bearer = HTTPBearer(auto_error=False, description="Gateway API key")


def GatewayDep(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Gateway:
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
