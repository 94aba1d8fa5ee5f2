"""`tracker key add|list|revoke`: read-API keys for agencies, auditors and admins.

Registered on the `tracker` app by one import line at the end of tracker/cli/__init__.py. Like
`tracker gateway add`, it opens the store itself, so run it while `tracker up` is stopped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from tracker.access import Role
from tracker.cli import DataDir, _existing_store, _new_or_existing_store, app, fail


class KeyRole(StrEnum):
    """The roles a key is made for: the public needs none (`--help` offered `public`, found in
    review, which was then refused)."""

    agency = Role.agency.value
    auditor = Role.auditor.value
    admin = Role.admin.value


key_app = typer.Typer(help="API keys of agencies, auditors and admins.", no_args_is_help=True)
app.add_typer(key_app, name="key")


@key_app.command("add")
def key_add(
    name: Annotated[str, typer.Argument(help="Key id, e.g. cag-auditor")],
    role: Annotated[KeyRole, typer.Option("--role", help="agency, auditor or admin")],
    agency: Annotated[
        str | None, typer.Option("--agency", help="The agency an agency key reads")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key and print it (shown once; only its SHA-256 is stored)."""
    from tracker.access import AccessError, add_key
    from tracker.cli.wiring import open_core

    core = open_core(_new_or_existing_store(data_dir))
    try:
        identity, key = add_key(core.pool.get(), core.registry, name, Role(role.value), agency)
    except AccessError as exc:
        fail(str(exc))
    scope = f" for agency {identity.agency_id}" if identity.agency_id else ""
    typer.echo(f"key {identity.key_id}: role {identity.role.value}{scope}")
    typer.echo(f"key (shown once, store it now): {key}")


@key_app.command("list")
def key_list(data_dir: DataDir = None) -> None:
    """Active keys, their roles and agencies (keys themselves are never shown again)."""
    from tracker.access import list_keys
    from tracker.cli.wiring import open_core

    core = open_core(_existing_store(data_dir))
    for identity, _name, created in list_keys(core.pool.get()):
        typer.echo(
            f"{identity.key_id}\t{identity.role.value}\t{identity.agency_id or '-'}\t"
            f"{created:%Y-%m-%d}"
        )


@key_app.command("revoke")
def key_revoke(
    name: Annotated[str, typer.Argument(help="Key id")], data_dir: DataDir = None
) -> None:
    """Revoke a key; API servers stop accepting it within seconds."""
    from tracker.access import AccessError, revoke_key
    from tracker.cli.wiring import open_core

    core = open_core(_existing_store(data_dir))
    try:
        revoked = revoke_key(core.pool.get(), name)
    except AccessError as exc:
        fail(str(exc))
    if not revoked:
        fail(f"no active key {name!r}")
    typer.echo(f"key {name} revoked")
