"""Unusable command-line arguments exit 2 with a message naming the option, never a traceback,
and never a password (found in review; each test fails without its fix). No Kafka, Grafana or
tracker server is reached: every case is refused before."""

from __future__ import annotations

import getpass
from importlib import resources
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner, Result

from tracker.cli import app

# Each a URL whose password holds '/', '#' or '?': urlsplit and httpx end the host there and
# read the password's start as a port, which their error quoted. The secret parts are listed.
LEAKY_URLS = {
    "http://admin:Xy9/base64pw@grafana:3000": ("Xy9", "base64pw"),
    "http://admin:S3cret#tail@grafana:3000": ("S3cret", "tail"),
    "http://u:S3cret?q@127.0.0.1:8000": ("S3cret",),
    # Parses, but as host "admin", port 123: the host would have been the user name.
    "http://admin:123/pw@grafana:3000": ("123", "pw"),
    "http://admin:pass": ("pass",),  # the host forgotten: the password read as its port
}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(output: str) -> str:
    """The output on one line, without the box typer draws around a usage error (it wraps)."""
    return " ".join(output.replace("│", " ").split())


def refused(result: Result, *needles: str) -> None:
    """Exit 2 with a message (no traceback) holding every needle."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for needle in needles:
        assert needle in flat(result.output), (needle, result.output)


# --- 1. A URL that does not parse is refused without quoting any of it --------------------


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_dashboards_push_names_a_bad_url_without_its_password(url: str) -> None:
    result = run("dashboards", "push", "--url", url, "--token", "glsa_x")
    refused(result, "--url")
    for secret in LEAKY_URLS[url]:
        assert secret not in result.output, (secret, result.output)


@pytest.mark.parametrize("option", ["--url", "--litellm-url"])
@pytest.mark.parametrize("url", LEAKY_URLS)
def test_import_names_a_bad_url_without_its_password(option: str, url: str, tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_text("{}\n")
    args = [str(log), option, url, "--key", "k", "--data-dir", str(tmp_path / "state")]
    result = run("import", *args, *(["--litellm-key", "x"] if option == "--litellm-url" else []))
    refused(result, option)
    for secret in LEAKY_URLS[url]:
        assert secret not in result.output, (secret, result.output)
    assert not (tmp_path / "state").exists()  # refused before anything was touched


def test_a_percent_encoded_password_and_plain_urls_are_usable() -> None:
    from tracker.cli.dashboards_cmd import url_problem

    for url in ("http://admin:Xy9%2Fpw%23x%3F@grafana:3000", "https://grafana.example/sub/",
                "http://[::1]:3000/?verify=false", "HTTP://h", "http://u@h:1"):  # fmt: skip
        assert url_problem(url) is None, url
    for url in ("ftp://x", "http://", "http://[::1", "http://h:port", "http://h:99999"):
        assert url_problem(url) is not None, url


# --- 2. spool list|resend with a --data-dir that is not one --------------------------------


@pytest.mark.parametrize("command", ["list", "resend"])
def test_spool_with_a_file_as_data_dir_exits_2_naming_the_option(
    command: str, tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(run("spool", command, "--data-dir", str(afile)), "--data-dir", "Not a directory")


@pytest.mark.parametrize("command", ["list", "resend"])
def test_spool_with_a_mistyped_data_dir_says_nothing_is_quarantined_and_makes_nothing(
    command: str, tmp_path: Path
) -> None:
    typo = tmp_path / "typo"
    result = run("spool", command, "--data-dir", str(typo))
    assert result.exit_code == 0, result.output
    assert "nothing quarantined" in result.output and "no such folder" in result.output
    assert not typo.exists()  # was created, spool/quarantine/resend.lock and all


# --- 3. dashboards build|check --out that cannot be a directory ----------------------------


def test_dashboards_build_out_that_cannot_be_a_directory_exits_2(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(run("dashboards", "build", "--out", str(afile)), f"--out {afile}: not a directory")
    under = afile / "sub"  # mkdir: NotADirectoryError
    refused(run("dashboards", "build", "--out", str(under)), f"--out {under}: Not a directory")
    assert afile.read_text() == "x"
    # check read a file as an empty folder and reported every dashboard out of date (exit 1)
    refused(run("dashboards", "check", "--out", str(afile)), "--out", "not a directory")


# --- 4. registry load / reclassify without --author, the OS user nameless -----------------


def _nameless() -> str:
    raise KeyError("getpwuid(): uid not found: 54321")


@pytest.mark.parametrize(
    "args",
    [
        ["registry", "load", "LUXEMBOURG", "--reason", "test"],
        ["reclassify", "--from", "2026-01", "--to", "2026-02"],
    ],
)
def test_no_author_and_no_user_name_asks_for_author(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A container run with an arbitrary uid has no passwd entry (getpass.getuser raises).
    monkeypatch.setattr(getpass, "getuser", _nameless)
    shipped = resources.files("tracker.registry_data").joinpath("luxembourg.yaml")
    args = [str(shipped) if a == "LUXEMBOURG" else a for a in args]
    refused(run(*args, "--data-dir", str(tmp_path)), "--author")


# --- 5. share --basis / --as-classified name the option and the choices -------------------


def test_share_names_the_option_and_its_choices() -> None:
    refused(run("share", "--from", "2026-01-01", "--basis", "foo"),
            "--basis", "requests", "tokens", "cost", "energy")  # fmt: skip
    refused(run("share", "--from", "2026-01-01", "--as-classified", "x"),
            "--as-classified", "then", "now")  # fmt: skip


def test_share_choices_are_the_metrics_enums() -> None:
    from tracker.cli import share_cmd
    from tracker.metrics import AsClassified, Basis

    assert get_args(share_cmd.BasisName) == tuple(Basis)
    assert get_args(share_cmd.ModeName) == tuple(AsClassified)


# --- Found in the review of deploy/ and the docs (twenty-second session) ------------------


def test_key_add_offers_and_takes_only_the_roles_a_key_is_made_for(tmp_path: Path) -> None:
    assert "<agency|auditor|admin>" in flat(run("key", "add", "--help").output)
    refused(run("key", "add", "k", "--role", "public", "--data-dir", str(tmp_path)), "--role")
    assert not (tmp_path / "chdb").exists()  # refused before the store was opened


def test_collector_pipeline_and_api_warn_when_they_run_on_a_store_of_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty or missing TRACKER_CLICKHOUSE_DSN (a Kubernetes Secret not filled in) left
    each deployed process healthy on an embedded store of its own, sharing nothing, without a
    word. They still start (tests and one-machine trials run them so), with a WARNING."""
    from tracker.cli import _own_store_warning
    from tracker.settings import CommonSettings

    caplog.set_level("WARNING", logger="tracker")
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DSN", "")  # counts as unset
    _own_store_warning(CommonSettings(data_dir=tmp_path), "pipeline")
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DSN", "http://tracker:pw@clickhouse:8123")
    _own_store_warning(CommonSettings(data_dir=tmp_path), "api")
    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    text = warning.getMessage()
    assert text.startswith("pipeline: TRACKER_CLICKHOUSE_DSN is not set (or empty)"), text
    assert str(tmp_path) in text and "need a ClickHouse server" in text
