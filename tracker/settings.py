"""Process settings, read from TRACKER_* environment variables (pydantic-settings).

One class per process, built once by the CLI (never at import time) and passed down. Secrets
(the ClickHouse DSN may hold a password) are SecretStr so they never appear in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlparse, urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracker.contract import DLQ_TOPIC, TOPIC

# A ClickHouse database name the tracker will use (also checked by `dashboards push`).
DATABASE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class SettingError(RuntimeError):
    """A setting that validated but cannot work here (a port already taken): exit 2."""


# Every settings class reads TRACKER_*. An empty variable counts as unset: `TRACKER_DATA_DIR=`
# was the current directory and `TRACKER_CLICKHOUSE_DSN=` a server at localhost:8123, each
# from a variable a deployment template left blank (found in review).
_CONFIG = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", env_ignore_empty=True)


def is_embedded(dsn: str) -> bool:
    """Whether clickhouse-connect opens `dsn` with chdb (in this process), not over HTTP: its
    own test (`_is_chdb_target`, case-sensitive), so the tracker never disagrees with it."""
    return dsn.startswith("chdb:")


def chdb_path(dsn: str) -> str | None:
    """The directory clickhouse-connect's chdb client opens for `dsn` (None: in memory).

    As clickhouse-connect parses it (driver/__init__.py, _create_chdb_client): a netloc is
    the location (`chdb://memory`, `chdb://:memory:`, `chdb://u@x`: the part after `@`) and
    the path the database; without a netloc the path is the location; "", "memory" and
    ":memory:" are in memory."""
    parsed = urlparse(dsn)
    location = parsed.netloc.rpartition("@")[2] if parsed.netloc else parsed.path
    return None if location in ("", "memory", ":memory:") else location


def dsn_problem(dsn: str) -> str | None:
    """Why TRACKER_CLICKHOUSE_DSN cannot work, or None. Never quotes the DSN (a password)."""
    usage = ("give chdb:///absolute/path (embedded) or http(s)://user:password@host:port "
             "(a ClickHouse server)")  # fmt: skip
    try:
        parsed = urlsplit(dsn)
    except ValueError:  # an unclosed IPv6 bracket
        return f"is not a URL; {usage}"
    scheme = dsn.partition(":")[0]
    if is_embedded(dsn):
        # Only chdb:///path: any other spelling clickhouse-connect reads either as in memory
        # (keys and loads reported done, gone with the process) or as a relative path (a
        # store that moves with the working directory); both found in review.
        path = chdb_path(dsn)
        if not dsn.startswith("chdb:///") or path is None or not path.startswith("/"):
            return f"chdb needs an absolute path (chdb:///var/lib/tracker/chdb); {usage}"
        if not path.strip("/"):
            return f"chdb needs a directory other than / (chdb:///var/lib/tracker/chdb); {usage}"
        return None
    # Checked exactly, as clickhouse-connect does: anything else (empty, CHDB:, clickhouse:,
    # a port 9000 DSN) it silently read as http://localhost:8123 or host:9000 over HTTP.
    if scheme not in ("http", "https"):
        return f"has an unknown scheme (lower case only); {usage}"
    if not parsed.hostname:
        return f"names no host; {usage}"
    return None


class CommonSettings(BaseSettings):
    """What every process needs: where data lives and which registry classifies it."""

    model_config = _CONFIG

    # What data_dir holds besides the default store (the collector: its spool); nothing for
    # most commands, whose --data-dir only says where the store is.
    local_state: ClassVar[tuple[str, ...]] = ()
    # Set by the CLI when --data-dir was given while TRACKER_CLICKHOUSE_DSN names the store:
    # opening the store then refuses (tracker.clickhouse.open_client), as the option would
    # otherwise be silently ignored (found in review: an admin key made in another store).
    _data_dir_option: Path | None = PrivateAttr(default=None)

    data_dir: Path = Field(default=Path("var"), description="Root of local state (chdb, spool).")
    clickhouse_dsn: SecretStr | None = Field(
        default=None,
        description="chdb:///path (embedded) or http(s)://user:pass@host:8123; "
        "default: chdb under data_dir.",
    )
    clickhouse_database: str = Field(default="tracker", pattern=DATABASE_NAME)
    registry_path: Path | None = Field(
        default=None, description="Registry YAML; default: the shipped example country."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("clickhouse_dsn")
    @classmethod
    def _usable_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        # chdb:// with no path is an in-memory store: loads, keys and gateways were reported
        # done and gone with the process (found in review); other schemes fell back to HTTP.
        if value is not None:
            problem = dsn_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(f"TRACKER_CLICKHOUSE_DSN {problem}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    def dsn(self) -> str:
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def embedded(self) -> bool:
        """The store is chdb in this process (every write goes through it)."""
        return is_embedded(self.dsn())

    def data_dir_given(self, path: Path) -> None:
        """Record that --data-dir was given on the command line (tracker.cli._settings)."""
        self._data_dir_option = path

    def data_dir_conflict(self) -> str | None:
        """Why the store cannot be opened from these settings, or None: --data-dir was given
        while TRACKER_CLICKHOUSE_DSN names the store, and this command keeps nothing else
        under data_dir, so the option would change nothing."""
        if self._data_dir_option is None or self.clickhouse_dsn is None or self.local_state:
            return None
        return (f"--data-dir {self._data_dir_option} and TRACKER_CLICKHOUSE_DSN "
                f"({self.redacted_dsn()}) both name the store: give one of them")  # fmt: skip

    def redacted_dsn(self) -> str:
        """The DSN with any password replaced and its query string hidden (it may carry an
        access_token or a password parameter), for logs and error messages.

        Cut by hand, not by urlsplit alone: urlsplit ends the host part at the first `/`, `?`
        or `#`, so in `http://u:p#ss@h` it found no password and the DSN was printed whole
        (found in review). Everything between `://` and the last `@` is user information: the
        user name is shown, the rest hidden; after the host, a query or fragment is hidden."""
        dsn = self.dsn()
        try:
            urlsplit(dsn)  # an unclosed IPv6 bracket, say: show nothing of it
        except ValueError:
            return "<unparseable DSN>"
        scheme, sep, rest = dsn.partition("://")
        if not sep:
            return "<unparseable DSN>"
        userinfo = ""
        at = rest.rfind("@")
        if at >= 0:
            user, colon, _ = rest[:at].partition(":")
            userinfo = f"{user}:***@" if colon else f"{user}@"
            rest = rest[at + 1 :]
        cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
        if cut >= 0:
            rest = rest[:cut] + "?***"
        return f"{scheme}://{userinfo}{rest}"


# Kafka's own rule for topic and group names (legal characters, at most 249).
KAFKA_NAME = r"^[A-Za-z0-9._-]{1,249}$"
# One broker address: a host name or a bracketed IPv6 address, and a port.
_HOST_PORT = r"(\[[0-9A-Fa-f:.]+\]|[^\s,:\[\]]+):\d{1,5}"


class KafkaSettings(BaseSettings):
    model_config = _CONFIG

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        pattern=rf"^{_HOST_PORT}(,{_HOST_PORT})*$",
        description="host:port[,host:port]",
    )
    kafka_topic: str = Field(default=TOPIC, pattern=KAFKA_NAME)
    kafka_dlq_topic: str = Field(default=DLQ_TOPIC, pattern=KAFKA_NAME)
    # Records per Kafka message: per-message overhead in kafka-python is what limits throughput,
    # so records of one shard travel together (DESIGN.md, measured facts).
    kafka_records_per_message: int = Field(default=500, ge=1, le=10_000)
    # Partitions of the topic when the tracker creates it, and the shards records are spread
    # over by identity (gateway_id, record_id). Every process writing to the topic must use the
    # same value: it decides which partition, so which one member, lands each record.
    kafka_partitions: int = Field(default=4, ge=1, le=1_000)

    @model_validator(mode="after")
    def _dead_letters_elsewhere(self) -> KafkaSettings:
        # Dead letters read back as usage would be refused and dead-lettered again, forever
        # (seen in review: 67k letters from one in 40 s).
        if self.kafka_dlq_topic == self.kafka_topic:
            raise ValueError("TRACKER_KAFKA_DLQ_TOPIC must differ from TRACKER_KAFKA_TOPIC")
        return self


class HttpSettings(BaseSettings):
    model_config = _CONFIG

    # Never empty: uvicorn reads "" as every interface, so an unset $HOST would expose it.
    host: str = Field(default="127.0.0.1", pattern=r"^\S+$")
    port: int = Field(default=8000, ge=0, le=65535)
    # On SIGTERM/SIGINT, requests still in progress get this long before their connections are
    # closed (found in review: one client stalling its upload held the shutdown for good).
    shutdown_grace_seconds: int = Field(default=20, ge=0, le=600)


class IngestLimits(BaseSettings):
    model_config = _CONFIG

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_records: int = Field(default=10_000, ge=1)


class CollectorSettings(CommonSettings, KafkaSettings, HttpSettings, IngestLimits):
    """`tracker collector`: HTTP ingest -> Kafka, spooling to disk while Kafka is down."""

    local_state: ClassVar[tuple[str, ...]] = ("spool",)

    port: int = Field(default=8001, ge=0, le=65535)
    spool_max_bytes: int = Field(default=1024**3, ge=1024, description="503 when full")
    kafka_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    kafka_compression: Literal["none", "lz4"] = Field(
        default="lz4",
        description="compression of the messages the collector produces (consumers read either)",
    )


class PipelineSettings(CommonSettings, KafkaSettings):
    """`tracker pipeline`: Kafka -> ClickHouse."""

    consumer_group: str = Field(default="tracker-pipeline", pattern=KAFKA_NAME)
    batch_max_rows: int = Field(default=50_000, ge=1)
    batch_max_seconds: float = Field(default=1.0, gt=0, le=60)
    # A crashed member's partitions wait this long before the group hands them to another.
    consumer_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 disables /metrics")
    metrics_host: str = Field(default="127.0.0.1", pattern=r"^\S+$")


class ApiSettings(CommonSettings, HttpSettings):
    """`tracker api`: the read API and transparency page."""

    # Public answers hide any cell built from fewer records than this (docs/api.md).
    min_cell_records: int = Field(default=10, ge=1, le=1_000_000)
    # Token buckets: sustained requests per minute, with bursts of a sixth of a minute's worth.
    rate_limit_public_per_minute: int = Field(default=600, ge=1, description="per client IP")
    rate_limit_key_per_minute: int = Field(default=3000, ge=1, description="per API key")
    # Upper bound of one export (rows); pages are capped separately (api/routes/usage.py).
    max_export_rows: int = Field(default=100_000_000, ge=1)
    # Public headline answers (api/cache.py). With the embedded store they are reused until
    # the next landing (exact); `public_cache=false` turns that off (e.g. to measure the query).
    public_cache: bool = True
    # With a ClickHouse server (another process lands the data): seconds a public headline
    # answer is reused; 0 = always read through.
    public_cache_seconds: float = Field(default=0.0, ge=0, le=3600)
    # A registry proposal is applied by another admin than the one who made it (four eyes on
    # what classifies the public figure); true lets one admin apply their own.
    registry_self_apply: bool = False


class EmbeddedSettings(ApiSettings, IngestLimits):
    """`tracker up`: ingest, pipeline and API in one process, chdb, direct hand-off.

    The API's settings included, so they are checked before anything is opened or seeded
    (found in review: a bad TRACKER_MIN_CELL_RECORDS was a traceback after `demo` seeded)."""
