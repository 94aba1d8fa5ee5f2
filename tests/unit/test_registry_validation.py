"""A registry file is refused whole, with every error listed in one pass (file, path, reason)."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracker.registry import RegistryError, load, parse
from tracker.registry_proposals import diff


def broken() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(load()[1])
    data["country"] = "India"  # a field error ...
    data["facilities"][0]["operator"] = "ghost"  # ... and reference errors, in the same pass
    data["regions"][1]["facility"] = "nowhere"
    data["endpoints"].append({"cidr": "10.0.0.1/8", "facility": "nic-meghraj-delhi"})
    data["endpoints"].append({"host": "x.example", "cidr": "10.9.0.0/16", "facility": "e2e-mumbai"})
    data["endpoints"].append({"host": "api.openai.com", "facility": "e2e-mumbai"})
    data["regions"].append(
        {"providers": ["azure"], "code": "CentralIndia", "facility": "e2e-mumbai"}
    )
    data["facilities"][1]["grade"] = {"scheme": "eu-csf"}
    return data


def test_every_error_is_listed_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken()))
    with pytest.raises(RegistryError) as info:
        load(path)
    errors = dict(info.value.errors)
    n = len(load()[0].endpoints)
    assert "country" in errors
    assert errors["facilities.0.operator"] == "unknown operator 'ghost'"
    assert errors["regions.1.facility"] == "unknown facility 'nowhere'"
    assert "host bits set" in errors[f"endpoints.{n}"]
    assert "exactly one of host" in errors[f"endpoints.{n + 1}"]
    assert errors[f"endpoints.{n + 2}"] == "duplicate host 'api.openai.com'"
    reasons = [reason for _, reason in info.value.errors]
    assert "duplicate provider/code pair 'azure/centralindia'" in reasons
    assert "facilities.1.grade.level" in errors
    # The message names the file on every line, for a terminal or a CI log.
    text = str(info.value)
    assert text.count(str(path)) == len(info.value.errors) + 1


def test_known_registry_keeps_its_version_without_new_fields() -> None:
    """Fields added later (grade, cidr) are left out of the canonical form while unused, so a
    registry that does not use them keeps its version."""
    registry = load()[0]
    dumped = registry.model_dump(mode="json")
    assert all("cidr" not in e for e in dumped["endpoints"] if "host" in e)
    assert all("grade" not in o for o in dumped["operators"])
    assert parse(yaml.safe_dump(dumped), "again.yaml").version == registry.version


def test_diff_names_what_changes() -> None:
    old = load()[0]
    data = yaml.safe_load(load()[1])
    data["agencies"].pop(0)
    data["endpoints"].append({"cidr": "192.0.2.0/24", "facility": "e2e-mumbai"})
    data["facilities"][0]["name"] = "Renamed"
    data["country_name"] = "Bharat"
    new = parse(yaml.safe_dump(data), "new.yaml")
    d = diff(old, new)
    assert d["agencies"] == {"added": [], "removed": [old.agencies[0].id], "changed": []}
    assert d["endpoints"]["added"] == ["192.0.2.0/24"]
    assert d["facilities"]["changed"] == [old.facilities[0].id]
    assert d["fields"] == ["country_name"]
    assert "regions" not in d


def _place(text: str, needle: str) -> str:
    """Where `needle` first starts in `text`, as the loader reports it."""
    before = text[: text.index(needle)]
    return f"line {before.count(chr(10)) + 1}, column {len(before) - before.rfind(chr(10))}"


def test_a_key_written_twice_is_refused_naming_it_and_its_line() -> None:
    # Found in review: PyYAML keeps the last of two keys, so a facility written `country: IN,
    # country: SG` was accepted and classified as SG while the published text shows IN first.
    text = load()[1]
    old = "  - {id: yotta-navi-mumbai, operator: yotta, country: IN,"
    twice = text.replace(old, old + " country: SG,")
    assert twice != text
    with pytest.raises(RegistryError) as info:
        parse(twice, "twice.yaml")
    first = _place(twice, "country: IN, country: SG")
    again = _place(twice, "country: SG")
    assert info.value.errors == [
        (again, f"duplicate key 'country' (first at {first}): YAML would silently keep only "
                "the last value, while the text shows both"),
    ]  # fmt: skip
    top = text.replace("\ncountry: IN\n", "\ncountry: IN\ncountry: SG\n", 1)
    assert top != text
    with pytest.raises(RegistryError, match="duplicate key 'country' \\(first at line"):
        parse(top, "top.yaml")
    # A version stored before this check reads back as it always did (the last key wins), so a
    # store holding one still starts and shows its history.
    stored = parse(twice, "stored", stored=True)
    yotta = next(f for f in stored.facilities if f.id == "yotta-navi-mumbai")
    assert yotta.country == "SG"
    # A key given beside a merge (`<<`) overrides the merged one: that is no repetition.
    merged = "a: &base {k: 1, j: 2}\nb: {<<: *base, k: 3}\n"
    with pytest.raises(RegistryError) as info:
        parse(merged, "merged.yaml")  # refused as no registry, but not for a repeated key
    assert "duplicate key" not in str(info.value) and ("country", "Field required") in (
        info.value.errors
    )


@pytest.mark.parametrize(
    ("old", "new", "written", "why"),
    [
        ("{by: 2026-12-31,", "{by: 2026-02-30,", "2026-02-30", "day is out of range for month"),
        ("{by: 2026-12-31,", "{by: 0000-01-01,", "0000-01-01", "year 0 is out of range"),
        ("{by: 2026-12-31,", "{by: !!timestamp soon,", "soon", "not YYYY-MM-DD"),
    ],
)
def test_an_impossible_date_is_refused_with_its_place(
    old: str, new: str, written: str, why: str
) -> None:
    # Found in review: PyYAML raises a plain ValueError building such a date, no YAMLError, and
    # it escaped parse: an HTTP 500, a CLI traceback, a process that would not start.
    text = load()[1]
    bad = text.replace(old, new)
    assert bad != text
    with pytest.raises(RegistryError) as info:
        parse(bad, "dates.yaml")
    at = _place(bad, new.removeprefix("{by: "))
    assert info.value.errors == [(at, f"not a valid date: {written!r} ({why})")]
    with pytest.raises(RegistryError, match="not a valid int: 'x'"):
        parse("a: !!int x\n", "int.yaml")


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("1e-400", "USD: the rate '1E-400' is below 0.000000001: costs are stored with 9 decimal "
                   "places, so spending converted at it would be stored as 0"),
        ("0.0000000001", "USD: the rate '1E-10' is below 0.000000001: costs are stored with 9 "
                         "decimal places, so spending converted at it would be stored as 0"),
        ('"84.1234567890123456"', "USD: the rate '84.1234567890123456' has 18 significant "
                                  "digits, over 15: no published rate carries as many, and a "
                                  "number written in YAML holds 15 exactly"),
    ],
)  # fmt: skip
def test_a_rate_below_the_storage_scale_or_with_too_many_digits_is_refused(
    written: str, reason: str
) -> None:
    # Found in review: `1e-400` was accepted (> 0) and every cost converted at it was stored as
    # 0 (the column keeps 9 decimals) while marked converted; 5000 digits were accepted too.
    text = load()[1]
    bad = text.replace("  USD: 84\n", f"  USD: {written}\n")
    assert bad != text
    with pytest.raises(RegistryError) as info:
        parse(bad, "rates.yaml")
    assert info.value.errors == [("fx_to_reporting", reason)]
    assert parse(bad, "stored", stored=True).version != parse(text, "india.yaml").version
    smallest = parse(text.replace("  USD: 84\n", "  USD: 0.000000001\n"), "smallest.yaml")
    assert smallest.fx_to_reporting["USD"] == Decimal("1e-9")


def test_a_number_a_float_cannot_hold_as_written_is_refused() -> None:
    # A YAML number with a decimal point is read as a float: 5000 digits were read as
    # 84.11111111111111 and `84.10000000000000000001` as 84.1, which the text does not say.
    text = load()[1]
    for written, reads in (("84." + "1" * 5000, "84.11111111111111"),
                           ("84.10000000000000000001", "84.1")):  # fmt: skip
        bad = text.replace("  USD: 84\n", f"  USD: {written}\n")
        with pytest.raises(RegistryError) as info:
            parse(bad, "rates.yaml")
        [(where, reason)] = info.value.errors
        assert where == _place(bad, written) and f"it reads as {reads} " in reason, reason
        assert parse(bad, "stored", stored=True).fx_to_reporting["USD"] == Decimal(reads)


def test_the_shipped_registries_still_load() -> None:
    shipped = [f for f in resources.files("tracker.registry_data").iterdir()
               if f.name.endswith(".yaml")]  # fmt: skip
    assert len(shipped) >= 2
    for f in shipped:
        assert parse(f.read_text(), f.name).fx_to_reporting, f.name
