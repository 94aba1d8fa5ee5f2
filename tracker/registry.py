"""The infrastructure registry: operators, facilities, cloud regions, endpoints, providers and
agencies of one country, kept as reviewable YAML and loaded whole or not at all.

Policy is data: which facility is domestic and which operator is domestic follows from the
registry's `country`, never from code. The version of a registry is the hash of its canonical
content, so the same rules always carry the same version, wherever they are loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from clickhouse_connect.driver.client import Client
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

Code = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]

DEFAULT_REGISTRY = "india.yaml"


class RegistryError(ValueError):
    """A registry file that cannot be used; `errors` lists every problem as (path, reason)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {source}: {path}: {reason}" for path, reason in errors)
        super().__init__(f"registry {source} refused, {len(errors)} error(s):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _omit_when_none(data: Any, model: BaseModel, names: tuple[str, ...]) -> Any:
    """Optional fields added after release are left out of the canonical dump while unset, so
    a registry that does not use them keeps the version it always had."""
    if isinstance(data, dict):
        for name in names:
            if getattr(model, name) is None:
                data.pop(name, None)
    return data


class Operator(_Strict):
    id: Code
    name: str = Field(min_length=1)
    jurisdiction: Country


class Facility(_Strict):
    id: Code
    operator: Code
    country: Country
    name: str = ""
    # Declared serving capacity for public-sector inference, in requests per hour: the C layer
    # of the capacity index (tracker/capacity.py). Unset means "not declared", counted as 0.
    serving_capacity_rph: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("serving_capacity_rph",))


class Region(_Strict):
    """A provider's region code (ap-south-1, centralindia, asia-south1) served by a facility."""

    providers: list[Code] = Field(min_length=1)
    code: str = Field(min_length=1, max_length=64)
    facility: Code


class Endpoint(_Strict):
    """A hostname pattern: exact host, or `*.suffix` for any subdomain of suffix."""

    host: str = Field(min_length=1, max_length=253, pattern=r"^(\*\.)?[a-z0-9.-]+$")
    facility: Code


class Provider(_Strict):
    id: Code
    operator: Code
    default_facility: Code | None = None
    aliases: list[Code] = Field(default_factory=list)


class Agency(_Strict):
    id: Code
    name: str = Field(min_length=1)
    sector: Code
    channel: Code


class TargetPoint(_Strict):
    """Domestic share (by requests) the country aims to reach by a date."""

    by: date
    domestic_share: float = Field(ge=0, le=1, allow_inf_nan=False)


class Targets(_Strict):
    """National targets: the domestic-share trajectory and the service objective behind the S
    layer of the capacity index (tracker/capacity.py, tracker/outlook.py)."""

    domestic_share: list[TargetPoint] = Field(default_factory=list)
    # When the window to shift procurement defaults closes (the outlook reports the projected
    # share at this date).
    window_closes: date | None = None
    # A domestically served rollup row counts as "within objective" when its mean latency per
    # record is at most this.
    latency_objective_ms: int = Field(default=2000, gt=0, le=600_000)

    @model_validator(mode="after")
    def _dates_increase(self) -> Targets:
        dates = [p.by for p in self.domestic_share]
        if any(b <= a for a, b in itertools.pairwise(dates)):
            raise ValueError("domestic_share: target dates must be strictly increasing")
        return self


class Registry(_Strict):
    country: Country
    country_name: str
    illustrative: bool = False
    reporting_currency: str = Field(pattern=r"^[A-Z]{3}$")
    fx_to_reporting: dict[str, Decimal] = Field(default_factory=dict)
    operators: list[Operator]
    facilities: list[Facility]
    regions: list[Region] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)
    providers: list[Provider]
    agencies: list[Agency]
    targets: Targets | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("targets",))

    @model_validator(mode="after")
    def _references_resolve(self) -> Registry:
        problems: list[str] = []
        operators = _unique("operators", [o.id for o in self.operators], problems)
        facilities = _unique("facilities", [f.id for f in self.facilities], problems)
        _unique("agencies", [a.id for a in self.agencies], problems)
        names = [p.id for p in self.providers] + [a for p in self.providers for a in p.aliases]
        _unique("providers (ids and aliases)", names, problems)
        for i, f in enumerate(self.facilities):
            if f.operator not in operators:
                problems.append(f"facilities[{i}].operator: unknown operator {f.operator!r}")
        for i, r in enumerate(self.regions):
            if r.facility not in facilities:
                problems.append(f"regions[{i}].facility: unknown facility {r.facility!r}")
        for i, e in enumerate(self.endpoints):
            if e.facility not in facilities:
                problems.append(f"endpoints[{i}].facility: unknown facility {e.facility!r}")
        for i, p in enumerate(self.providers):
            if p.operator not in operators:
                problems.append(f"providers[{i}].operator: unknown operator {p.operator!r}")
            if p.default_facility is not None and p.default_facility not in facilities:
                problems.append(
                    f"providers[{i}].default_facility: unknown facility {p.default_facility!r}"
                )
        if self.reporting_currency not in self.fx_to_reporting:
            problems.append("fx_to_reporting: must include the reporting currency itself (1)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def version(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "r-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _unique(what: str, ids: list[str], problems: list[str]) -> set[str]:
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            problems.append(f"{what}: duplicate id {ident!r}")
        seen.add(ident)
    return seen


def parse(text: str, source: str) -> Registry:
    """Parse and validate registry YAML; every problem is reported, nothing is half-loaded."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        raise RegistryError(source, [(where, f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise RegistryError(source, [("document", "must be a mapping at the top level")])
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False, include_input=False):
            path = ".".join(str(p) for p in err["loc"]) or "document"
            for reason in err["msg"].removeprefix("Value error, ").split("; "):
                errors.append((path, reason))
        raise RegistryError(source, errors) from exc


def load(path: Path | None = None) -> tuple[Registry, str]:
    """Load a registry file (default: the shipped example); returns it with its raw text."""
    if path is None:
        text = resources.files("tracker.registry_data").joinpath(DEFAULT_REGISTRY).read_text()
        return parse(text, DEFAULT_REGISTRY), text
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(str(path), [("file", exc.strerror or str(exc))]) from exc
    return parse(text, str(path)), text


def record_version(client: Client, registry: Registry, text: str, author: str, reason: str) -> bool:
    """Keep the full text of a registry version that classifies records; False if known."""
    known = client.query(
        "SELECT count() FROM registry_versions WHERE version = {v:String}",
        parameters={"v": registry.version},
    ).result_rows[0][0]
    if known:
        return False
    client.insert(
        "registry_versions",
        [[registry.version, datetime.now(UTC), author, reason, text]],
        column_names=["version", "loaded_at", "author", "reason", "content"],
    )
    return True
