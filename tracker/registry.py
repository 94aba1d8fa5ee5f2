"""The infrastructure registry: operators, facilities, cloud regions, endpoints, providers and
agencies of one country, kept as reviewable YAML and loaded whole or not at all.

Policy is data: which facility is domestic and which operator is domestic follows from the
registry's `country`, never from code. The version of a registry is the hash of its canonical
content, so the same rules always carry the same version, wherever they are loaded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
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
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

Code = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
# A registry file or proposal: the shipped ones are ~10 KB; the API and the CLI share the bound.
MAX_FILE_BYTES = 2 * 1024 * 1024
# Names are shown on the public page and in every dashboard: bounded like the API's other text.
LongName = Annotated[str, Field(min_length=1, max_length=500)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
# A conversion rate: how many units of the reporting currency one unit is worth. Zero or less
# would turn real spending into nothing or a credit. At most 1e9 (no currency is worth a billion
# of another): with a cost of at most 1e12 (tracker/contract.py) the converted cost stays within
# the 29 integer digits of its column, Decimal(38, 9).
Rate = Annotated[Decimal, Field(gt=0, le=Decimal("1e9"))]
# Checked in new files only (Registry._reporting_rate_is_one). A rate below the column's scale
# (9 decimals) would store the spending converted at it as 0 while marking it converted: `1e-400`
# was accepted (found in review). More significant digits than a double holds exactly (15, as for
# a cost sent as a JSON number) is no published rate (they carry 4-10) and, written as a YAML
# number, could not be read as written anyway: 5000 digits were accepted.
MIN_RATE = Decimal("1e-9")
MAX_RATE_DIGITS = 15

DEFAULT_REGISTRY = "india.yaml"
# A registry is at most ~5 levels deep (section, entry, grade, field). PyYAML builds nested
# collections recursively, so a small file of nothing but brackets ("[" * 20000, 40 KB) would
# otherwise end in a RecursionError instead of a refusal with a reason.
MAX_DEPTH = 64
# Anchors and aliases let a few bytes stand for a large document: each alias is the whole
# anchored collection again for the merge keys (`<<`) and the validation that follow, so 20
# levels of `<<: [*a, *a]` (535 bytes) doubled to a million entries and 644 bytes took 16.5 s
# and 560 MB (found in review). A document is refused when, aliases counted as what they stand
# for, it has more nodes than a file of MAX_FILE_BYTES written out in full could hold (a node
# takes two bytes at least: `1,`).
MAX_NODES = MAX_FILE_BYTES // 2
# Addresses of the form ::ffff:a.b.c.d: the classifier matches them as the IPv4 address a.b.c.d
# (tracker/classify.py), so a range inside this block could never match anything.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


# A refusal lists this many problems, each cut to MAX_ERROR_CHARS: a 2 MiB body of repeated
# mistakes gave a 113 MB answer (found in review), and the first hundred show what to fix.
MAX_ERRORS_LISTED = 100
MAX_ERROR_CHARS = 500


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else f"{text[:MAX_ERROR_CHARS]}... (cut)"


class RegistryError(ValueError):
    """A registry file that cannot be used; `errors` lists its problems as (path, reason): the
    first MAX_ERRORS_LISTED of them, then one entry saying how many more; `total` counts all."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = _cut(source)
        self.total = len(errors)
        listed = [(_cut(path), _cut(reason)) for path, reason in errors[:MAX_ERRORS_LISTED]]
        if self.total > MAX_ERRORS_LISTED:
            more = self.total - MAX_ERRORS_LISTED
            listed.append(("...", f"{more} more error(s) not listed: fix these and check again"))
        self.errors = listed
        lines = "\n".join(f"  {self.source}: {path}: {reason}" for path, reason in listed)
        super().__init__(f"registry {self.source} refused, {self.total} error(s):\n{lines}")


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


class Grade(_Strict):
    """An external sovereignty grade, where one exists, shown beside the tier and never used to
    compute it: e.g. the EU Cloud Sovereignty Framework's SEAL levels (scheme `eu-csf`, level
    `SEAL-3`), or a national empanelment."""

    scheme: Code
    level: str = Field(min_length=1, max_length=64)
    assessed_on: date | None = None
    reference: str | None = Field(default=None, max_length=500)
    note: str | None = Field(default=None, max_length=500)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("assessed_on", "reference", "note"))

    def label(self) -> str:
        return f"{self.scheme}:{self.level}"


class Operator(_Strict):
    id: Code
    name: LongName = Field(description="Legal name")
    jurisdiction: Country = Field(description="Home jurisdiction (ISO 3166-1 alpha-2)")
    grade: Grade | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("grade",))


class Facility(_Strict):
    id: Code
    operator: Code
    country: Country
    name: str = Field(default="", max_length=500)
    # Declared serving capacity for public-sector inference, in requests per hour: the C layer
    # of the capacity index (tracker/capacity.py). Unset means "not declared", counted as 0.
    serving_capacity_rph: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    grade: Grade | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("serving_capacity_rph", "grade"))


class Region(_Strict):
    """A provider's region code (ap-south-1, centralindia, asia-south1) served by a facility."""

    providers: list[Code] = Field(min_length=1)
    code: str = Field(min_length=1, max_length=64)
    facility: Code


class Endpoint(_Strict):
    """Where a facility is reached: a hostname pattern (exact host, or `*.suffix` for any
    subdomain of suffix) or an IP range in CIDR notation (for endpoint_host IP literals);
    exactly one of the two."""

    host: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^(\*\.)?[a-z0-9.-]+$"
    )
    cidr: str | None = Field(default=None, min_length=2, max_length=43)
    facility: Code

    @model_validator(mode="after")
    def _one_of(self, info: ValidationInfo) -> Endpoint:
        if (self.host is None) == (self.cidr is None):
            raise ValueError("give exactly one of host (hostname pattern) or cidr (IP range)")
        if self.cidr is not None:
            if "%" in self.cidr and not _stored(info):
                # ipaddress keeps a zone id on an IPv6 range (`2001:db8::%eth0/48`), but the
                # classifier matches addresses by number only: the range would stand for the
                # same addresses as the one written without it, and a zone names a link on one
                # host, never a place where a request is served.
                raise ValueError(
                    f"cidr: {self.cidr} has a zone id ('%'): endpoint ranges are matched by "
                    "address only, so write it without one"
                )
            try:
                net = ipaddress.ip_network(self.cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"cidr: not an IP range in CIDR notation: {exc}") from exc
            mapped = isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_IPV4_MAPPED)
            if mapped and not _stored(info):
                # Written beside the IPv4 form, the same addresses would have two facilities.
                assert isinstance(net, ipaddress.IPv6Network)
                v4 = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF,
                                            net.prefixlen - 96))  # fmt: skip
                raise ValueError(
                    f"cidr: {self.cidr} is an IPv4-mapped IPv6 range, and a mapped endpoint_host "
                    f"(::ffff:a.b.c.d) is matched as IPv4: write it as {v4}"
                )
        return self

    @field_validator("host")
    @classmethod
    def _host_can_match(cls, host: str | None, info: ValidationInfo) -> str | None:
        """Refuse patterns that no endpoint_host can ever match: the classifier drops a host's
        trailing dot and matches IP literals against cidr ranges only, so such a pattern would
        sit in the registry looking like a rule while classifying nothing (and `a.in` beside
        `a.in.` would look like two rules for one host)."""
        if host is None or _stored(info):
            return host
        name = host.removeprefix("*.")
        if "" in name.split("."):
            raise ValueError(
                f"{host!r} has an empty label (a leading or trailing dot, or '..'): endpoint "
                "hosts are matched without their trailing dot, so it could never match"
            )
        if name == host:  # an exact pattern: `*.10.0.0.1` still matches `a.10.0.0.1`
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return host
            raise ValueError(
                f"{host!r} is an IP address: an IP literal endpoint_host is matched against "
                f"cidr ranges only, never host patterns, so write cidr: {host}/32"
            )
        return host

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), self, ("host", "cidr"))

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        return None if self.cidr is None else ipaddress.ip_network(self.cidr)


class Provider(_Strict):
    id: Code
    operator: Code
    default_facility: Code | None = None
    aliases: list[Code] = Field(default_factory=list)


class Agency(_Strict):
    id: Code
    name: LongName
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
    country_name: LongName
    illustrative: bool = False
    reporting_currency: Currency
    fx_to_reporting: dict[Currency, Rate] = Field(default_factory=dict)
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

    @field_validator("fx_to_reporting")
    @classmethod
    def _reporting_rate_is_one(
        cls, rates: dict[str, Decimal], info: ValidationInfo
    ) -> dict[str, Decimal]:
        reporting = info.data.get("reporting_currency")
        rate = rates.get(reporting) if isinstance(reporting, str) else None
        if rate is not None and rate != 1:
            raise ValueError(f"{reporting} is the reporting currency: its rate must be 1")
        if not _stored(info):
            problems = []
            for code, value in rates.items():
                # The version is the hash of the rates as written: `84.0` and `84` would be two
                # versions of one registry (found in review). Each rate has one spelling, its
                # shortest; versions stored before this check keep theirs.
                shortest = _shortest(value)
                shown = _shown(str(value))
                digits = len(shortest.as_tuple().digits)
                if value < MIN_RATE:
                    problems.append(
                        f"{code}: the rate {shown} is below {MIN_RATE:f}: costs are stored with 9 "
                        "decimal places, so spending converted at it would be stored as 0"
                    )
                elif digits > MAX_RATE_DIGITS:
                    problems.append(
                        f"{code}: the rate {shown} has {digits} significant digits, over "
                        f"{MAX_RATE_DIGITS}: no published rate carries as many, and a number "
                        f"written in YAML holds {MAX_RATE_DIGITS} exactly"
                    )
                elif str(value) != str(shortest):
                    problems.append(f"{code}: write the rate {value} as {shortest}")
            if problems:
                raise ValueError("; ".join(problems))
        return rates

    @model_validator(mode="after")
    def _references_resolve(self, info: ValidationInfo) -> Registry:
        problems = reference_problems(self.model_dump(mode="json"), stored=_stored(info))
        if problems:
            raise ValueError("; ".join(f"{path}: {reason}" for path, reason in problems))
        return self

    @property
    def version(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "r-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _items(data: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    value = data.get(section)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _shortest(value: Decimal) -> Decimal:
    """`value` without trailing zeros, and in plain digits where normalizing gave an exponent
    (100, not 1E+2)."""
    plain = value.normalize()
    exponent = plain.as_tuple().exponent
    return plain.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else plain


def _stored(info: ValidationInfo) -> bool:
    """Whether a version already stored is being read back (`parse(..., stored=True)`)."""
    return bool(info.context and info.context.get("stored"))


def reference_problems(data: dict[str, Any], *, stored: bool = False) -> list[tuple[str, str]]:
    """Cross-references and uniqueness, as (path, reason). Tolerant of malformed entries, so it
    also runs on a file that failed field validation and every error is listed in one pass.
    `stored`: without the checks added after versions were first stored (see parse)."""
    problems: list[tuple[str, str]] = []

    def unique(
        section: str, what: str, keys: list[tuple[int, str | None]], *, fold: bool = False
    ) -> set[str]:
        seen: dict[str, str] = {}  # compared key -> the first spelling written
        for i, key in keys:
            if key is None:
                continue
            compared = key.lower() if fold else key
            first = seen.get(compared)
            if first is None:
                seen[compared] = key
                continue
            also = "" if first == key else f" (same as {first!r}: compared regardless of case)"
            problems.append((f"{section}.{i}", f"duplicate {what} {key!r}{also}"))
        return set(seen.values())

    def ids(section: str) -> set[str]:
        return unique(section, "id", [(i, _str(x.get("id"))) for i, x in _items(data, section)])

    operators, facilities = ids("operators"), ids("facilities")
    ids("agencies")
    names: list[tuple[int, str | None]] = []
    for i, p in _items(data, "providers"):
        names.append((i, _str(p.get("id"))))
        aliases = p.get("aliases")
        names.extend((i, _str(a)) for a in (aliases if isinstance(aliases, list) else []))
    # The classifier looks provider names up regardless of case (gateways write `OpenAI` as
    # well as `openai`), so `Anthropic` beside `anthropic` is one name claimed twice: accepted,
    # the later entry would silently take every record of the earlier one.
    unique("providers", "id or alias", names, fold=not stored)
    # The same evidence mapped twice would make the answer depend on the order of the file.
    endpoints = _items(data, "endpoints")
    unique("endpoints", "host", [(i, _str(e.get("host"))) for i, e in endpoints])
    # Ranges are compared as the classifier keys them: IP version, network number and prefix
    # length. A zone id (refused on its own) is no part of that key, so `2001:db8::%eth0/48`
    # duplicates `2001:db8::/48`; a version stored before this check keeps the comparison it
    # was accepted by (the zone id told them apart).
    nets: dict[tuple[int, int, int, str | None], str] = {}
    for i, e in endpoints:
        if "cidr" not in e:
            continue
        try:
            net = ipaddress.ip_network(str(e["cidr"]))
        except ValueError:
            continue  # a malformed range is reported by its field
        zone = getattr(net.network_address, "scope_id", None) if stored else None
        same = (net.version, int(net.network_address), net.prefixlen, zone)
        if same not in nets:
            nets[same] = str(net)
            continue
        also = "" if nets[same] == str(net) else f" (the same addresses as {nets[same]!r})"
        problems.append((f"endpoints.{i}", f"duplicate cidr range {str(net)!r}{also}"))
    # Regions are matched per provider, whichever of its names (id or alias) either the
    # registry or the record uses, and regardless of case (tracker/classify.py). Listing one
    # region under both the id and an alias is how the shipped files are written and harmless
    # when both say the same facility; two facilities for one provider/code would make the
    # answer depend on the order of the file.
    provider_of: dict[str, str] = {}
    for _, p in _items(data, "providers"):
        pid, aliases = _str(p.get("id")), p.get("aliases")
        if pid is None:
            continue
        for name in [pid, *(aliases if isinstance(aliases, list) else [])]:
            if isinstance(name, str):
                provider_of.setdefault(name.lower(), pid.lower())
    written: set[str] = set()
    served: dict[tuple[str, str], tuple[int, str, str | None]] = {}
    for i, r in _items(data, "regions"):
        provs, code, facility = r.get("providers"), _str(r.get("code")), _str(r.get("facility"))
        for p in provs if isinstance(provs, list) and code else []:
            if not isinstance(p, str) or code is None:
                continue  # reported by its field
            pair = f"{p}/{code}".lower()
            if pair in written:
                problems.append((f"regions.{i}", f"duplicate provider/code pair {pair!r}"))
                continue
            written.add(pair)
            key = (provider_of.get(p.lower(), p.lower()), code.lower())
            at, name, other = served.setdefault(key, (i, p, facility))
            if other != facility and not stored:
                first = f"{name}/{code}".lower()
                problems.append((f"regions.{i}", (
                    f"provider/code pair {pair!r} maps to facility {facility!r}, but {first!r} "
                    f"(the same provider) maps to {other!r} at regions.{at}: an alias shares "
                    "its provider's regions"
                )))  # fmt: skip

    def resolve(section: str, field: str, known: set[str], what: str) -> None:
        for i, item in _items(data, section):
            value = item.get(field)
            if value is not None and isinstance(value, str) and value not in known:
                problems.append((f"{section}.{i}.{field}", f"unknown {what} {value!r}"))

    resolve("facilities", "operator", operators, "operator")
    resolve("regions", "facility", facilities, "facility")
    if not stored:
        # A region is read only for records whose provider is one of its names, looked up
        # regardless of case (tracker/classify.py): under a name that is no provider's id or
        # alias (a typo, `aws_bedrok`) it would sit in the file classifying nothing.
        for i, r in _items(data, "regions"):
            provs = r.get("providers")
            for m, p in enumerate(provs if isinstance(provs, list) else []):
                if isinstance(p, str) and p.lower() not in provider_of:
                    problems.append((f"regions.{i}.providers.{m}", f"unknown provider {p!r}"))
    resolve("endpoints", "facility", facilities, "facility")
    resolve("providers", "operator", operators, "operator")
    resolve("providers", "default_facility", facilities, "facility")
    fx, currency = data.get("fx_to_reporting"), data.get("reporting_currency")
    if isinstance(currency, str) and (not isinstance(fx, dict) or currency not in fx):
        problems.append(("fx_to_reporting", "must include the reporting currency itself (1)"))
    return problems


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _Refused(yaml.MarkedYAMLError):
    """A document the loader refuses for a reason of its own: `problem`, at `problem_mark`."""


_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def _shown(text: str, limit: int = 40) -> str:
    """A scalar as written, cut short in a reason (a 2 MB file may hold a 2 MB number)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes `root` stands for with every alias written out; _Refused over MAX_NODES
    or for an alias inside its own anchor (a collection that contains itself: no registry is
    one, and counting it would never end). Each node is counted once and its size kept, so the
    walk is as long as the text; depth is bounded by compose_node."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_:
            raise _Refused(problem="an alias inside its own anchor: a collection that contains "
                           "itself is not a registry", problem_mark=node.start_mark)  # fmt: skip
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_.discard(key)
        if total > MAX_NODES:
            raise _Refused(
                problem=f"with its aliases written out, more than {MAX_NODES} nodes, more than "
                f"a file of {MAX_FILE_BYTES} bytes could hold: anchors repeated level on level "
                "(`<<: [*a, *a]`) grow the document with each level",
                problem_mark=node.start_mark,
            )
        sizes[key] = total
        return total

    return size(root)


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing with the place (line and column):
    - collections nested deeper than MAX_DEPTH, before the recursive composer and constructor
      can exhaust the interpreter's stack;
    - a scalar PyYAML cannot build: a date-shaped `2026-02-30` or `0000-01-01`, `!!int x`. Its
      constructors raise a plain ValueError (or KeyError, IndexError...), no YAMLError, which
      ended in an HTTP 500, a CLI traceback and a failed process start (found in review);
    - for new input only (see _StoredLoader): a key written twice in one mapping, which PyYAML
      accepts keeping the last value while a reader of the text sees the first (`country: IN,
      country: SG` classified as SG, found in review); and a number with a decimal point whose
      digits a float cannot hold, which would be read as another number than the one written.
    What it returns for any document it accepts is exactly what safe_load returns, so no
    version changes."""

    _depth = 0
    # False for the text of a version already stored (_StoredLoader).
    new_input = True

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._keys_checked: set[yaml.Node] = set()

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(problem=f"nested deeper than {MAX_DEPTH} levels",
                               problem_mark=self.get_mark())  # fmt: skip
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, LookupError, TypeError, AttributeError, ArithmeticError) as exc:
            # Raised by the constructor of this very node: one inside it was converted there.
            written = node.value if isinstance(node.value, str) else str(node.value)
            if node.tag == _TIMESTAMP:
                why = str(exc) if isinstance(exc, ValueError) else "not YYYY-MM-DD"
                problem = f"not a valid date: {_shown(written)} ({why})"
            else:
                kind = node.tag.rsplit(":", 1)[-1]
                problem = f"not a valid {kind}: {_shown(written)} ({type(exc).__name__}: {exc})"
            raise _Refused(problem=problem, problem_mark=node.start_mark) from exc

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Called for each mapping before its merge keys (`<<`) are resolved, and again each
        # time it is merged into another: its keys are compared once, as written. A key that
        # overrides a merged one is how merges are meant to be used, not a repetition.
        if self.new_input and node not in self._keys_checked:
            self._keys_checked.add(node)
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                    continue  # a collection as a key is refused as unhashable by PyYAML
                key = self.construct_object(key_node)
                seen = first.setdefault(key, key_node)
                if seen is not key_node:
                    at = f"line {seen.start_mark.line + 1}, column {seen.start_mark.column + 1}"
                    raise _Refused(
                        problem=f"duplicate key {_shown(key_node.value)} (first at {at}): YAML "
                        "would silently keep only the last value, while the text shows both",
                        problem_mark=key_node.start_mark,
                    )
        super().flatten_mapping(node)

    def construct_exact_float(self, node: yaml.ScalarNode) -> float:
        value = self.construct_yaml_float(node)
        if not self.new_input:
            return value
        try:
            written = Decimal(node.value.replace("_", ""))
        except InvalidOperation:  # .inf, .nan, base 60 (1:30.5): no digits to lose
            return value
        if written != Decimal(repr(value)):
            raise _Refused(
                problem=f"the number {_shown(node.value)} cannot be read as written: it reads as "
                f"{value!r} (a number with a decimal point is read as a binary float, which holds "
                "15 significant digits exactly); write fewer digits",
                problem_mark=node.start_mark,
            )
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_exact_float)


class _StoredLoader(_BoundedLoader):
    """For the text of a version already stored: it was accepted when recorded, so the loader's
    refusals added since (repeated keys, numbers with more digits than a float holds) do not
    apply, and it reads back to the version it was stored as (the last of two keys wins, as
    PyYAML always did). Dates and depth are refused as before: text with those was never
    stored."""

    new_input = False


def parse(text: str, source: str, *, stored: bool = False) -> Registry:
    """Parse and validate registry YAML; every problem is reported, nothing is half-loaded.

    `stored`: the text of a version already recorded (registry_versions), read back to classify
    or to show history. It was valid when loaded, and refusing it now would stop every process
    at start and every look at that history, so the checks added since (provider names that
    differ only in case, a provider/region pair with two facilities, host patterns that can
    never match, IPv4-mapped ranges, ranges with a zone id, regions under a name that is no
    provider's, a key written twice in one mapping, a number a float cannot hold as written,
    rates below MIN_RATE or with more than MAX_RATE_DIGITS digits) refuse new files only. Its
    version hash is unaffected."""
    try:
        loader = _StoredLoader if stored else _BoundedLoader
        data: Any = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader
    except _TooDeep as exc:
        where = f"line {exc.problem_mark.line + 1}" if exc.problem_mark else "document"
        reason = f"nested deeper than {MAX_DEPTH} levels: not a registry (one is ~5 deep)"
        raise RegistryError(source, [(where, reason)]) from exc
    except _Refused as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        raise RegistryError(source, [(where, exc.problem or "refused")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        raise RegistryError(source, [(where, f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise RegistryError(source, [("document", "must be a mapping at the top level")])
    try:
        return Registry.model_validate(data, context={"stored": stored})
    except ValidationError as exc:
        errors: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False, include_input=False):
            if not err["loc"]:
                continue  # the registry-wide reference check: listed below with exact paths
            path = ".".join(str(p) for p in err["loc"])
            for reason in err["msg"].removeprefix("Value error, ").split("; "):
                errors.append((path, reason))
        errors.extend(reference_problems(data, stored=stored))
        raise RegistryError(source, errors) from exc


def load(path: Path | None = None) -> tuple[Registry, str]:
    """Load a registry file (default: the shipped example); returns it with its raw text."""
    if path is None:
        text = resources.files("tracker.registry_data").joinpath(DEFAULT_REGISTRY).read_text()
        return parse(text, DEFAULT_REGISTRY), text
    try:
        # Read one byte past the bound instead of trusting st_size: a pipe, a FIFO or a device
        # (`--file /dev/stdin`, `<(...)`) has none, and was read whole (found in review).
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise RegistryError(str(path), [("file", f"over {MAX_FILE_BYTES} bytes")])
        # Newlines translated as a file opened as text translates them (the stored text of a
        # version is what was loaded, as before).
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except OSError as exc:
        raise RegistryError(str(path), [("file", exc.strerror or str(exc))]) from exc
    except UnicodeDecodeError as exc:
        raise RegistryError(str(path), [("file", f"not UTF-8 text ({exc.reason})")]) from exc
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
