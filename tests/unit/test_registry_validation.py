"""A registry file is refused whole, with every error listed in one pass (file, path, reason)."""

from __future__ import annotations

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
