"""deploy/ (every YAML and XML file, the compose stack, ClickHouse users) and the Dockerfile
agree with the code; deploy/k8s has its own checks in test_deploy_k8s.py.

No network and no container engine: files are parsed and cross-checked against the pydantic
settings classes (the only source of TRACKER_* names). `docker compose config` runs as an
extra check only when `docker compose` or `docker-compose` is installed.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from pydantic_settings import BaseSettings

from tracker import settings as settings_mod

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TRACKER_IMAGE = "inference-sovereignty-tracker"

# Which settings class each process command builds (tracker/cli/__init__.py).
COMMAND_SETTINGS: dict[str, type[BaseSettings]] = {
    "collector": settings_mod.CollectorSettings,
    "pipeline": settings_mod.PipelineSettings,
    "api": settings_mod.ApiSettings,
    "migrate": settings_mod.CommonSettings,
}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DSN", re.IGNORECASE)
REQUIRED_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in cls.model_fields}


def all_settings_env() -> set[str]:
    classes = [
        c
        for c in vars(settings_mod).values()
        if isinstance(c, type) and issubclass(c, BaseSettings) and c is not BaseSettings
    ]
    assert len(classes) >= 5, "settings classes not found"
    return set().union(*(env_names(c) for c in classes))


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def compose() -> dict[str, Any]:
    [doc] = load_all(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def full_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment including what it inherits through `extends`."""
    if "extends" not in service:
        return env_of(service)
    extends = service["extends"]
    [base] = load_all(COMPOSE.parent / extends["file"])
    return {**env_of(base["services"][extends["service"]]), **env_of(service)}


def command_of(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    return words[0] if words else ""


def is_tracker(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(TRACKER_IMAGE + ":")


def resolved_image(service: dict[str, Any]) -> str:
    if "image" in service:
        return str(service["image"])
    extends = service["extends"]
    [base] = load_all(COMPOSE.parent / extends["file"])
    return str(base["services"][extends["service"]]["image"])


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return (
        bool(name)
        and "/" not in tag
        and tag not in {"", "latest"}
        and bool(re.match(r"^v?\d+(\.\d+)*([.-][A-Za-z0-9.]+)?$", tag))
    )


def dockerfile_instructions() -> list[tuple[str, str]]:
    # As Docker reads it: comment lines go first (also inside continued instructions), then
    # backslash continuations join.
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(ln for ln in lines if not ln.strip().startswith("#"))
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# --- every file under deploy/ parses ---------------------------------------------------------


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert COMPOSE in files and len(files) >= 10
    for path in files:
        docs = load_all(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), f"{path}: every document is a mapping"


def test_every_xml_file_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.xml"))
    assert files
    for path in files:
        ET.parse(path)  # raises on malformed XML


# --- docker compose --------------------------------------------------------------------------


def test_compose_runs_every_process_and_its_engines() -> None:
    found = services()
    assert set(found) == {
        "kafka",
        "clickhouse",
        "migrate",
        "collector",
        "pipeline",
        "api",
        "grafana",
    }
    commands = {name: command_of(s) for name, s in found.items() if is_tracker(s)}
    assert commands == {n: n for n in ("migrate", "collector", "pipeline", "api")}
    assert resolved_image(found["kafka"]).startswith("apache/kafka:")
    assert resolved_image(found["clickhouse"]).startswith("clickhouse/clickhouse-server:")
    assert found["pipeline"]["deploy"]["replicas"] >= 2
    assert found["migrate"]["restart"] == "no"
    # The one-shot job also measures what migration 0009's data step left (tracker migrate).
    assert found["migrate"]["command"] == ["migrate", "--measure"]


def test_compose_images_are_pinned() -> None:
    for name, service in services().items():
        image = resolved_image(service)
        assert pinned(image), f"{name}: image {image!r} must name an explicit version"


def _plugin_settings(node: Any) -> list[str]:
    """Values of Grafana's plugin-install variables anywhere in a parsed YAML document, in the
    compose form (KEY: value) and the Kubernetes one (- name: KEY / value: ...)."""
    names = {"GF_INSTALL_PLUGINS", "GF_PLUGINS_PREINSTALL", "GF_PLUGINS_PREINSTALL_SYNC"}
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("name") in names and "value" in node:
            found.append(str(node["value"]))
        for key, value in node.items():
            if key in names:
                found.append(str(value))
            found += _plugin_settings(value)
    elif isinstance(node, list):
        for item in node:
            found += _plugin_settings(item)
    return found


def test_grafana_plugins_are_pinned() -> None:
    """Found in review: `GF_INSTALL_PLUGINS: grafana-clickhouse-datasource` installed whatever
    release was newest when a container was created. Grafana takes "id version" per plugin;
    every file under deploy/ (compose and Kubernetes) that installs one must pin it."""
    clickhouse_plugin = []
    for path in sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]):
        for value in [v for doc in load_all(path) for v in _plugin_settings(doc)]:
            for entry in value.split(","):
                words = entry.split()
                exact = len(words) == 2 and re.fullmatch(r"\d+\.\d+\.\d+", words[1])
                assert exact, f"{path.name}: plugin {entry.strip()!r} must name an exact version"
                if words[0] == "grafana-clickhouse-datasource":
                    clickhouse_plugin.append(words[1])
    assert clickhouse_plugin, "the grafana service installs the ClickHouse plugin"
    # docs/dashboards.md and the dashboards are written for v4 of the plugin
    assert all(v.split(".")[0] == "4" for v in clickhouse_plugin), clickhouse_plugin
    assert full_env(services()["grafana"])["GF_INSTALL_PLUGINS"].split()[0] == (
        "grafana-clickhouse-datasource"
    )


def test_tracker_images_are_built_from_the_dockerfile() -> None:
    for name, service in services().items():
        if is_tracker(service):
            build = service["build"]
            assert (
                COMPOSE.parent / build["context"] / build["dockerfile"]
            ).resolve() == DOCKERFILE, name


def test_compose_tracker_variables_are_settings_fields() -> None:
    known = all_settings_env()
    shared = set(env_of(compose()["x-tracker"]))
    for name, service in services().items():
        env = env_of(service)
        used = {k for k in env if k.startswith("TRACKER_")}
        if is_tracker(service):
            assert used <= known, f"{name}: not a setting: {sorted(used - known)}"
            own = env_names(COMMAND_SETTINGS[command_of(service)])
            # What a service adds beyond the shared block must be read by that very process.
            assert used - shared <= own, f"{name}: not read by it: {sorted(used - shared - own)}"
        else:
            # Outside the tracker image, TRACKER_* names are Grafana's provisioning variables.
            provisioning = "".join(
                p.read_text(encoding="utf-8") for p in (DEPLOY / "grafana").rglob("*.yaml")
            )
            for key in used:
                assert "${" + key + "}" in provisioning, f"{name}: {key} is read by nothing"


def test_compose_interpolations_name_only_settings_or_documented_secrets() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    tracker_names = {n for n in names if n.startswith("TRACKER_")}
    grafana_vars = {"TRACKER_GRAFANA_CLICKHOUSE_PASSWORD"}
    assert tracker_names - grafana_vars <= all_settings_env()
    assert {"CLICKHOUSE_PASSWORD", "TRACKER_GRAFANA_CLICKHOUSE_PASSWORD"} <= names


def test_compose_has_no_plaintext_secret() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    # No secret-looking variable may fall back to a default value.
    for name, default in re.findall(r"\$\{([A-Za-z0-9_]+):?-([^}]*)\}", text):
        assert not SECRET_WORDS.search(name), f"${{{name}}} has a default ({default!r})"
    for sname, service in services().items():
        for key, value in full_env(service).items():
            if SECRET_WORDS.search(key) and "DSN" not in key:
                assert REQUIRED_VAR.match(value), f"{sname}.{key} must be ${{VAR:?...}}"
            for password in re.findall(r"://[^:/@\s]+:(.+)@", value):
                assert REQUIRED_VAR.match(password), f"{sname}.{key}: password in the URL"


def test_compose_healthchecks_and_start_order() -> None:
    found = services()
    for name, service in found.items():
        if name != "migrate":
            test = service["healthcheck"]["test"]
            assert test[0] in {"CMD", "CMD-SHELL"}, name
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in found, f"{name} depends on unknown {dep}"
            wanted = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert cond["condition"] == wanted, f"{name} -> {dep}"
            if wanted == "service_healthy":
                assert "healthcheck" in found[dep], f"{dep} has no healthcheck"
    for name in ("collector", "pipeline", "api"):
        deps = found[name]["depends_on"]
        assert {"clickhouse", "migrate"} <= set(deps), name
        # The API reads ClickHouse only (found in review: it waited for a healthy broker too).
        assert ("kafka" in deps) == (name != "api"), name
    assert set(found["migrate"]["depends_on"]) == {"clickhouse"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    out = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        out[target] = source
    return out


def test_compose_volumes_keep_data_and_the_spool() -> None:
    found = services()
    named = set(compose()["volumes"])
    assert _mounts(found["clickhouse"])["/var/lib/clickhouse"] in named
    kafka_dir = env_of(found["kafka"])["KAFKA_LOG_DIRS"]
    assert _mounts(found["kafka"])[kafka_dir] in named
    collector = found["collector"]
    data_dir = env_of(collector).get("TRACKER_DATA_DIR") or dockerfile_env()["TRACKER_DATA_DIR"]
    assert _mounts(collector)[data_dir] in named, "the collector's spool must be on a volume"
    # Only the collector keeps local state; a replicated service must not share one spool.
    assert "deploy" not in collector or collector["deploy"].get("replicas", 1) == 1
    for name, service in found.items():
        for target, source in _mounts(service).items():
            if source.startswith("."):
                base = COMPOSE.parent
                if "extends" in service:
                    continue  # paths of the extended file are relative to it
                assert (base / source).exists(), f"{name}: {source} -> {target} missing"


def test_clickhouse_users_take_passwords_from_the_environment() -> None:
    users = ET.parse(DEPLOY / "clickhouse/users.d/tracker.xml").getroot().find("users")
    assert users is not None
    env = env_of(services()["clickhouse"])
    dsn = env_of(services()["collector"])["TRACKER_CLICKHOUSE_DSN"]
    assert dsn.startswith("http://tracker:") and dsn.endswith("@clickhouse:8123")
    for user in users:
        password = user.find("password")
        assert password is not None, user.tag
        assert not (password.text or "").strip(), f"{user.tag}: literal password"
        assert password.get("from_env") in env, f"{user.tag}: compose does not set it"
        assert user.find("password_sha256_hex") is None
    grafana = load_all(DEPLOY / "grafana/provisioning/datasources/clickhouse.yaml")[0]
    assert users.find(env_of(services()["grafana"])["TRACKER_GRAFANA_CLICKHOUSE_USER"]) is not None
    database = env_of(services()["collector"])["TRACKER_CLICKHOUSE_DATABASE"]
    assert grafana["datasources"][0]["jsonData"]["defaultDatabase"] == database


# A table a query reads: the name after FROM or JOIN, unless a subquery "(" or a function
# call (`trim(BOTH '{}' FROM decodeURLComponent(...))`) follows the keyword.
_READ_TABLE = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)\b(?!\s*\()", re.IGNORECASE)


def _dashboard_sql() -> list[str]:
    """Every SQL text of the generated dashboards: variable queries and panel targets."""
    sql = []
    for path in sorted((ROOT / "dashboards/generated").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                sql.append(str(variable["query"]))
        for panel in dashboard["panels"]:
            sql += [str(t["rawSql"]) for t in panel.get("targets", [])]
    return sql


def _migration_tables() -> set[str]:
    text = "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tracker/migrations").glob("*.sql")
    )
    return set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", text))


def test_grafana_may_read_only_the_tables_the_dashboards_read() -> None:
    """Found in review: `GRANT SELECT ON tracker.*` let a dashboard editor (who runs any SQL)
    read the audit log (client IPs, key ids, query strings), the API keys, gateways, proposals:
    the API shows those to some roles only, and audits who asked."""
    database = env_of(services()["collector"])["TRACKER_CLICKHOUSE_DATABASE"]
    tables = _migration_tables()
    assert {"usage_hourly", "audit_log", "api_keys"} <= tables
    read: set[str] = set()
    queries = _dashboard_sql()
    assert len(queries) > 30
    for sql in queries:
        for name in _READ_TABLE.findall(sql):
            name = name.removeprefix(f"{database}.")
            assert name in tables, f"a dashboard reads {name!r}, no table of the tracker's"
            read.add(name)
    assert {"usage_hourly", "usage_raw"} <= read
    users = ET.parse(DEPLOY / "clickhouse/users.d/tracker.xml").getroot()
    grants = [q.text or "" for q in users.findall("users/grafana/grants/query")]
    granted = set()
    for grant in grants:
        m = re.fullmatch(rf"GRANT SELECT ON {database}\.(\w+)", grant.strip())
        assert m, f"grafana: {grant!r} is not SELECT on one table of {database}"
        granted.add(m.group(1))
    assert len(granted) == len(grants), "a table granted twice"
    assert granted == read, (
        f"granted but unread: {granted - read}; read but not granted: {read - granted}"
    )
    assert not {"audit_log", "api_keys", "gateways"} & granted
    assert users.findtext("users/grafana/profile") == "tracker_readonly"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(tmp_path),
        "CLICKHOUSE_PASSWORD": "0123abcd",
        "TRACKER_GRAFANA_CLICKHOUSE_PASSWORD": "4567ef",
        "GRAFANA_ADMIN_PASSWORD": "89ab",
    }
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, env={**env, "CLICKHOUSE_PASSWORD": ""}, timeout=60,
        check=False,
    )  # fmt: skip
    assert missing.returncode != 0, "an unset ClickHouse password must stop compose"


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_tracker() -> None:
    instructions = dockerfile_instructions()
    [entrypoint] = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    # Exec form under tini: PID 1 gets only the signals it handles, and the tracker's own
    # handlers are in only once it is up (a stop during a slow start waited for SIGKILL).
    assert yaml.safe_load(entrypoint) == ["/usr/bin/tini", "--", "tracker"]
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert "apt-get install -y --no-install-recommends tini" in runs
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "tracker" in scripts


def test_dockerfile_builds_the_package_as_non_root() -> None:
    instructions = dockerfile_instructions()
    bases = [rest.split()[0] for kw, rest in instructions if kw == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases)
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert re.search(r"pip install (--constraint|-c) constraints\.txt \.", runs)
    [user] = [rest for kw, rest in instructions if kw == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    tracker_env = {k for k in dockerfile_env() if k.startswith("TRACKER_")}
    assert tracker_env <= all_settings_env()
    assert dockerfile_env()["TRACKER_HOST"] == "0.0.0.0", "reachable from outside the container"


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them() -> None:
    copied: set[str] = set()
    for keyword, rest in dockerfile_instructions():
        words = rest.split()
        if keyword == "COPY" and not words[0].startswith("--"):
            copied.update(words[:-1])  # the last word is the destination
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", "constraints.txt", project["project"]["readme"]}
    assert needed <= copied, sorted(needed - copied)
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not ignored & needed, "the build context must keep what the image is built from"
    assert {".git", ".venv", "var", "tests", ".env"} <= ignored


_FIRST_PARTY = {"tracker", "collector", "api", "pipeline", "dashboards", "bench", "tests"}


def _imported_modules(path: Path) -> set[str]:
    """Top-level modules a file imports at run time (lazy imports in functions included; those
    only under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _runtime_closure() -> set[str]:
    """Distributions the image installs: [project].dependencies and what they require, without
    the dev extra (the Dockerfile installs `.` alone)."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    stack = [Requirement(r) for r in declared]
    seen: dict[str, set[str]] = {}
    while stack:
        req = stack.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": e}) for e in ["", *req.extras]
        ):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen and set(req.extras) <= seen[name]:
            continue
        extras = seen.setdefault(name, set())
        extras |= set(req.extras)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({**env, "extra": e}) for e in ["", *extras]
            ):
                stack.append(sub)
    return set(seen)


def test_what_the_processes_import_is_installed_in_the_image() -> None:
    # Found in review: httpx was a dev dependency only, so `tracker import` (and the LiteLLM
    # pull) failed with ModuleNotFoundError in the image, whose `tracker --help` still passed.
    closure = _runtime_closure()
    owners = metadata.packages_distributions()
    missing: dict[str, list[str]] = {}
    for package in ("tracker", "collector", "api", "pipeline", "dashboards"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imported_modules(path) - _FIRST_PARTY - sys.stdlib_module_names:
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
                if not dists & closure:
                    missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert missing == {}, missing


def test_clickhouse_starts_without_the_images_localhost_only_init_server() -> None:
    """Found in review (2026-11-26): with CLICKHOUSE_DB set on an empty volume the image's
    entrypoint first runs a server listening on 127.0.0.1 only, the localhost healthcheck
    could pass against it, and `migrate` (reaching clickhouse:8123, no retry) failed the first
    `up`. The tracker's migrate creates its database itself."""
    clickhouse = services()["clickhouse"]
    assert not {"CLICKHOUSE_DB"} & env_of(clickhouse).keys()
    assert not any("docker-entrypoint-initdb.d" in str(v) for v in clickhouse.get("volumes", []))
    source = (ROOT / "tracker/clickhouse.py").read_text()
    assert "CREATE DATABASE IF NOT EXISTS" in source


def test_the_apis_stop_timeout_outlasts_its_shutdown_grace() -> None:
    """Found in review (2026-11-26): Docker's default 10 s stop timeout killed the API before
    its own 20 s grace for requests in flight (long exports) had run."""
    grace = settings_mod.HttpSettings.model_fields["shutdown_grace_seconds"].default
    for name in ("api", "collector"):
        period = services()[name].get("stop_grace_period", "10s")
        assert period.endswith("s") and int(period[:-1]) > grace, name


def test_clickhouse_logs_to_the_console_only() -> None:
    """Found in review (2026-11-26): `<console>1</console>` alone adds console output to the
    default config's log files, which grow in a directory on no volume."""
    logger = ET.parse(DEPLOY / "clickhouse/config.d/tracker.xml").getroot().find("logger")
    assert logger is not None and (logger.findtext("console") or "").strip() == "1"
    for name in ("log", "errorlog"):
        element = logger.find(name)
        assert element is not None and element.get("remove") in ("1", "true", "remove"), name
