"""Sovereignty classification: where was an inference served, and by whom?

Precedence (most specific evidence first): explicit cloud region of the provider > endpoint
hostname pattern > the provider's default facility > unknown. The tier follows from the
facility's country and its operator's jurisdiction against the registry's country:
  sovereign  domestic operator, facility on domestic soil
  onshore    foreign operator, facility on domestic soil
  offshore   facility abroad
  unknown    no evidence matched; counted in the denominator, reported on its own
Only provider, region and endpoint_host are read, so no other field can change a tier.
"""

from __future__ import annotations

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


UNKNOWN_AGENCY = Agency(id="unknown", name="unknown", sector="unknown", channel="unknown")


class Classifier:
    """Pre-indexed registry lookups; built once per registry version, then pure and fast."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.version = registry.version
        self._facilities = {f.id: f for f in registry.facilities}
        self._jurisdiction = {o.id: o.jurisdiction for o in registry.operators}
        self._provider = {}
        for p in registry.providers:
            for name in (p.id, *p.aliases):
                self._provider[name.lower()] = p
        self._regions: dict[tuple[str, str], str] = {}
        for r in registry.regions:
            for provider in r.providers:
                self._regions[(provider.lower(), r.code.lower())] = r.facility
        self._exact_hosts = {e.host: e.facility for e in registry.endpoints if "*" not in e.host}
        # Longest suffix first, so a more specific pattern wins over a broader one.
        self._suffixes = sorted(
            ((e.host[1:], e.facility) for e in registry.endpoints if e.host.startswith("*.")),
            key=lambda pair: -len(pair[0]),
        )
        self._agencies = {a.id: a for a in registry.agencies}
        self._cache: dict[tuple[str, str | None, str | None], Classification] = {}

    def agency(self, agency_id: str) -> Agency | None:
        return self._agencies.get(agency_id)

    def classify(
        self, provider: str, region: str | None, endpoint_host: str | None
    ) -> Classification:
        key = (provider, region, endpoint_host)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._classify(provider, region, endpoint_host)
            if len(self._cache) < 100_000:  # bounded: hosts are caller-controlled
                self._cache[key] = hit
        return hit

    def _classify(self, provider: str, region: str | None, host: str | None) -> Classification:
        prov = provider.lower()
        known = self._provider.get(prov)
        # A region code is named per provider; aliases share their provider's regions.
        if region:
            # The canonical id first, so the recorded rule does not depend on the alias used.
            for name in dict.fromkeys([known.id.lower() if known else prov, prov]):
                facility = self._regions.get((name, region.lower()))
                if facility is not None:
                    return self._of(facility, f"region:{name}/{region.lower()}")
        if host:
            h = host.lower().rstrip(".")
            facility = self._exact_hosts.get(h)
            if facility is not None:
                return self._of(facility, f"host:{h}")
            for suffix, fac in self._suffixes:
                if h.endswith(suffix):
                    return self._of(fac, f"host:*{suffix}")
        if known is not None and known.default_facility is not None:
            return self._of(known.default_facility, f"provider-default:{known.id}")
        return Classification(
            Tier.unknown, "", "", known.operator if known else "", "none", self.version
        )

    def _of(self, facility_id: str, rule: str) -> Classification:
        facility: Facility = self._facilities[facility_id]
        return Classification(
            tier=self.tier_of(facility),
            facility_id=facility.id,
            facility_country=facility.country,
            operator=facility.operator,
            rule=rule,
            registry_version=self.version,
        )

    def tier_of(self, facility: Facility) -> Tier:
        home = self.registry.country
        if facility.country != home:
            return Tier.offshore
        if self._jurisdiction[facility.operator] == home:
            return Tier.sovereign
        return Tier.onshore
