"""Sovereignty classification: where was an inference served, and by whom?

Precedence (most specific evidence first), each tested in tests/unit/test_classify*.py:
  1. explicit cloud region of the provider      rule `region:<provider>/<code>`
  2. endpoint IP range, when endpoint_host is an IP literal (longest prefix wins)
                                                 rule `ip:<cidr>`
  3. endpoint hostname pattern (exact, then the longest `*.suffix`)
                                                 rule `host:<pattern>`
  4. the provider's default facility             rule `provider-default:<provider>`
  5. nothing matched: unknown                    rule `none`
The tier follows from the facility's country and its operator's jurisdiction against the
registry's country:
  sovereign  domestic operator, facility on domestic soil
  onshore    foreign operator, facility on domestic soil
  offshore   facility abroad
  unknown    no evidence matched; counted in the denominator, reported on its own
Only provider, region and endpoint_host are read, so no other field can change a tier.
External sovereignty grades (registry `grade:`) are carried beside the tier, never into it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tracker.contract import Tier
from tracker.registry import Agency, Facility, Registry


@dataclass(frozen=True, slots=True)
class Classification:
    tier: Tier
    facility_id: str
    facility_country: str
    operator: str
    rule: str  # which rule matched, e.g. "region:aws_bedrock/ap-south-1"
    registry_version: str
    facility_grade: str = ""  # e.g. "eu-csf:SEAL-3"; "" when none is registered
    operator_grade: str = ""


UNKNOWN_AGENCY = Agency(id="unknown", name="unknown", sector="unknown", channel="unknown")
_CACHE_LIMIT = 100_000  # bounded: hosts are caller-controlled


def _is_port(text: str) -> bool:
    return 1 <= len(text) <= 5 and text.isascii() and text.isdigit()


def host_part(endpoint_host: str) -> str:
    """endpoint_host without a port or the brackets of an IPv6 literal: gateways report the
    authority of the URL they called (`api.sarvam.ai:443`, `10.1.2.3:8443`, `[2001:db8::9]:443`)
    as often as the bare host, and the port says nothing about where the request was served.
    An unbracketed IPv6 literal (`2001:db8::1`) has more than one colon and is left whole: only
    brackets can set a port apart from it."""
    text = endpoint_host.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if bracket and (not rest or (rest.startswith(":") and _is_port(rest[1:]))):
            return inside
        return text
    name, colon, port = text.rpartition(":")
    if colon and ":" not in name and _is_port(port):
        return name
    return text


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when endpoint_host is an IP literal (`10.0.0.1`, `::1`, `[::1]`, with or
    without a port). An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket
    reports for an IPv4 peer) is the IPv4 address it carries, so IPv4 ranges match it (the
    loader refuses ranges written in the mapped form, which could then never match). One
    trailing dot is dropped first (`10.0.0.1.`), as it is from a hostname: otherwise the
    literal would be read as a hostname and never meet the cidr ranges."""
    try:
        address = ipaddress.ip_address(host_part(host).removesuffix("."))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _Index:
    """Every lookup of one registry version, built once and then read-only, so a classifier can
    switch versions by replacing one reference (see Classifier.swap)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.version = registry.version
        self.facilities = {f.id: f for f in registry.facilities}
        self.operators = {o.id: o for o in registry.operators}
        self.provider = {}
        for p in registry.providers:
            for name in (p.id, *p.aliases):
                self.provider[name.lower()] = p
        # Keyed by the provider's id, whichever of its names the registry lists the region
        # under, so an alias shares its provider's regions both ways: a region written only
        # under `gcp` is also google_vertex's and gemini's. (The loader refuses one provider/
        # code pair mapped to two facilities under two names.) A name that is no provider's is
        # kept as written.
        # A version stored before that check may still hold such a pair: the entry listed under
        # the provider's id wins, else the first under an alias, so the answer never depends
        # on the order of the file (as it did not before regions were shared).
        self.regions: dict[tuple[str, str], str] = {}
        under_id: set[tuple[str, str]] = set()
        for r in registry.regions:
            for name in r.providers:
                owner = self.provider.get(name.lower())
                key = (owner.id.lower() if owner is not None else name.lower(), r.code.lower())
                by_id = owner is not None and owner.id.lower() == name.lower()
                if key in under_id or (key in self.regions and not by_id):
                    continue
                self.regions[key] = r.facility
                if by_id:
                    under_id.add(key)
        hosts = [e for e in registry.endpoints if e.host is not None]
        self.exact_hosts = {e.host: e.facility for e in hosts if e.host and "*" not in e.host}
        # Longest suffix first, so a more specific pattern wins over a broader one.
        self.suffixes = sorted(
            ((e.host[1:], e.facility) for e in hosts if e.host and e.host.startswith("*.")),
            key=lambda pair: -len(pair[0]),
        )
        # IP ranges per (IP version, prefix length): a lookup masks the address once per
        # distinct prefix length, longest first, so the most specific range wins.
        self.nets: dict[int, list[tuple[int, dict[int, tuple[str, str]]]]] = {4: [], 6: []}
        by_len: dict[tuple[int, int], dict[int, tuple[str, str]]] = {}
        for e in registry.endpoints:
            net = e.network()
            if net is not None:
                table = by_len.setdefault((net.version, net.prefixlen), {})
                table[int(net.network_address)] = (str(net), e.facility)
        for (ipv, plen), table in sorted(by_len.items(), key=lambda kv: -kv[0][1]):
            self.nets[ipv].append((plen, table))
        self.agencies = {a.id: a for a in registry.agencies}
        self.cache: dict[tuple[str, str | None, str | None], Classification] = {}


class Classifier:
    """Pre-indexed registry lookups; built once per registry version, then pure and fast."""

    _ix: _Index
    _view: Classifier

    def __init__(self, registry: Registry) -> None:
        self._publish(_Index(registry))

    def _publish(self, ix: _Index) -> None:
        view = Classifier.__new__(Classifier)
        view._ix, view._view = ix, view
        self._view = view
        self._ix = ix

    def pinned(self) -> Classifier:
        """The version in force now, as a classifier that is never swapped: what one record's
        tier, agency and cost conversion all come from (pipeline.processor), whatever a swap on
        another thread does meanwhile. Reading `classify`, `agency` and `registry` one after
        another could give two versions across a swap (found in review). Do not swap it."""
        return self._view

    @property
    def registry(self) -> Registry:
        return self._ix.registry

    @property
    def version(self) -> str:
        return self._ix.version

    def swap(self, registry: Registry) -> None:
        """Classify by another registry version from now on. The new index is built first and
        published by one reference assignment, so a classification in flight on another
        thread sees either the old version or the new one, never a mix."""
        self._publish(_Index(registry))

    def agency(self, agency_id: str) -> Agency | None:
        return self._ix.agencies.get(agency_id)

    def classify(
        self, provider: str, region: str | None, endpoint_host: str | None
    ) -> Classification:
        ix = self._ix
        key = (provider, region, endpoint_host)
        hit = ix.cache.get(key)
        if hit is None:
            hit = _classify(ix, provider, region, endpoint_host)
            if len(ix.cache) < _CACHE_LIMIT:
                ix.cache[key] = hit
        return hit

    def tier_of(self, facility: Facility) -> Tier:
        return _tier_of(self._ix, facility)


def _classify(ix: _Index, provider: str, region: str | None, host: str | None) -> Classification:
    prov = provider.lower()
    known = ix.provider.get(prov)
    # A region code is named per provider; aliases share their provider's regions.
    if region:
        # Looked up (and recorded) by the canonical id, so the rule does not depend on the
        # alias used.
        name = known.id.lower() if known else prov
        facility = ix.regions.get((name, region.lower()))
        if facility is not None:
            return _of(ix, facility, f"region:{name}/{region.lower()}")
    if host:
        address = ip_literal(host)
        if address is not None:
            value = int(address)
            bits = address.max_prefixlen
            for plen, table in ix.nets[address.version]:
                found = table.get(value >> (bits - plen) << (bits - plen))
                if found is not None:
                    return _of(ix, found[1], f"ip:{found[0]}")
        else:
            h = host_part(host).lower().rstrip(".")
            facility = ix.exact_hosts.get(h)
            if facility is not None:
                return _of(ix, facility, f"host:{h}")
            for suffix, fac in ix.suffixes:
                if h.endswith(suffix):
                    return _of(ix, fac, f"host:*{suffix}")
    if known is not None and known.default_facility is not None:
        return _of(ix, known.default_facility, f"provider-default:{known.id}")
    operator = known.operator if known else ""
    op = ix.operators.get(operator)
    return Classification(
        Tier.unknown, "", "", operator, "none", ix.version,
        operator_grade=op.grade.label() if op and op.grade else "",
    )  # fmt: skip


def _of(ix: _Index, facility_id: str, rule: str) -> Classification:
    facility: Facility = ix.facilities[facility_id]
    operator = ix.operators[facility.operator]
    return Classification(
        tier=_tier_of(ix, facility),
        facility_id=facility.id,
        facility_country=facility.country,
        operator=facility.operator,
        rule=rule,
        registry_version=ix.version,
        facility_grade=facility.grade.label() if facility.grade else "",
        operator_grade=operator.grade.label() if operator.grade else "",
    )


def _tier_of(ix: _Index, facility: Facility) -> Tier:
    home = ix.registry.country
    if facility.country != home:
        return Tier.offshore
    if ix.operators[facility.operator].jurisdiction == home:
        return Tier.sovereign
    return Tier.onshore
