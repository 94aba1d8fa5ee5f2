"""The loader refuses evidence the classifier would read differently from how it is written:
provider names differing only in case, one provider/region pair with two facilities under two
of the provider's names, IPv4-mapped IPv6 ranges, host patterns no endpoint_host can match; and
a deeply nested file is a refusal with a reason, not a RecursionError. (Found in review.)"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tracker.classify import Classifier
from tracker.cli import app
from tracker.registry import MAX_DEPTH, RegistryError, load, parse

Data = dict[str, Any]


def india() -> Data:
    data: Data = yaml.safe_load(load()[1])
    return data


def refused(data: Data) -> dict[str, str]:
    """Every (path -> reason) of a refused registry."""
    return dict(errors_of(data))


def test_shipped_registries_keep_their_versions() -> None:
    # The version is the content hash that stored versions are verified against: the checks
    # below only refuse, they never rewrite what a valid file parses to.
    files = resources.files("tracker.registry_data")
    versions = {n: parse(files.joinpath(n).read_text(), n).version
                for n in ("india.yaml", "luxembourg.yaml")}  # fmt: skip
    assert versions == {"india.yaml": "r-57dbecf5ee9e9e90",
                        "luxembourg.yaml": "r-d78725e10ae03ec9"}  # fmt: skip


def test_provider_names_differing_only_in_case_are_refused() -> None:
    # The classifier matches provider names regardless of case: accepted, the later entry took
    # every `anthropic` record (offshore) into a domestic provider's default facility.
    data = india()
    data["providers"].append({"id": "sarvam_chat", "operator": "sarvam",
                              "default_facility": "yotta-navi-mumbai",
                              "aliases": ["Anthropic"]})  # fmt: skip
    data["providers"].append({"id": "OpenAI", "operator": "sarvam"})
    data["facilities"][0]["operator"] = "ghost"  # listed with the other errors, in one pass
    errors = refused(data)
    n = len(load()[0].providers)
    assert errors[f"providers.{n}"] == (
        "duplicate id or alias 'Anthropic' (same as 'anthropic': compared regardless of case)"
    )
    assert errors[f"providers.{n + 1}"].startswith("duplicate id or alias 'OpenAI'")
    assert errors["facilities.0.operator"] == "unknown operator 'ghost'"


def test_one_provider_region_pair_with_two_facilities_is_refused() -> None:
    # `gcp` is an alias of google_vertex: one provider, one region code, two facilities
    # (onshore and offshore); which one a record got depended on the order of the file.
    data = india()
    data["regions"].append({"providers": ["gcp"], "code": "zz-1", "facility": "gcp-asia-south1"})
    data["regions"].append(
        {"providers": ["Google_Vertex"], "code": "ZZ-1", "facility": "gcp-us-central1"}
    )
    n = len(load()[0].regions)
    assert refused(data) == {
        f"regions.{n + 1}": "provider/code pair 'google_vertex/zz-1' maps to facility "
        "'gcp-us-central1', but 'gcp/zz-1' (the same provider) maps to 'gcp-asia-south1' at "
        f"regions.{n}: an alias shares its provider's regions"
    }


def test_a_region_under_id_and_alias_with_one_facility_is_accepted() -> None:
    # How the shipped files list hyperscaler regions (`providers: [google_vertex, gcp]`), and
    # the same written as two entries: one rule, said twice.
    data = india()
    data["regions"].append({"providers": ["gcp"], "code": "zz-1", "facility": "gcp-asia-south1"})
    data["regions"].append(
        {"providers": ["vertex_ai"], "code": "zz-1", "facility": "gcp-asia-south1"}
    )
    registry = parse(yaml.safe_dump(data), "ok.yaml")
    assert Classifier(registry).classify("gemini", "zz-1", None).facility_id == "gcp-asia-south1"


def test_ipv4_mapped_ranges_are_refused() -> None:
    # Written beside 10.160.0.0/16, the mapped form gave the same addresses a second facility.
    data = india()
    data["endpoints"].append({"cidr": "::ffff:10.160.0.0/112", "facility": "ctrls-hyderabad"})
    data["endpoints"].append({"cidr": "::ffff:0:0/96", "facility": "ctrls-hyderabad"})
    n = len(load()[0].endpoints)
    errors = refused(data)
    assert errors[f"endpoints.{n}"] == (
        "cidr: ::ffff:10.160.0.0/112 is an IPv4-mapped IPv6 range, and a mapped endpoint_host "
        "(::ffff:a.b.c.d) is matched as IPv4: write it as 10.160.0.0/16"
    )
    assert errors[f"endpoints.{n + 1}"].endswith("write it as 0.0.0.0/0")
    # Other IPv6 ranges, including ones around the mapped block, are still accepted.
    data = india()
    data["endpoints"].append({"cidr": "::/64", "facility": "ctrls-hyderabad"})
    assert parse(yaml.safe_dump(data), "v6.yaml").endpoints[-1].cidr == "::/64"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("llm.gov.in.", "empty label"),  # input hosts are matched without their trailing dot
        (".", "empty label"),
        ("*..", "empty label"),
        ("*.gov..in", "empty label"),
        (".gov.in", "empty label"),
        ("10.9.9.9", "is an IP address"),  # IP literals only ever meet cidr ranges
    ],
)
def test_host_patterns_that_can_never_match_are_refused(host: str, reason: str) -> None:
    data = india()
    data["endpoints"].append({"host": host, "facility": "nic-meghraj-delhi"})
    (path, why), *_ = refused(data).items()
    assert path == f"endpoints.{len(load()[0].endpoints)}.host"
    assert why.startswith(f"{host!r}") and reason in why


def test_a_host_written_with_and_without_its_trailing_dot_is_refused() -> None:
    data = india()
    data["endpoints"] += [{"host": "llm.gov.in", "facility": "nic-meghraj-delhi"},
                          {"host": "llm.gov.in.", "facility": "ctrls-hyderabad"}]  # fmt: skip
    n = len(load()[0].endpoints)
    assert list(refused(data)) == [f"endpoints.{n + 1}.host"]
    # A wildcard over a numeric label still matches real names (a.10.9.9.9), so it stays.
    data = india()
    data["endpoints"].append({"host": "*.10.9.9.9", "facility": "nic-meghraj-delhi"})
    c = Classifier(parse(yaml.safe_dump(data), "ok.yaml"))
    assert c.classify("x", None, "a.10.9.9.9").rule == "host:*.10.9.9.9"


DEEP = "[" * 20000 + "]" * 20000  # 40 KB


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        "country: " + "{a: " * 5000 + "1" + "}" * 5000,
        "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH,
    ],
)
def test_deeply_nested_yaml_is_a_refusal_not_a_recursion_error(text: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse(text, "deep.yaml")
    assert info.value.errors == [
        ("line 1", f"nested deeper than {MAX_DEPTH} levels: not a registry (one is ~5 deep)")
    ]


def test_registry_check_refuses_a_deep_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP)
    result = CliRunner().invoke(app, ["registry", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert "nested deeper than" in result.output
    assert not isinstance(result.exception, RecursionError)


def test_a_version_stored_before_these_checks_is_still_read_back() -> None:
    # A version recorded by an earlier release was valid then: refusing it when it is read
    # back (registry_store.registry_of) would stop every process at start and every look at
    # that history. The new checks refuse new files only; the version hash is the same.
    data = india()
    data["providers"].append({"id": "OpenAI", "operator": "sarvam"})
    data["regions"].append({"providers": ["gcp"], "code": "zz-1", "facility": "gcp-asia-south1"})
    data["regions"].append({"providers": ["vertex_ai"], "code": "zz-1",
                            "facility": "gcp-us-central1"})  # fmt: skip
    data["endpoints"].append({"cidr": "::ffff:10.99.0.0/112", "facility": "ctrls-hyderabad"})
    data["endpoints"].append({"host": "llm.gov.in.", "facility": "nic-meghraj-delhi"})
    data["endpoints"].append({"host": "10.9.9.9", "facility": "nic-meghraj-delhi"})
    text = yaml.safe_dump(data, sort_keys=False)
    assert len(refused(data)) == 5  # as a new file: every one refused
    stored = parse(text, "registry_versions:r-x", stored=True)
    assert stored.version == parse(text, "again", stored=True).version
    assert Classifier(stored).classify("openai", None, "api.openai.com").tier.value == "offshore"
    # What no release ever accepted is still refused when read back.
    data["facilities"][0]["operator"] = "ghost"
    with pytest.raises(RegistryError):
        parse(yaml.safe_dump(data, sort_keys=False), "registry_versions:r-y", stored=True)


@pytest.mark.parametrize("mutate", [
    lambda d: d["regions"].append({"providers": ["gcp"], "code": "zz", "facility": "gcp-asia-south1"}),
    lambda d: d["endpoints"].append({"host": "llm.gov.in", "facility": "nic-meghraj-delhi"}),
    lambda d: d["endpoints"].append({"cidr": "2001:db8::/32", "facility": "nic-meghraj-delhi"}),
])  # fmt: skip
def test_valid_additions_are_still_accepted(mutate: Callable[[Data], None]) -> None:
    data = india()
    mutate(data)
    assert parse(yaml.safe_dump(data), "ok.yaml").version != load()[0].version


@pytest.mark.parametrize("id_first", [True, False])
def test_a_stored_pair_under_id_and_alias_reads_the_id_entry_in_any_order(id_first: bool) -> None:
    # A version stored before the pair check may map one code to two facilities under the id
    # and an alias; found in the second review: the last entry in the file won, for every name.
    data = india()
    by_id = {"providers": ["azure_openai"], "code": "zz-9", "facility": "azure-centralindia"}
    by_alias = {"providers": ["azure"], "code": "zz-9", "facility": "azure-southindia"}
    data["regions"] += [by_id, by_alias] if id_first else [by_alias, by_id]
    assert refused(data)  # as a new file: refused
    stored = parse(yaml.safe_dump(data, sort_keys=False), "registry_versions:r-z", stored=True)
    classifier = Classifier(stored)
    for name in ("azure_openai", "azure"):
        assert classifier.classify(name, "zz-9", None).facility_id == "azure-centralindia", name


def errors_of(data: Data) -> list[tuple[str, str]]:
    """Every (path, reason) of a refused registry, in order (one path may carry several)."""
    with pytest.raises(RegistryError) as info:
        parse(yaml.safe_dump(data, sort_keys=False), "variant.yaml")
    return info.value.errors


@pytest.mark.parametrize("scoped_first", [True, False])
def test_a_range_with_a_zone_id_is_refused(scoped_first: bool) -> None:
    # Found in review: `2001:db8:42::%eth0/48` passed the duplicate check beside
    # `2001:db8:42::/48` (compared as text, zone included) while the classifier keys ranges by
    # number only: the later entry took every address, so the tier depended on the file order.
    data = india()
    plain = {"cidr": "2001:db8:42::/48", "facility": "nic-meghraj-delhi"}
    scoped = {"cidr": "2001:db8:42::%eth0/48", "facility": "ctrls-hyderabad"}
    data["endpoints"] += [scoped, plain] if scoped_first else [plain, scoped]
    data["endpoints"].append({"cidr": "10.9.0.0%eth0/16", "facility": "ctrls-hyderabad"})
    data["facilities"][0]["operator"] = "ghost"  # listed with the other errors, in one pass
    n = len(load()[0].endpoints)
    at, second = (n, n + 1) if scoped_first else (n + 1, n + 1)
    errors = errors_of(data)
    zone = (f"endpoints.{at}", "cidr: 2001:db8:42::%eth0/48 has a zone id ('%'): endpoint "
            "ranges are matched by address only, so write it without one")  # fmt: skip
    assert zone in errors
    dup = (
        "duplicate cidr range '2001:db8:42::/48' (the same addresses as '2001:db8:42::%eth0/48')"
        if scoped_first
        else "duplicate cidr range '2001:db8:42::%eth0/48' (the same addresses as "
        "'2001:db8:42::/48')"
    )
    assert (f"endpoints.{second}", dup) in errors
    assert any(p == f"endpoints.{n + 2}" and r.startswith("cidr: 10.9.0.0%eth0/16 has a zone id")
               for p, r in errors)  # fmt: skip
    assert ("facilities.0.operator", "unknown operator 'ghost'") in errors


def test_ranges_are_compared_by_address_and_prefix() -> None:
    # 10.160.0.0/16 is in the shipped file: the netmask spelling is the same range.
    data = india()
    data["endpoints"].append({"cidr": "10.160.0.0/255.255.0.0", "facility": "ctrls-hyderabad"})
    n = len(load()[0].endpoints)
    assert errors_of(data) == [(f"endpoints.{n}", "duplicate cidr range '10.160.0.0/16'")]
    # One number, two IP versions: not the same range.
    data = india()
    data["endpoints"] += [{"cidr": "0.0.0.0/0", "facility": "ctrls-hyderabad"},
                          {"cidr": "::/0", "facility": "nic-meghraj-delhi"}]  # fmt: skip
    assert parse(yaml.safe_dump(data), "ok.yaml").endpoints[-1].cidr == "::/0"


def test_a_stored_range_with_a_zone_id_is_still_read_back() -> None:
    data = india()
    data["endpoints"] += [
        {"cidr": "2001:db8:42::/48", "facility": "nic-meghraj-delhi"},
        {"cidr": "2001:db8:42::%eth0/48", "facility": "nic-meghraj-delhi"},
    ]
    text = yaml.safe_dump(data, sort_keys=False)
    assert parse(text, "registry_versions:r-x", stored=True).endpoints[-1].cidr == (
        "2001:db8:42::%eth0/48"
    )


def test_a_region_under_an_unknown_provider_is_refused() -> None:
    # Found in review: a typo in a region's providers (`aws_bedrok`) was accepted and the region
    # never matched a record (`aws` in eu-central-1 was unknown instead of offshore).
    data = india()
    data["regions"].append({"providers": ["AWS", "aws_bedrok"], "code": "zz-1",
                            "facility": "aws-ap-south-1"})  # fmt: skip
    data["regions"].append({"providers": ["nobody"], "code": "zz-2", "facility": "ghost"})
    n = len(load()[0].regions)
    errors = errors_of(data)
    assert (f"regions.{n}.providers.1", "unknown provider 'aws_bedrok'") in errors
    assert (f"regions.{n + 1}.providers.0", "unknown provider 'nobody'") in errors
    assert (f"regions.{n + 1}.facility", "unknown facility 'ghost'") in errors
    assert not any(p == f"regions.{n}.providers.0" for p, _ in errors)  # AWS: case is folded
    # As the classifier compares them: any alias, in any case, is the provider's.
    data = india()
    data["regions"].append({"providers": ["Bedrock"], "code": "zz-1", "facility": "aws-ap-south-1"})
    c = Classifier(parse(yaml.safe_dump(data), "ok.yaml"))
    assert c.classify("aws", "zz-1", None).rule == "region:aws_bedrock/zz-1"


def test_a_stored_region_under_an_unknown_provider_is_still_read_back() -> None:
    data = india()
    data["regions"].append({"providers": ["aws_bedrok"], "code": "zz-1",
                            "facility": "aws-ap-south-1"})  # fmt: skip
    stored = parse(yaml.safe_dump(data, sort_keys=False), "registry_versions:r-x", stored=True)
    assert Classifier(stored).classify("aws_bedrok", "zz-1", None).facility_id == "aws-ap-south-1"
