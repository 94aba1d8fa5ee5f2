"""`tracker`: the command line. Bad input exits with code 2 and a message, never a trace."""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from tracker.cli.dashboards_cmd import dashboards_app
from tracker.cli.replay_cmd import dlq_app, replay
from tracker.cli.share_cmd import share
from tracker.cli.spool_cmd import spool_app
from tracker.clickhouse import StorageUnavailable
from tracker.memory import tune_allocator
from tracker.migrate import MigrationError
from tracker.registry import RegistryError
from tracker.settings import CommonSettings, SettingError

log = logging.getLogger("tracker")

app = typer.Typer(
    name="tracker",
    help="Inference Sovereignty Tracker: domestic inference share of the public sector.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
gateway_app = typer.Typer(help="Gateways allowed to push usage.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(dlq_app, name="dlq")
app.add_typer(spool_app, name="spool")
app.command()(replay)
app.command()(share)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Local state (default ./var)")]
Host = Annotated[str | None, typer.Option("--host", help="Listen address (default 127.0.0.1)")]
Port = Annotated[
    int | None,
    typer.Option("--port", help="Listen port (default: api and up 8000, collector 8001)"),
]


def fail(message: str) -> NoReturn:
    typer.echo(f"tracker: {message}", err=True)
    raise typer.Exit(2)


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _settings(cls: type[Any], **values: Any) -> Any:
    given = _overrides(**values)
    try:
        settings = cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_name(e['loc'], given)}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        fail(f"bad configuration: {problems}")
    # The one place --data-dir is applied. With TRACKER_CLICKHOUSE_DSN set the store is the
    # DSN's, and the option was silently ignored for it (found in review: an admin key made in
    # another store). A command that keeps nothing else there refuses when it opens the store
    # (CommonSettings.data_dir_conflict); one that does (the spool) goes on, saying so.
    data_dir = values.get("data_dir")
    if data_dir is not None and settings.clickhouse_dsn is not None:
        settings.data_dir_given(data_dir)
        if settings.local_state:
            typer.echo(f"tracker: --data-dir {data_dir} holds the {', '.join(settings.local_state)}"
                       f"; the store is TRACKER_CLICKHOUSE_DSN ({settings.redacted_dsn()})",
                       err=True)  # fmt: skip
    return settings


def _setting_name(loc: tuple[Any, ...], given: dict[str, Any]) -> str:
    """How the operator set a setting: its option when the command line gave it, else its
    TRACKER_* variable (found in review: a bad TRACKER_PORT was reported as `port`)."""
    field = ".".join(str(p) for p in loc)
    if not field:
        return "settings"
    if field in given:
        return "--" + field.replace("_", "-")
    return "TRACKER_" + field.upper()


def _own_store_warning(settings: CommonSettings, process: str) -> None:
    """`tracker collector|pipeline|api` with no TRACKER_CLICKHOUSE_DSN run on an embedded store
    no other process can open: right for a test or one machine's trial, never for a deploy,
    where an empty or missing DSN (a Secret not filled in) left each process on a private store
    of its own, all healthy, sharing nothing (found in review). Said at start, on stderr."""
    if settings.clickhouse_dsn is None:
        log.warning(
            "%s: TRACKER_CLICKHOUSE_DSN is not set (or empty): using the embedded store at %s, "
            "which no other process can open. Processes that share data (collector, pipeline, "
            "api) need a ClickHouse server: set TRACKER_CLICKHOUSE_DSN.",
            process, settings.data_dir,
        )  # fmt: skip


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


@app.command()
def migrate(
    data_dir: DataDir = None,
    check: Annotated[
        bool, typer.Option("--check", help="Apply nothing: exit 1 while any migration is pending")
    ] = False,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Then measure the hourly rollup's rows that carry no reported requests yet "
            "(keys whose batches were in flight while migration 0009's data step ran); one at "
            "a time, like the migrate job",
        ),
    ] = False,
) -> None:
    """Apply pending ClickHouse migrations (safe to run again)."""
    from tracker import rollups
    from tracker.clickhouse import ClientPool
    from tracker.migrate import migrate as run_migrations
    from tracker.migrate import pending
    from tracker.settings import CommonSettings

    if check and measure:
        fail("--check applies nothing and --measure writes: give one of them")
    if check:
        # Applies nothing, so it creates nothing: a mistyped --data-dir listed every migration
        # as pending and left a new store behind (found in review).
        settings = _existing_store(data_dir)
        # What a process waits on before it starts (deploy/k8s): the migrate Job applies the
        # schema alone, so a data step (migration 0005's backfill) never runs twice at once.
        waiting = pending(ClientPool(settings).get())
        for m in waiting:
            typer.echo(f"pending {m.version:04d}_{m.name}")
        typer.echo(f"{len(waiting)} migration(s) pending in {settings.redacted_dsn()}")
        raise typer.Exit(1 if waiting else 0)
    settings = _settings(CommonSettings, data_dir=data_dir)
    ran = run_migrations(ClientPool(settings).get())
    for m in ran:
        typer.echo(f"applied {m.version:04d}_{m.name}")
    typer.echo(f"schema up to date ({len(ran)} applied) in {settings.redacted_dsn()}")
    if measure:
        client = ClientPool(settings).get()
        done = rollups.measure_after_0009(client)  # a repair first, as the migration's
        why = (" (their rollup and raw rows disagree: batches landing meanwhile, or a month "
               "the repair logged as undecided; run it again)") if done.left else ""  # fmt: skip
        typer.echo(f"measured {done.measured} record(s); {done.left} record(s) left "
                   f"unmeasured{why}")  # fmt: skip


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schema")] = Path(
        "docs/usage-record.schema.json"
    ),
) -> None:
    """Write the record contract's JSON Schema (generated from the pydantic model)."""
    from tracker.contract import json_schema

    if not out.name or out.is_dir():
        fail(f"--out {out}: give a file path, not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    typer.echo(f"wrote {out}")


@gateway_app.command("add")
def gateway_add(
    name: Annotated[str, typer.Argument(help="Gateway id, e.g. moh-litellm")],
    agency: Annotated[list[str], typer.Option("--agency", help="Agency id (repeatable)")],
    data_dir: DataDir = None,
    signed: Annotated[
        bool, typer.Option("--signed", help="Require HMAC-signed requests; prints the secret")
    ] = False,
) -> None:
    """Register a gateway for agencies and print its new API key (shown once)."""
    from tracker.cli.wiring import open_core
    from tracker.gateways import GatewayError, add

    core = open_core(_new_or_existing_store(data_dir))
    try:
        gateway, key = add(core.pool.get(), core.registry, name, agency, signed=signed)
    except GatewayError as exc:
        fail(str(exc))
    typer.echo(
        f"gateway {gateway.gateway_id} may report for: {', '.join(sorted(gateway.agencies))}"
    )
    typer.echo(f"key (shown once, store it now): {key}")
    if gateway.signing_secret:
        typer.echo(f"signing secret (shown once, store it now): {gateway.signing_secret}")


@gateway_app.command("list")
def gateway_list(data_dir: DataDir = None) -> None:
    """List active gateways and their agencies (keys are never shown again)."""
    from tracker.cli.wiring import open_core
    from tracker.gateways import list_all

    for g in list_all(open_core(_existing_store(data_dir)).pool.get()):
        typer.echo(f"{g.gateway_id}\t{','.join(sorted(g.agencies))}")


@gateway_app.command("revoke")
def gateway_revoke(
    name: Annotated[str, typer.Argument(help="Gateway id")], data_dir: DataDir = None
) -> None:
    """Revoke a gateway's key; collectors refuse it within seconds (its records stay)."""
    from tracker.gateways import GatewayError, revoke

    try:
        revoked = revoke(_store(data_dir), name)
    except GatewayError as exc:
        fail(str(exc))
    if not revoked:
        fail(f"no active gateway {name!r}")
    typer.echo(f"gateway {name} revoked")


@gateway_app.command("rotate")
def gateway_rotate(
    name: Annotated[str, typer.Argument(help="Gateway id")],
    signing_secret: Annotated[
        bool, typer.Option("--signing-secret", help="Also give a signed gateway a new secret")
    ] = False,
    keep_key: Annotated[
        bool, typer.Option("--keep-key", help="With --signing-secret: rotate the secret only")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Give a gateway a new key (and with --signing-secret a new signing secret), each shown
    once; the old ones are refused within seconds."""
    from tracker.gateways import GatewayError, rotate

    if keep_key and not signing_secret:
        fail("--keep-key rotates nothing on its own: add --signing-secret")
    try:
        rotated = rotate(_store(data_dir), name, key=not keep_key, secret=signing_secret)
    except GatewayError as exc:
        fail(str(exc))
    if rotated is None:
        fail(f"no active gateway {name!r}")
    if rotated.key is not None:
        typer.echo(f"gateway {name}: new key (shown once, store it now): {rotated.key}")
    if rotated.signing_secret is not None:
        typer.echo(f"gateway {name}: new signing secret (shown once, store it now): "
                   f"{rotated.signing_secret}")  # fmt: skip


def _missing_store(settings: CommonSettings) -> Path | None:
    """The path of the embedded store `settings` name when it does not exist yet (None for a
    store that exists, or a server's)."""
    from tracker.settings import chdb_path, is_embedded

    conflict = settings.data_dir_conflict()  # said first: the option was meant for another store
    if conflict is not None:
        fail(conflict)
    dsn = settings.dsn()
    path = chdb_path(dsn) if is_embedded(dsn) else None
    return Path(path) if path is not None and not Path(path).exists() else None


def _existing_store(data_dir: Path | None) -> Any:
    """The settings of a command that reads the store, or changes what must already be in it
    (a revoke, a rotation, a re-classification): an embedded store that does not exist is
    refused (exit 2), never created empty (found in review: a mistyped --data-dir listed no
    keys, exit 0, and left a new store behind; `gateway revoke` made one to say that it held
    no such gateway)."""
    settings = _settings(CommonSettings, data_dir=data_dir)
    missing = _missing_store(settings)
    if missing is not None:
        fail(f"no store at {missing} (--data-dir / TRACKER_DATA_DIR): `tracker up`, "
             "`tracker demo` or `tracker migrate` creates one")  # fmt: skip
    return settings


def _new_or_existing_store(data_dir: Path | None) -> Any:
    """The settings of a command that adds to the store (`gateway add`, `key add`, `registry
    load`): on a new installation these come before the first `tracker up`, so a store that
    does not exist is created, and said on stderr: a mistyped --data-dir is seen at once
    instead of when the key it issued is refused by the real store's servers."""
    settings = _settings(CommonSettings, data_dir=data_dir)
    missing = _missing_store(settings)
    if missing is not None:
        typer.echo(f"no store at {missing} yet (--data-dir / TRACKER_DATA_DIR): creating one",
                   err=True)  # fmt: skip
    return settings


def _store(data_dir: Path | None) -> Any:
    """A client of the existing store the gateway commands change (opened, migrated)."""
    from tracker.cli.wiring import open_core

    return open_core(_existing_store(data_dir)).pool.get()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the store is opened or a key issued: a taken port or
    an unknown host was uvicorn's exit 3 after the start-up banner (and after `demo` issued its
    key), naming no setting (found in review). Raises SettingError (exit 2)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SettingError(f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc}; "
                           "set --host/TRACKER_HOST") from exc  # fmt: skip
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn binds: a restart may reuse the port while old connections time out.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise SettingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                           "set --port/TRACKER_PORT or --host/TRACKER_HOST") from exc  # fmt: skip
    return sock


def _url(sock: socket.socket) -> str:
    """http://host:port of the bound socket: the real port when 0 asked for any."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve(application: Any, sock: socket.socket, grace_seconds: int) -> None:
    import uvicorn

    # proxy_headers off: uvicorn's default takes the client address from X-Forwarded-For when
    # the peer is 127.0.0.1, so behind a proxy on the same host (one that passes the header
    # through) any caller chose the address its rate limits and audit rows are keyed by
    # (found in review). The address is the peer's; docs/api.md says what that means behind a
    # proxy.
    # timeout_graceful_shutdown: unanswered requests were never acknowledged, so closing them
    # loses nothing the client was told is stored.
    config = uvicorn.Config(application, log_level="info", access_log=False,
                            proxy_headers=False,
                            timeout_graceful_shutdown=grace_seconds)  # fmt: skip
    # uvicorn shuts down gracefully on SIGTERM or SIGINT, puts back the handlers it found and
    # raises the signal again: with the default handlers the process then died by it (exit
    # 143) before the command's own cleanup (the collector's sink.close) ran. These are the
    # handlers it finds: the signal raised again is noted and the command ends normally,
    # exit 0, after its cleanup. Each also asks the server to stop, for a signal in the ~1 ms
    # before uvicorn's own handlers are in (found in review: only noted, the server ran on).
    # Put back after the server: a second signal during the cleanup ends the process at once.
    server = uvicorn.Server(config)
    caught: list[int] = []

    def note(signum: int, frame: Any) -> None:
        caught.append(signum)
        server.handle_exit(signum, frame)

    found: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # where signals can be handled
        found = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with sock:
            server.run(sockets=[sock])
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)
    if caught:
        log.info("stopped on %s", signal.Signals(caught[0]).name)


def _end_served() -> NoReturn:
    """End a server process once it has stopped and done its own cleanup: exit 0 without the
    interpreter's finalization. Background threads (the registry watcher, the engine's own)
    may still be inside the embedded engine, and tearing the interpreter down under them
    crashed the process at exit (found in a test of this change, 2026-11-26: SIGSEGV in 1 of 3
    stops of `tracker demo`). Nothing is lost: every write acknowledged is on disk already
    (the engine writes an insert's part before it returns; the spool fsyncs), as the
    kill -9 fault tests show."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def up(data_dir: DataDir = None, host: Host = None, port: Port = None) -> None:
    """Embedded default: ingest, pipeline and API in one process on chdb."""
    from tracker.cli.wiring import embedded_app, open_core
    from tracker.settings import EmbeddedSettings

    settings = _settings(EmbeddedSettings, data_dir=data_dir, host=host, port=port)
    _logging(settings.log_level)
    tune_allocator()
    sock = _listen(settings.host, settings.port)
    core = open_core(settings, watch=True)
    # The store actually used (a DSN's, not data_dir's, when TRACKER_CLICKHOUSE_DSN is set).
    typer.echo(f"tracker up: {_url(sock)}  (data in {settings.redacted_dsn()})")
    _serve(embedded_app(settings, core), sock, settings.shutdown_grace_seconds)
    _end_served()


# The gateway `tracker demo` issues its key to (a new key each run).
DEMO_GATEWAY = "tracker-demo"


@app.command()
def demo(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    days: Annotated[int, typer.Option(min=1, max=3660, help="Days of history")] = 730,
    serve: Annotated[bool, typer.Option(help="Start the server after seeding")] = True,
) -> None:
    """Seed a realistic national dataset (once), then run as `tracker up`."""
    from tracker import demo as demo_data
    from tracker.cli.wiring import embedded_app, open_core, seed
    from tracker.demo_seed import seed_once
    from tracker.gateways import GatewayError, add, rotate
    from tracker.settings import EmbeddedSettings

    settings = _settings(EmbeddedSettings, data_dir=data_dir, host=host, port=port)
    _logging(settings.log_level)
    tune_allocator()
    sock = _listen(settings.host, settings.port) if serve else None
    core = open_core(settings, watch=True)
    client = core.pool.get()
    outcome = seed_once(
        client,
        days=days,
        generate=lambda window: demo_data.generate(core.registry, days=window.days,
                                                   end=window.end),
        land=lambda records: seed(core, records, total=None),
    )  # fmt: skip
    if outcome.foreign:
        typer.echo(f"usage already present ({outcome.foreign} records, not a demo seed's); "
                   "not seeding demo data into it")  # fmt: skip
    elif outcome.already:
        window = outcome.window
        seeded = (f"{window.days} days to {window.end}" if window is not None
                  else "seeded by an earlier release")  # fmt: skip
        typer.echo(f"demo data already present ({outcome.already} records, {seeded}); "
                   "not seeding again")  # fmt: skip
    else:
        assert outcome.window is not None  # seeded now
        began = (f" (completing the seed of {outcome.window.days} days to {outcome.window.end} "
                 "an earlier run began)" if outcome.resumed else "")  # fmt: skip
        typer.echo(f"seeded {outcome.landed} records for {len(core.registry.agencies)} "
                   f"agencies{began}")  # fmt: skip
    # One demo gateway, its key issued anew each run (the previous one stops working):
    # a gateway per run left every earlier all-agency key valid (found in review).
    try:
        rotated = rotate(client, DEMO_GATEWAY)
    except GatewayError as exc:  # changed by someone else meanwhile
        fail(str(exc))
    if rotated is not None and rotated.key is not None:
        key = rotated.key
    else:
        agencies = [a.id for a in core.registry.agencies]
        try:
            key = add(client, core.registry, DEMO_GATEWAY, agencies)[1]
        except GatewayError:  # none active, yet the name is taken: revoked by its operator
            fail(f"gateway {DEMO_GATEWAY!r} was revoked, so no demo key is issued "
                 "(`tracker gateway add NAME --agency ID` adds another)")  # fmt: skip
    typer.echo(f"demo gateway {DEMO_GATEWAY} key: {key}")
    if sock is None:
        # Found in review: --no-serve printed the URLs of a server it never started.
        typer.echo("not serving (--no-serve): `tracker up` serves this store")
        return
    url = _url(sock)
    # The store in use, as `up`'s banner names it (found in review: demo's did not).
    typer.echo(f"headline: {url}/v1/share   API docs: {url}/docs  "
               f"(data in {settings.redacted_dsn()})")  # fmt: skip
    _serve(embedded_app(settings, core), sock, settings.shutdown_grace_seconds)
    _end_served()


@app.command()
def collector(host: Host = None, port: Port = None) -> None:
    """Scale-out: HTTP ingest -> Kafka (TRACKER_KAFKA_BOOTSTRAP, TRACKER_CLICKHOUSE_DSN)."""
    from tracker.cli.wiring import collector_app, open_core
    from tracker.settings import CollectorSettings

    settings = _settings(CollectorSettings, host=host, port=port)
    _logging(settings.log_level)
    _own_store_warning(settings, "collector")
    tune_allocator()
    sock = _listen(settings.host, settings.port)
    core = open_core(settings, watch=True)
    application, sink = collector_app(settings, core.pool.get())
    try:
        _serve(application, sock, settings.shutdown_grace_seconds)
    finally:
        sink.close()
    _end_served()


@app.command()
def pipeline() -> None:
    """Scale-out: Kafka `usage.v1` -> ClickHouse, as a consumer group member."""
    from tracker.cli.wiring import open_core, run_pipeline
    from tracker.settings import PipelineSettings

    settings = _settings(PipelineSettings)
    _logging(settings.log_level)
    _own_store_warning(settings, "pipeline")
    tune_allocator()
    consumer = run_pipeline(settings, open_core(settings, watch=True))
    # SIGTERM/SIGINT finish the batch in hand (write, then commit) before exiting.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop())
    consumer.run()
    s = consumer.stats
    typer.echo(f"pipeline stopped: {s.rows_written} landed, {s.duplicates} duplicates, "
               f"{s.rejected} rejected")  # fmt: skip


@app.command()
def api(host: Host = None, port: Port = None) -> None:
    """Scale-out: the read API and transparency page."""
    from tracker.cli.wiring import api_app, open_core
    from tracker.settings import ApiSettings

    settings = _settings(ApiSettings, host=host, port=port)
    _logging(settings.log_level)
    _own_store_warning(settings, "api")
    tune_allocator()
    sock = _listen(settings.host, settings.port)
    open_core(settings)  # migrate and check the registry before serving
    _serve(api_app(settings), sock, settings.shutdown_grace_seconds)
    _end_served()


def main() -> None:
    # `kill -USR1 <pid>` writes every thread's stack to stderr: how an operator (or a fault
    # test) sees where a process that makes no progress is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from kafka.errors import KafkaError

    try:
        app()
    except StorageUnavailable as exc:
        typer.echo(f"tracker: {exc}", err=True)
        sys.exit(2)
    except (RegistryError, MigrationError, SettingError) as exc:
        typer.echo(f"tracker: {exc}", err=True)
        sys.exit(2)
    except KafkaError as exc:
        # At start-up (a broker that is down or a bootstrap that is wrong): say so, no trace.
        typer.echo(f"tracker: Kafka: {exc}; check "
                   "TRACKER_KAFKA_BOOTSTRAP and that the broker is up", err=True)  # fmt: skip
        sys.exit(2)
    except ClickHouseError as exc:
        # Mid-work (replay, reclassify): every command is safe to run again.
        typer.echo(f"tracker: ClickHouse failed: {str(exc)[:500]}; nothing is counted twice, "
                   "run the command again to finish", err=True)  # fmt: skip
        sys.exit(1)


from tracker.cli import import_cmd as _import_cmd  # noqa: E402, F401  (registers `tracker import`)
from tracker.cli import keys_cmd as _keys_cmd  # noqa: E402, F401  (registers `tracker key`)
from tracker.cli import registry_cmd as _registry_cmd  # noqa: E402, F401  (`registry`, `reclassify`)
