"""`tracker share`: the headline figure from the command line, as classified then or now."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

# tracker.metrics's Basis and AsClassified, spelled out: importing it here would slow every
# command's start (it pulls in the registry store); a test keeps the two the same. As a
# Literal, typer refuses another value naming the option and the valid ones (found in review:
# "'foo' is not a valid Basis", naming neither).
BasisName = Literal["requests", "tokens", "cost", "energy"]
ModeName = Literal["then", "now"]


def share(
    from_: Annotated[datetime, typer.Option("--from", help="Start (inclusive), UTC")],
    to: Annotated[
        datetime | None, typer.Option("--to", help="End (exclusive); default now")
    ] = None,
    basis: Annotated[BasisName, typer.Option(help="What the share counts")] = "requests",
    as_classified: Annotated[
        ModeName,
        typer.Option("--as-classified", help="then (as landed) | now (current registry)"),
    ] = "then",
    agency: Annotated[list[str] | None, typer.Option("--agency", help="Agency id (repeat)")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local state (default ./var)")
    ] = None,
) -> None:
    """Print the domestic share and the sums behind it as JSON."""
    from tracker import registry_store
    from tracker.cli.registry_cmd import _client, _utc
    from tracker.metrics import AsClassified, Basis, headline, hour_ceil, hour_floor
    from tracker.queries import landed_under

    chosen_basis, mode = Basis(basis), AsClassified(as_classified)  # typer checked them
    start = _utc(from_, "--from")
    end = _utc(to or datetime.now(UTC), "--to")
    assert start is not None and end is not None
    # Whole hours, as headline() reads them (the rollups' resolution); printed so. The
    # default end is the API's (api.routes.share.resolve_range): now, rounded up to the hour
    # (found in review: it was an hour later, so the two answered for different windows).
    start, end = hour_floor(start), hour_ceil(end)
    if start >= end:
        typer.echo("tracker: --from must be before --to", err=True)
        raise typer.Exit(2)
    client = _client(data_dir)
    if agency:
        # A mistyped id would print a null share and exit 0, as if the agency used nothing.
        found = registry_store.effective(client)
        known = {a.id for a in found[0].agencies} if found is not None else set(agency)
        unknown = sorted(set(agency) - known)
        if unknown:  # removed from the registry since: its history can still be asked for
            unknown = sorted(set(unknown) - landed_under(client, "agency_id", unknown))
        if unknown:
            typer.echo(
                "tracker: --agency: not in the registry and no usage landed under it: "
                f"{', '.join(unknown)}",
                err=True,
            )
            raise typer.Exit(2)
    filters = {"agency_id": agency} if agency else {}
    figure = headline(client, chosen_basis, start, end, filters, as_classified=mode)
    body = {"from": start.isoformat(), "to": end.isoformat(), "as_classified": mode.value,
            **dataclasses.asdict(figure)}  # fmt: skip
    typer.echo(json.dumps(body, indent=2, default=str))
