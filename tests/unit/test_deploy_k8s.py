"""deploy/k8s: plain manifests, kustomize-built, cross-checked against the settings classes.

Kafka and ClickHouse are external (operators); the Secret is a placeholder only. No cluster is
needed: `kubectl kustomize` runs as an extra check only when kubectl is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import (
    COMMAND_SETTINGS,
    DEPLOY,
    SECRET_WORDS,
    TRACKER_IMAGE,
    all_settings_env,
    env_names,
    load_all,
    pinned,
)
from tracker.settings import dsn_problem

K8S = DEPLOY / "k8s"


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in load_all(p)]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, doc in k8s_docs():
        spec = doc.get("spec", {})
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            out.append((doc["metadata"]["name"], spec["template"]["spec"]))
    return out


def test_k8s_manifests_are_named_objects() -> None:
    docs = k8s_docs()
    for path, doc in docs:
        for key in ("apiVersion", "kind"):
            assert doc.get(key), f"{path.name}: no {key}"
        assert doc.get("metadata", {}).get("name"), f"{path.name}: no metadata.name"
        if doc["kind"] not in {"Namespace", "Kustomization"}:
            assert doc["metadata"].get("namespace") == "tracker", f"{path.name} {doc['kind']}"
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert {
        ("Namespace", "tracker"), ("ConfigMap", "tracker-config"), ("Secret", "tracker-clickhouse"),
        ("Job", "tracker-migrate"), ("StatefulSet", "tracker-collector"),
        ("Deployment", "tracker-pipeline"), ("Deployment", "tracker-api"),
        ("Service", "tracker-api"), ("Service", "tracker-collector"),
        ("PodDisruptionBudget", "tracker-api"),
    } <= kinds  # fmt: skip
    assert not {k for k, _ in kinds} & {"Kafka", "ClickHouseInstallation"}, "engines are external"


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    [kustomization] = load_all(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}


def test_k8s_secret_is_a_placeholder_only() -> None:
    secrets = [d for _, d in k8s_docs() if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        values = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert set(values) <= all_settings_env()
        # No secret committed; and never empty: an empty variable counts as unset, and each
        # process then ran on an embedded store of its own (found in review).
        for name, value in values.items():
            assert value and "REPLACE-WITH-THE-PASSWORD@" in value, (name, value)
            assert dsn_problem(value) is None, (name, value)


def test_k8s_tracker_variables_are_settings_fields() -> None:
    known = all_settings_env()
    [config] = [d for _, d in k8s_docs() if d["kind"] == "ConfigMap"]
    assert set(config["data"]) <= known, sorted(set(config["data"]) - known)
    assert all(isinstance(v, str) for v in config["data"].values()), "ConfigMap values are strings"
    for name, spec in pod_specs():
        for container in spec["containers"]:
            command = container["args"][0]
            own = env_names(COMMAND_SETTINGS[command])
            for var in container.get("env", []):
                if var["name"].startswith("TRACKER_"):
                    assert var["name"] in own, f"{name}: {var['name']} is not read by `{command}`"
                assert "value" not in var or not SECRET_WORDS.search(var["name"]), var["name"]
            refs = {
                next(iter(r.values()))["name"] for r in container["envFrom"]
            }  # configMapRef / secretRef names
            assert refs == {"tracker-config", "tracker-clickhouse"}, name


def test_k8s_pods_run_pinned_non_root_without_service_links() -> None:
    specs = pod_specs()
    assert {n for n, _ in specs} == {
        "tracker-migrate", "tracker-collector", "tracker-pipeline", "tracker-api"
    }  # fmt: skip
    for name, spec in specs:
        # Service links would inject e.g. TRACKER_PORT=tcp://... for a Service named `tracker`.
        assert spec["enableServiceLinks"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            assert pinned(container["image"]), f"{name}: {container['image']}"
            assert container["image"].startswith(TRACKER_IMAGE + ":")
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8s_collector_keeps_its_spool_on_a_claim() -> None:
    [collector] = [d for _, d in k8s_docs() if d["kind"] == "StatefulSet"]
    [claim] = collector["spec"]["volumeClaimTemplates"]
    [container] = collector["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [config] = [d for _, d in k8s_docs() if d["kind"] == "ConfigMap"]
    assert mounts[claim["metadata"]["name"]] == config["data"]["TRACKER_DATA_DIR"]
    assert collector["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_k8s_api_disruption_budget_selects_the_api_pods() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    pdb = docs[("PodDisruptionBudget", "tracker-api")]["spec"]
    api = docs[("Deployment", "tracker-api")]["spec"]
    labels = api["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb.get("minAvailable", 0) < api["replicas"], "a drain must be able to proceed"


def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(done.stdout) if d]
    assert "Secret" not in kinds and "StatefulSet" in kinds


def test_k8s_workloads_start_only_after_the_migrate_job() -> None:
    # Found in review: `kubectl apply -k` started the Job and the workloads at once, and every
    # process also migrates when it opens ClickHouse: two runs of a data step (0005's backfill)
    # at once double-counted the daily rollup. The workloads now wait for the Job's schema.
    for name, spec in pod_specs():
        if name == "tracker-migrate":
            assert "initContainers" not in spec
            # It also measures what migration 0009's data step left, as compose's job does.
            assert spec["containers"][0]["args"] == ["migrate", "--measure"]
            continue
        [wait] = spec["initContainers"]
        assert wait["image"] == spec["containers"][0]["image"], name
        assert wait["command"][:2] == ["sh", "-c"]
        assert "until tracker migrate --check;" in wait["command"][2], name
        assert wait["envFrom"] == spec["containers"][0]["envFrom"], name
        assert wait["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in wait["volumeMounts"]}
        assert {"/tmp", "/var/lib/tracker"} <= mounts, name
