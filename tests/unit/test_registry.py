from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tracker.classify import Classifier
from tracker.contract import Tier
from tracker.demo import ROUTES
from tracker.registry import RegistryError, load, parse


@pytest.fixture(scope="module")
def text() -> str:
    return load()[1]


def test_shipped_registry_loads_and_is_illustrative() -> None:
    registry, _ = load()
    assert registry.country == "IN"
    assert registry.illustrative
    assert len(registry.agencies) >= 30
    assert len({a.sector for a in registry.agencies}) >= 6


def test_version_is_content_hash(text: str) -> None:
    a = parse(text, "a.yaml")
    b = parse(text + "\n# a comment changes nothing\n", "b.yaml")
    assert a.version == b.version
    data = yaml.safe_load(text)
    data["agencies"][0]["name"] = "Renamed"
    assert parse(yaml.safe_dump(data), "c.yaml").version != a.version


@pytest.mark.parametrize(
    ("provider", "region", "host", "tier", "rule"),
    [
        ("sarvam", None, None, Tier.sovereign, "provider-default:sarvam"),
        ("azure_openai", "centralindia", None, Tier.onshore, "region:azure_openai/centralindia"),
        ("azure", "CentralIndia", None, Tier.onshore, "region:azure_openai/centralindia"),
        ("azure_openai", "eastus", None, Tier.offshore, "region:azure_openai/eastus"),
        ("azure_openai", None, None, Tier.unknown, "none"),
        ("openai", None, "api.openai.com", Tier.offshore, "host:api.openai.com"),
        ("aws_bedrock", None, "x.bedrock-runtime.ap-south-1.amazonaws.com", Tier.onshore,
         "host:*.bedrock-runtime.ap-south-1.amazonaws.com"),
        ("nobody", None, None, Tier.unknown, "none"),
        # Region outranks host, host outranks the provider default.
        ("aws_bedrock", "us-east-1", "bedrock-runtime.ap-south-1.amazonaws.com", Tier.offshore,
         "region:aws_bedrock/us-east-1"),
        ("openai", None, "api.sarvam.ai", Tier.sovereign, "host:api.sarvam.ai"),
    ],
)  # fmt: skip
def test_classification_and_precedence(
    provider: str, region: str | None, host: str | None, tier: Tier, rule: str
) -> None:
    c = Classifier(load()[0]).classify(provider, region, host)
    assert (c.tier, c.rule) == (tier, rule)


def test_every_demo_route_classifies_as_intended() -> None:
    classifier = Classifier(load()[0])
    tiers = set()
    for route in ROUTES:
        c = classifier.classify(route.provider, route.region, route.host)
        tiers.add(c.tier)
        if route.domestic:
            assert c.tier in (Tier.sovereign, Tier.onshore), route
        else:
            assert c.tier in (Tier.offshore, Tier.unknown), route
    assert tiers == set(Tier)


def test_tier_follows_country_not_code(text: str) -> None:
    """Make the same data describe the US: Microsoft's US facility becomes sovereign."""
    data = yaml.safe_load(text)
    data["country"] = "US"
    data["fx_to_reporting"] = {"USD": 1}
    data["reporting_currency"] = "USD"
    c = Classifier(parse(yaml.safe_dump(data), "us.yaml")).classify("azure_openai", "eastus", None)
    assert c.tier is Tier.sovereign


def test_malformed_registry_refused_with_every_error(text: str) -> None:
    data = yaml.safe_load(text)
    data["facilities"][0]["operator"] = "ghost"
    data["regions"][0]["facility"] = "nowhere"
    data["agencies"].append(dict(data["agencies"][0]))
    data["country"] = "India"
    with pytest.raises(RegistryError) as info:
        parse(yaml.safe_dump(data), "bad.yaml")
    paths = {p for p, _ in info.value.errors}
    assert "country" in paths
    with pytest.raises(RegistryError) as info:
        data["country"] = "IN"
        parse(yaml.safe_dump(data), "bad.yaml")
    reasons = " | ".join(r for _, r in info.value.errors)
    assert "unknown operator 'ghost'" in reasons
    assert "unknown facility 'nowhere'" in reasons
    assert "duplicate id" in reasons
    assert "bad.yaml" in str(info.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse("a: [unclosed", "x.yaml")
    with pytest.raises(RegistryError, match="file"):
        load(tmp_path / "missing.yaml")


# As YAML: a float (84.0 is read as 84.0, 84.50 as 84.5), a quoted string, a string YAML does not
# read as a float.
@pytest.mark.parametrize(
    ("yaml_text", "written", "shortest"),
    [("84.0", "84.0", "84"), ('"84.50"', "84.50", "84.5"), ("1E+2", "1E+2", "100")],
)
def test_a_rate_has_one_spelling(text: str, yaml_text: str, written: str, shortest: str) -> None:
    """`84.0` and `84` were two versions of one registry (found in review): a new registry
    must write each rate in its shortest form; a version stored before keeps its own."""
    spelled = text.replace("  USD: 84\n", f"  USD: {yaml_text}\n")
    assert spelled != text
    with pytest.raises(RegistryError) as info:
        parse(spelled, "rates.yaml")
    assert [(p, r) for p, r in info.value.errors if "USD" in r] == [
        ("fx_to_reporting", f"USD: write the rate {written} as {shortest}")
    ]
    stored = parse(spelled, "stored", stored=True)
    assert str(stored.fx_to_reporting["USD"]) == written
    assert stored.version != parse(text, "india.yaml").version
