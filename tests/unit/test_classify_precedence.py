"""Classification precedence (region > IP range > hostname > provider default > unknown), IP
ranges, grades beside the tier, a second country, and switching versions in place."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from tracker.classify import Classifier, ip_literal
from tracker.contract import Tier
from tracker.registry import Registry, load, parse


def lux() -> Registry:
    text = resources.files("tracker.registry_data").joinpath("luxembourg.yaml").read_text()
    return parse(text, "luxembourg.yaml")


@pytest.mark.parametrize(
    ("provider", "region", "host", "tier", "rule"),
    [
        # All four kinds of evidence present: the region decides.
        ("aws", "eu-central-1", "10.42.7.1", Tier.offshore, "region:aws_bedrock/eu-central-1"),
        # Unknown region: the IP range decides, before the provider default (Mistral, FR).
        ("mistral", "nowhere-1", "10.42.7.1", Tier.sovereign, "ip:10.42.7.0/24"),
        # The longest prefix wins inside a broader range.
        ("mistral", None, "10.42.200.1", Tier.sovereign, "ip:10.42.0.0/16"),
        # IPv6, bracketed as in a URL authority.
        ("x", None, "[2001:db8:42::9]", Tier.onshore, "ip:2001:db8:42::/48"),
        # An IP outside every range falls through to the provider default, not to host patterns.
        ("mistral", None, "192.0.2.1", Tier.offshore, "provider-default:mistral"),
        # A hostname outranks the provider default.
        ("openai", None, "gpu1.meluxina.lu", Tier.sovereign, "host:*.meluxina.lu"),
        ("openai", None, None, Tier.offshore, "provider-default:openai"),
        ("azure_openai", None, None, Tier.unknown, "none"),
        ("proximus_ai", None, None, Tier.onshore, "provider-default:proximus_ai"),
    ],
)  # fmt: skip
def test_precedence_in_a_second_country(
    provider: str, region: str | None, host: str | None, tier: Tier, rule: str
) -> None:
    c = Classifier(lux()).classify(provider, region, host)
    assert (c.tier, c.rule) == (tier, rule)


def test_second_country_is_only_configuration() -> None:
    """The same hyperscaler region is offshore from Luxembourg and from India alike, while a
    domestic operator is sovereign in its own country's file: nothing is tied to India."""
    lu, india = Classifier(lux()), Classifier(load()[0])
    assert lu.registry.country == "LU" and india.registry.country == "IN"
    assert lu.classify("meluxina_ai", None, None).tier is Tier.sovereign
    assert india.classify("meluxina_ai", None, None).tier is Tier.unknown
    assert india.classify("sarvam", None, None).tier is Tier.sovereign
    assert lu.classify("sarvam", None, None).tier is Tier.unknown
    assert lu.classify("openai", None, None).facility_country == "US"


def test_india_ip_ranges_and_grades() -> None:
    c = Classifier(load()[0])
    nic = c.classify("openai", None, "10.160.1.2")
    assert (nic.tier, nic.rule, nic.facility_id) == (Tier.sovereign, "ip:10.160.0.0/16",
                                                      "nic-meghraj-delhi")  # fmt: skip
    assert c.classify("openai", None, "10.160.40.2").facility_id == "ctrls-hyderabad"
    yotta = c.classify("sarvam", None, None)
    assert yotta.facility_grade == "meity-empanelment:empanelled"
    assert c.classify("openai", None, None).facility_grade == ""


def test_grade_beside_the_tier_never_changes_it() -> None:
    registry = lux()
    graded = Classifier(registry).classify("proximus_ai", None, None)
    assert (graded.tier, graded.facility_grade) == (Tier.onshore, "eu-csf:SEAL-2")
    data = yaml.safe_load(yaml.safe_dump(registry.model_dump(mode="json")))
    for f in data["facilities"]:
        f.pop("grade", None)
    for o in data["operators"]:
        o.pop("grade", None)
    plain = Classifier(parse(yaml.safe_dump(data), "nograde.yaml"))
    got = plain.classify("proximus_ai", None, None)
    assert (got.tier, got.rule, got.facility_grade) == (graded.tier, graded.rule, "")
    lux_op = Classifier(registry).classify("meluxina_ai", None, None)
    assert lux_op.operator_grade == "eu-csf:SEAL-4"


def test_ip_literal() -> None:
    assert str(ip_literal("10.0.0.1")) == "10.0.0.1"
    assert str(ip_literal("[::1]")) == "::1"
    assert ip_literal("api.openai.com") is None
    assert ip_literal("10.0.0.1.nip.io") is None


def test_swap_switches_every_lookup_at_once() -> None:
    india, lu = load()[0], lux()
    c = Classifier(india)
    before = c.classify("openai", None, "10.42.7.1")
    assert before.rule == "provider-default:openai" and before.registry_version == india.version
    c.swap(lu)
    after = c.classify("openai", None, "10.42.7.1")
    assert (after.rule, after.registry_version) == ("ip:10.42.7.0/24", lu.version)
    assert c.agency("lu-chl") is not None and c.agency("in-sbi") is None
    assert c.version == lu.version and c.registry is lu
