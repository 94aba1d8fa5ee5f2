"""Registry changes proposed and applied through the API (admins only, api/routes/registry.py).

A proposal is validated exactly like `tracker registry load` (the same `registry.parse`); an
invalid one is refused with the same (file, path, reason) errors and is not stored. A valid one
is stored with the version in force when it was made (`base_version`) and a summary of what it
changes, for review. Applying it records a change in the ledger; it is refused when another
change came into force in between (re-propose against the new version), or when it was
applied already. Two applies at once are checked against the same ledger, and only the first
to record its change wins (migration 0008, `registry_store.activate`): the other is refused
like a late one, never recorded over the winner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker import registry_store
from tracker.bounds import as_utc
from tracker.registry import Registry, parse

_SECTIONS = ("operators", "facilities", "regions", "endpoints", "providers", "agencies")


@dataclass(frozen=True)
class Proposal:
    proposal_id: str
    created_at: datetime
    author: str
    reason: str
    content: str
    version: str
    base_version: str
    status: str
    applied_at: datetime | None
    applied_by: str


_COLUMNS = [
    "proposal_id", "created_at", "author", "reason", "content", "version", "base_version",
    "status", "applied_at", "applied_by", "updated",
]  # fmt: skip


def _key(section: str, item: dict[str, Any]) -> str:
    if section == "regions":
        return f"{','.join(item['providers'])}/{item['code']}"
    if section == "endpoints":
        return str(item.get("host") or item.get("cidr"))
    return str(item["id"])


def diff(old: Registry | None, new: Registry) -> dict[str, Any]:
    """What a change does, per section: ids added, removed and changed; plus top-level fields."""
    before = old.model_dump(mode="json") if old is not None else {}
    after = new.model_dump(mode="json")
    out: dict[str, Any] = {}
    for section in _SECTIONS:
        a = {_key(section, x): x for x in before.get(section, [])}
        b = {_key(section, x): x for x in after.get(section, [])}
        entry = {
            "added": sorted(set(b) - set(a)),
            "removed": sorted(set(a) - set(b)),
            "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
        }
        if any(entry.values()):
            out[section] = entry
    fields = sorted(
        k for k in set(before) | set(after)
        if k not in _SECTIONS and before.get(k) != after.get(k)
    )  # fmt: skip
    if fields:
        out["fields"] = fields
    return out


def propose(
    client: Client, text: str, *, author: str, reason: str, against: datetime | None = None
) -> tuple[Proposal, Registry]:
    """Validate (RegistryError with every problem when invalid: nothing stored) and store,
    against the version in force now, or at `against` (a change to a scheduled version)."""
    registry = parse(text, "proposal")
    if not reason.strip():
        raise registry_store.ChangeError("a proposal needs a reason")
    found = registry_store.effective(client, against)
    base = found[1].version if found else ""
    now = _now()
    proposal = Proposal(registry_store.new_proposal_id(), now, author, reason, text,
                        registry.version, base, "proposed", None, "")  # fmt: skip
    _write(client, proposal)
    return proposal, registry


def _now() -> datetime:
    """Now, to the millisecond the table keeps: an answer gives the time a later read gives."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _write(client: Client, p: Proposal) -> None:
    client.insert(
        "registry_proposals",
        [[p.proposal_id, p.created_at, p.author, p.reason, p.content, p.version, p.base_version,
          p.status, p.applied_at, p.applied_by, time.time_ns()]],
        column_names=_COLUMNS,
    )  # fmt: skip


def get(client: Client, proposal_id: str) -> Proposal | None:
    rows = client.query(
        f"SELECT {', '.join(_COLUMNS[:-1])} FROM registry_proposals FINAL "
        "WHERE proposal_id = {p:String}",
        parameters={"p": proposal_id},
    ).result_rows
    if not rows:
        return None
    r = rows[0]
    # Both times in UTC, zone attached: a time without one reads as a client's local time
    # (found in review: created_at was answered without it).
    applied_at = None if r[8] is None else as_utc(r[8])
    return Proposal(str(r[0]), as_utc(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                    str(r[6]), str(r[7]), applied_at, str(r[9]))  # fmt: skip


def apply(
    client: Client,
    proposal_id: str,
    *,
    applied_by: str,
    effective_from: datetime | None = None,
    before_scheduled: bool = False,
    by_its_author: bool = True,
) -> tuple[Proposal, registry_store.Change | None]:
    """Put a proposal in force (re-validated with today's rules first). Refused like a load
    when changes are scheduled after it, unless `before_scheduled` (registry_store.activate).
    Without `by_its_author`, refused to the key that proposed it: a second admin applies it."""
    # Read before every check below: the change is recorded only if the ledger still has this
    # length when it is inserted, so no other change can land between these checks and it.
    position = registry_store.ledger_length(client)
    proposal = get(client, proposal_id)
    if proposal is None:
        raise LookupError(f"no proposal {proposal_id}")
    source = f"proposal:{proposal_id}"
    # The ledger too, not only the status: the status is written after the change, so an apply
    # of this proposal recorded (scheduled ahead) but not yet marked is seen here.
    if proposal.status != "proposed" or registry_store.recorded_from(client, source):
        raise registry_store.ChangeError(f"proposal {proposal_id} was applied already")
    if not by_its_author and proposal.author == applied_by:
        raise registry_store.ChangeError(
            f"proposal {proposal_id} was made by this key ({applied_by}): another admin applies "
            "it (TRACKER_REGISTRY_SELF_APPLY=true lets an admin apply their own)"
        )
    # What the change would replace: the version in force at its time, which for a change
    # scheduled after another scheduled one is that one (found in review: applied the day after
    # a scheduled change, a proposal made against the version in force now undid it unseen).
    at = as_utc(effective_from) if effective_from is not None else None
    found = registry_store.effective(client, at if at and at > datetime.now(UTC) else None)
    in_force = found[1].version if found else ""
    if in_force != proposal.base_version:
        when = "" if effective_from is None else f" at {effective_from.isoformat()}"
        raise registry_store.ChangeError(
            f"the registry in force{when} moved from {proposal.base_version or 'none'} to "
            f"{in_force} since this proposal was made; propose again against that version"
        )
    registry = parse(proposal.content, f"proposal:{proposal_id}")
    change = registry_store.activate(
        client, registry, proposal.content, author=applied_by,
        reason=f"{proposal.reason} (proposed by {proposal.author})",
        source=source, effective_from=effective_from, after=position,
        before_scheduled=before_scheduled,
    )  # fmt: skip
    done = Proposal(**{**proposal.__dict__, "status": "applied",
                       "applied_at": _now(), "applied_by": applied_by})  # fmt: skip
    _write(client, done)
    return done, change
