"""The infrastructure registry and its history (public reads), and changes to it (admins).

GET  /v1/registry                          the version in force (or ?at= a time), with each
                                           facility's tier beside its external grade
GET  /v1/registry/versions                 the change ledger and every stored version
GET  /v1/registry/versions/{version}       one version (?format=yaml: the stored text, byte for
                                           byte, so anyone can re-hash it to the version)
POST /v1/registry/proposals                admin; YAML body -> validated exactly like
                                           `tracker registry load` (422 lists every error)
GET  /v1/registry/proposals/{id}           admin
POST /v1/registry/proposals/{id}/apply     admin; the proposal comes into force (or is
                                           scheduled, ?effective_from=); 409 if the registry
                                           moved since it was proposed, it was applied,
                                           another change was recorded at the same moment, or
                                           changes are scheduled after it (unless
                                           ?before_scheduled=true)
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from api.auth import Caller, require
from api.deps import ClickHouse
from api.params import Settings, check_bounds
from tracker import registry_proposals, registry_store
from tracker.access import Identity, Role
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.registry import MAX_FILE_BYTES, Registry, RegistryError
from tracker.request_body import read_body

router = APIRouter(tags=["registry"])

VERSION_PATTERN = r"^r-[0-9a-f]{16}$"
# registry_store.new_proposal_id(); bounded so a path of any length is not echoed back in a 404.
PROPOSAL_PATTERN = r"^p-[0-9a-f]{12}$"
ProposalId = Annotated[str, Path(pattern=PROPOSAL_PATTERN, description="p- and 12 hex digits")]


def _admin(identity: Caller) -> Identity:
    """An admin API key (`tracker key add NAME --role admin`). The access middleware checked the
    key, rate-limited and audited the request (writes under /v1/registry/ included); this only
    checks the role, so a refused change is in the audit log too."""
    require(identity, Role.admin)
    return identity


Admin = Annotated[Identity, Depends(_admin)]


def registry_view(registry: Registry, change: registry_store.Change | None) -> dict[str, Any]:
    """The registry as JSON, each facility's tier beside its grade, each operator's status."""
    body: dict[str, Any] = registry.model_dump(mode="json")
    classifier = Classifier(registry)
    by_id = {f.id: f for f in registry.facilities}
    for f in body["facilities"]:
        f["tier"] = classifier.tier_of(by_id[f["id"]]).value
        f.setdefault("grade", None)
    for o in body["operators"]:
        o["domestic"] = o["jurisdiction"] == registry.country
        o.setdefault("grade", None)
    return {
        "version": registry.version,
        "in_force": change.as_dict() if change is not None else None,
        "registry": body,
    }


@router.get("/v1/registry", responses={404: {"description": "no version in force at `at`"}})
def get_registry(
    client: ClickHouse,
    at: Annotated[datetime | None, Query(description="The version in force then")] = None,
) -> dict[str, Any]:
    check_bounds(at, name="at")
    found = registry_store.effective(client, at)
    if found is None:
        raise HTTPException(404, "no registry version was in force then")
    return registry_view(*found)


@router.get("/v1/registry/versions")
def get_versions(client: ClickHouse) -> dict[str, Any]:
    found = registry_store.effective(client)
    return {
        "in_force": found[1].version if found else None,
        "changes": [c.as_dict() for c in registry_store.history(client)],
        "versions": [
            {"version": v, "first_loaded_at": at} for v, at in registry_store.versions(client)
        ],
    }


@router.get(
    "/v1/registry/versions/{version}",
    response_model=None,
    responses={404: {"description": "no such registry version"}},
)
def get_version(
    client: ClickHouse,
    version: Annotated[str, Path(pattern=VERSION_PATTERN)],
    format: Literal["json", "yaml"] = "json",
) -> dict[str, Any] | Response:
    text = registry_store.content(client, version, published=True)
    if text is None:
        raise HTTPException(404, f"unknown registry version {version}")
    if format == "yaml":
        return PlainTextResponse(text, media_type="application/yaml")
    registry = registry_store.registry_of(client, version)
    assert registry is not None
    changes = [c.as_dict() for c in registry_store.history(client) if c.version == version]
    return {**registry_view(registry, None), "changes": changes}


def _refusal(exc: RegistryError) -> JSONResponse:
    return JSONResponse(
        {
            "valid": False,
            "error_count": exc.total,
            "errors": [{"file": exc.source, "path": p, "reason": r} for p, r in exc.errors],
        },
        status_code=422,
    )


@router.post(
    "/v1/registry/proposals",
    status_code=201,
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        }
    },
)
async def post_proposal(
    request: Request,
    admin: Admin,
    reason: Annotated[
        # At least one character that is not a space: a blank reason explains nothing.
        str, Query(min_length=1, max_length=1000, pattern=r"\S", description="Why")
    ],
    against: Annotated[
        datetime | None,
        Query(
            description="Propose against the version in force at this time (default: now): "
            "a change applied after a scheduled one is proposed against that one's time"
        ),
    ] = None,
) -> dict[str, Any] | JSONResponse:
    check_bounds(against, name="against")
    if not reason.isprintable():  # as `tracker registry --reason`: one line of printable text
        raise HTTPException(422, "reason: holds a newline, tab or other control character")
    # Read up to the limit, never further: `await request.body()` held a 400 MB body whole
    # before refusing it (found in review: +400 MB of memory in the API process).
    body = await read_body(request, MAX_FILE_BYTES)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, "body must be UTF-8 YAML") from exc
    pool: ClientPool = request.app.state.clickhouse

    def work() -> dict[str, Any]:
        client = pool.get()
        proposal, registry = registry_proposals.propose(
            client, text, author=admin.key_id, reason=reason, against=against
        )
        base = None
        if proposal.base_version:
            base = registry_store.registry_of(client, proposal.base_version)
        return {
            "valid": True,
            "errors": [],
            "proposal_id": proposal.proposal_id,
            "version": proposal.version,
            "base_version": proposal.base_version or None,
            "changes": registry_proposals.diff(base, registry),
        }

    try:
        return await anyio.to_thread.run_sync(work)
    except RegistryError as exc:
        return _refusal(exc)
    except registry_store.ChangeError as exc:
        raise HTTPException(422, str(exc)) from exc


def _proposal_body(p: registry_proposals.Proposal) -> dict[str, Any]:
    return {
        "proposal_id": p.proposal_id, "status": p.status, "version": p.version,
        "base_version": p.base_version or None, "author": p.author, "reason": p.reason,
        "created_at": _utc_text(p.created_at), "applied_at": _utc_text(p.applied_at),
        "applied_by": p.applied_by or None,
    }  # fmt: skip


def _utc_text(when: datetime | None) -> str | None:
    """A UTC time as `...Z` on every route: FastAPI writes `+00:00` where a route has no
    response model (apply) and `Z` where it has (get), so one proposal read two ways."""
    return None if when is None else when.isoformat().replace("+00:00", "Z")


@router.get(
    "/v1/registry/proposals/{proposal_id}", responses={404: {"description": "no such proposal"}}
)
def get_proposal(client: ClickHouse, admin: Admin, proposal_id: ProposalId) -> dict[str, Any]:
    found = registry_proposals.get(client, proposal_id)
    if found is None:
        raise HTTPException(404, f"no proposal {proposal_id}")
    return {**_proposal_body(found), "content": found.content}


@router.post("/v1/registry/proposals/{proposal_id}/apply", response_model=None)
def apply_proposal(
    client: ClickHouse,
    admin: Admin,
    settings: Settings,
    proposal_id: ProposalId,
    effective_from: Annotated[
        datetime | None, Query(description="Schedule ahead (default: now); never backdated")
    ] = None,
    before_scheduled: Annotated[
        bool,
        Query(
            description="Apply although changes are scheduled after it (each replaces it "
            "when it comes due); without it such an apply is refused with 409, listing them"
        ),
    ] = False,
) -> dict[str, Any] | JSONResponse:
    # A date past the read routes' range could be applied but never looked up (`?at=`).
    check_bounds(effective_from, name="effective_from")
    try:
        proposal, change = registry_proposals.apply(
            client,
            proposal_id,
            applied_by=admin.key_id,
            effective_from=effective_from,
            before_scheduled=before_scheduled,
            by_its_author=settings.registry_self_apply,
        )
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except registry_store.ScheduledAhead as exc:
        raise HTTPException(409, exc.describe("?before_scheduled=true")) from exc
    except registry_store.Backdated as exc:  # bad input, not a conflict (found in review)
        raise HTTPException(422, f"effective_from: {exc}") from exc
    except registry_store.ChangeError as exc:
        raise HTTPException(409, str(exc)) from exc
    except RegistryError as exc:  # the rules tightened since it was proposed
        return _refusal(exc)
    return {
        **_proposal_body(proposal),
        "change": change.as_dict() if change is not None else None,
    }
