"""`tracker dashboards build|check|push`: Grafana dashboards as code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from tracker.settings import DATABASE_NAME

if TYPE_CHECKING:
    from tracker.registry import Registry

dashboards_app = typer.Typer(
    help="Grafana dashboards as code (build the JSON, push through the Grafana HTTP API).",
    no_args_is_help=True,
)

Out = Annotated[
    Path | None, typer.Option("--out", help="Directory (default: dashboards/generated)")
]
# The national dashboard draws the registry's target trajectory. The committed JSON is built
# from the shipped registry; build, check or push with another country's file to draw its own.
RegistryFile = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Registry YAML for the targets drawn (default: the shipped one)"
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"tracker: {message}", err=True)
    return typer.Exit(2)


def _registry(path: Path | None) -> Registry:
    from tracker.registry import RegistryError, load

    try:
        return load(path)[0]
    except RegistryError as exc:
        raise _fail(str(exc)) from exc


def _out(out: Path | None) -> Path:
    """The --out directory; exit 2 when it is a file (as `tracker schema --out` does)."""
    from dashboards import build

    if out is None:
        return build.GENERATED
    try:
        if out.exists() and not out.is_dir():
            raise _fail(f"--out {out}: not a directory")
    except OSError as exc:  # a folder on its way that cannot be looked into
        raise _fail(f"--out {out}: {exc.strerror or exc}") from None
    return out


@dashboards_app.command("build")
def build_cmd(out: Out = None, registry: RegistryFile = None) -> None:
    """Regenerate the committed dashboard JSON from the builders in dashboards/."""
    from dashboards import build

    folder, chosen = _out(out), _registry(registry)
    try:
        written = build.write(folder, chosen)
    except OSError as exc:  # found in review: a traceback (a path under /proc, read-only)
        raise _fail(f"--out {folder}: {exc.strerror or exc}") from None
    for path in written:
        typer.echo(f"wrote {path}")


@dashboards_app.command("check")
def check_cmd(out: Out = None, registry: RegistryFile = None) -> None:
    """Exit 1 when the committed JSON differs from a fresh build."""
    from dashboards import build

    folder, chosen = _out(out), _registry(registry)
    try:
        stale = build.stale(folder, chosen)
    except OSError as exc:  # an unreadable file in it
        raise _fail(f"--out {folder}: {exc.strerror or exc}") from None
    if stale:
        typer.echo(f"out of date: {', '.join(stale)}; run `tracker dashboards build`", err=True)
        raise typer.Exit(1)
    typer.echo("generated dashboards are up to date")


_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]+\]")
# What an HTTP header value may carry of a token: visible ASCII. Grafana's tokens (glsa_...,
# API keys) are made of it; anything else (a line break from a secret file, a NUL) would be
# refused by the HTTP library with the header, token included, in its message.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _redact(message: str, token: str) -> str:
    """The message with the token (as is, or as Python quotes it) and anything token-like
    after "Bearer" blanked out. Only whole occurrences: a short token ("t") must not blank
    every letter t of the message."""
    if token:
        for form in {token, repr(token.encode())[2:-1], repr(token)[1:-1]}:
            whole = rf"(?<![A-Za-z0-9_-]){re.escape(form)}(?![A-Za-z0-9_-])"
            message = re.sub(whole, "<token>", message)
    return re.sub(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}", "Bearer <token>", message)


def url_problem(url: str) -> str | None:
    """Why `url` is no usable http(s) base URL, in words that quote none of it; None if usable.

    Cut by hand first, as CommonSettings.redacted_dsn: urlsplit (and httpx) end the host at
    the first `/`, `?` or `#`, so a password holding one was read as host and port, and the
    parser's error quoted its start ("Port could not be cast to integer value as 'Xy9'", found
    in review). Neither the parser's text nor any part of the URL is shown: in a URL that does
    not parse, nothing says where its user:password ends."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "must start with http:// or https://"
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))  # fmt: skip
    if "@" in rest[end:]:
        # A base URL has no '@' in its path or query; one there is the end of a user:password
        # that was cut short. Refused even when it parses: the host would be the user name.
        return (
            "not a usable URL (an '@' after the host: in a user name or password, write "
            "'/' as %2F, '?' as %3F and '#' as %23; the URL is not shown)"
        )
    host_port = rest[:end].rpartition("@")[2]
    try:
        parts = urlsplit(f"{scheme}://{host_port}")
        parts.port  # noqa: B018  (raises on a port that is no number)
        urlsplit(url)  # what else it refuses (characters NFKC turns into '/' or '@', say)
    except ValueError:
        unclosed = "[" in host_port and "]" not in host_port
        why = "an unclosed '[' in the host" if unclosed else "its port is no number up to 65535"
        return f"not a usable URL ({why}; the URL is not shown)"
    if not parts.hostname:
        return "names no host"
    return None


_USER = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
_DATABASE = re.compile(DATABASE_NAME)


@dashboards_app.command("push")
def push_cmd(
    url: Annotated[str, typer.Option("--url", envvar="GRAFANA_URL", help="Grafana base URL")],
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="GRAFANA_TOKEN", help="Service account token (Editor or Admin)"
        ),
    ],
    clickhouse_host: Annotated[
        str, typer.Option(help="ClickHouse host as Grafana reaches it")
    ] = "clickhouse",
    clickhouse_port: Annotated[int, typer.Option(min=1, max=65535)] = 9000,
    clickhouse_protocol: Annotated[str, typer.Option(help="native or http")] = "native",
    clickhouse_secure: Annotated[bool, typer.Option(help="TLS to ClickHouse")] = False,
    clickhouse_user: Annotated[str, typer.Option(help="A read-only ClickHouse user")] = "grafana",
    clickhouse_database: Annotated[str, typer.Option()] = "tracker",
    clickhouse_password: Annotated[
        str | None,
        typer.Option(envvar="TRACKER_GRAFANA_CLICKHOUSE_PASSWORD", help="Sent only when needed"),
    ] = None,
    rotate_password: Annotated[
        bool, typer.Option(help="Re-send the password even if Grafana has one stored")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=600, help="HTTP timeout, seconds")] = 10.0,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            envvar="TRACKER_REGISTRY_PATH",
            help="Registry YAML whose targets the national dashboard draws (default: shipped)",
        ),
    ] = None,
) -> None:
    """Create or update the ClickHouse data source, the folder and every dashboard.

    Idempotent: objects identical to the generated ones are left alone."""
    from dashboards import build
    from dashboards.provision import (
        ClickHouseConnection,
        Grafana,
        ProvisionError,
        api_url,
        push,
    )

    # Surrounding whitespace is no part of a token (a secret file's final line break is).
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise _fail(
            "--token / GRAFANA_TOKEN: empty, or holds control characters, spaces or non-ASCII "
            "characters (not shown); a Grafana token is printable ASCII"
        )
    if clickhouse_protocol not in ("native", "http"):
        raise _fail("--clickhouse-protocol: must be native or http")
    problem = url_problem(url)
    if problem:
        raise _fail(f"--url: {problem}")
    try:
        # Its own message: names the ?verify= value, and the query holds no user:password
        # (url_problem refused an '@' past the host).
        url = api_url(url)
    except ValueError as exc:
        raise _fail(f"--url: not a usable URL ({exc})") from exc
    # Each replaces a working data source in Grafana: an empty one would break every panel.
    for option, value, pattern in (
        ("--clickhouse-host", clickhouse_host, _HOST),
        ("--clickhouse-user", clickhouse_user, _USER),
        ("--clickhouse-database", clickhouse_database, _DATABASE),
    ):
        if not pattern.fullmatch(value):
            raise _fail(f"{option} {value!r}: not a usable value")
    conn = ClickHouseConnection(
        host=clickhouse_host,
        port=clickhouse_port,
        protocol="native" if clickhouse_protocol == "native" else "http",
        secure=clickhouse_secure,
        username=clickhouse_user,
        database=clickhouse_database,
        password=clickhouse_password,
    )
    dashboards = build.all_dashboards(_registry(registry))
    try:
        changes = push(
            Grafana.connect(url, token, timeout), dashboards, conn, rotate_secret=rotate_password
        )
    except ProvisionError as exc:
        raise _fail(_redact(str(exc), token)) from None
    except Exception as exc:  # its text may hold the token: never shown raw, never a trace
        raise _fail(f"cannot provision: {type(exc).__name__}: {_redact(str(exc), token)}") from None
    for c in changes:
        typer.echo(f"{c.action:9} {c.kind:10} {c.uid}  {c.title}")
    written = sum(c.action != "unchanged" for c in changes)
    typer.echo(f"{written} written, {len(changes) - written} unchanged")
