"""A ClickHouse HTTP front for the embedded engine: tests and benchmarks only, never deployed.

    python -m tests.integration.chdb_http --path DIR [--host 127.0.0.1] [--port 0]

No ClickHouse server can be installed on these machines (Debian's package is 18.16, from 2018),
so the tracker's `http://` DSN path would otherwise never run. This process hosts the chdb
engine (the ClickHouse 26.9 code of the embedded default) and answers the part of ClickHouse's
HTTP interface that clickhouse-connect's HTTP client uses: the query in the body or the `query`
parameter, `param_*` server-side parameters, settings as URL parameters, `database`, inserts
whose data follows the INSERT statement (lz4, zstd, gzip or deflate bodies, plain or chunked),
results streamed as the engine produces them, errors as status 500 with
X-ClickHouse-Exception-Code and the engine's message. Each handler thread keeps one engine
connection (opening one costs ~15-20 ms here) and puts every setting a request changed back to
its default afterwards, so none leaks into the next request (a server without sessions).

What it is not: the ClickHouse server. No users or quotas, responses are never compressed,
progress headers are not sent, and an error after the first streamed block cuts the response
short instead of writing the server's exception trailer. What runs the SQL is the real engine.

It prints `listening on HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame

# URL parameters of the HTTP interface that are not settings.
_NOT_SETTINGS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "user", "password", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "quota_key",
})  # fmt: skip
# Formats whose blocks, each encoded on its own, concatenate into one valid stream.
_STREAMABLE = frozenset({"Native", "TabSeparated", "TSV", "CSV", "RowBinary", "JSONEachRow"})
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# An INSERT whose data follows it in the body: the statement ends at its FORMAT clause's line.
_INSERT_HEAD = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?\bFORMAT\s+(\w+))[ \t]*\r?\n", re.I | re.S)
_INSERT_WITH_DATA = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)


def _trailing_format(sql: str, tail: int = 256) -> str | None:
    """The statement's closing `FORMAT name`, if any, read from its last `tail` characters: a
    search over the whole text cost the front more than the engine's own work on the writer's
    key check (a 2 MB statement). Exact: a match at the tail's start counts only where the
    statement has a word boundary there too."""
    found = _TRAILING_FORMAT.search(sql[-tail:])
    if found is None:
        return None
    at = len(sql) - min(tail, len(sql)) + found.start()
    if at > 0 and (sql[at - 1].isalnum() or sql[at - 1] == "_"):
        return None
    return found[1]


_READS = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)  # what the engine can stream
_CODE = re.compile(r"Code: (\d+)")
_TRACE = os.environ.get("CHDB_HTTP_TRACE") == "1"  # one line per request on stderr


class BadRequest(Exception):
    pass


def _connect(path: str) -> Any:
    return chdb.connect(path)  # type: ignore[no-untyped-call]  # chdb ships no annotations


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _decompress(data: bytes, encoding: str | None) -> bytes:
    """The whole body. A streamed insert arrives as one compressed frame (or gzip member, or
    deflate stream) per block, one after another: every one of them is decoded, not only the
    first (lz4.frame.decompress alone stops after the first frame)."""
    if not encoding or not data:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)  # reads every member
    if encoding == "zstd":
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return bytes(zstd.decompress(data))  # reads every frame
    if encoding not in ("lz4", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}")
    out: list[bytes] = []
    rest = data
    while rest:
        if encoding == "lz4":
            lz4_frame = lz4.frame.LZ4FrameDecompressor()
            out.append(lz4_frame.decompress(rest))
            done, rest = lz4_frame.eof, lz4_frame.unused_data
        else:
            stream = zlib.decompressobj()
            out.append(stream.decompress(rest))
            done, rest = stream.eof, stream.unused_data
        if not done:
            raise BadRequest(f"truncated {encoding} body")
    return b"".join(out)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    local = threading.local()

    def __init__(self, address: tuple[str, int], path: str) -> None:
        super().__init__(address, _Handler)
        self.path = path
        self.spool = tempfile.mkdtemp(prefix="chdb-http-")
        _connect(path).close()  # open the engine before the first request

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the fault tests' SIGKILL) resets its connection: that
        # is the client's end, not an error of this server worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle's algorithm holds the
        # second until the client's delayed ACK, ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # base signature
        pass  # one line per request would swamp a benchmark's output

    def do_GET(self) -> None:
        if urlsplit(self.path).path in ("/ping", "/ping/"):
            self._reply(200, b"Ok.\n", {})
            return
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self._read_body())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return _decompress(body, self.headers.get("Content-Encoding"))

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, body: bytes) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        started = time.monotonic()
        conn = getattr(self.server.local, "conn", None)
        if conn is None:
            conn = self.server.local.conn = _connect(self.server.path)
        spooled: str | None = None
        changed: list[str] = []
        try:
            sql, data = self._statement(params, body)
            database = params.get("database") or "default"
            if not _IDENTIFIER.match(database):
                raise BadRequest(f"bad database name {database!r}")
            conn.query(f"USE `{database}`")
            for name, value in params.items():
                if name in _NOT_SETTINGS or name.startswith("param_"):
                    continue
                if not _SETTING_NAME.match(name):
                    raise BadRequest(f"bad setting name {name!r}")
                conn.query(f"SET {name} = {_quote(value)}")
                changed.append(name)
            binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            if data is not None:
                insert = _INSERT_WITH_DATA.match(sql)
                if insert is None:
                    raise BadRequest("data sent with a statement that is not INSERT ... FORMAT")
                fd, spooled = tempfile.mkstemp(dir=self.server.spool)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                sql = f"{insert[1]} FROM INFILE {_quote(spooled)} FORMAT {insert[2]}"
            fmt = _trailing_format(sql) or params.get("default_format", "TabSeparated")
            headers = {
                "X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Server-Display-Name": "chdb-http",
                "Content-Type": "application/octet-stream" if fmt in ("Native", "RowBinary",
                                "Arrow", "ArrowStream", "Parquet") else "text/plain; charset=UTF-8",
            }  # fmt: skip
            if fmt in _STREAMABLE and _READS.match(sql):
                self._stream(conn, sql, fmt, binds, headers, started)
                return
            result = conn.query(sql, fmt, params=binds)
            rows = int(result.rows_read())
            headers["X-ClickHouse-Summary"] = json.dumps({
                "read_rows": str(rows), "read_bytes": str(int(result.bytes_read())),
                "written_rows": str(rows if data is not None else 0),
                "written_bytes": str(len(data) if data is not None else 0),
                "elapsed_ns": str(int((time.monotonic() - started) * 1e9)),
            })  # fmt: skip
            self._reply(200, result.bytes(), headers)
        except BadRequest as exc:
            self._fail(400, 36, str(exc))
        except Exception as exc:  # the engine's error, passed on as the server would
            text = str(exc)
            code = _CODE.search(text)
            self._fail(500 if code is None or code[1] != "62" else 400,
                       int(code[1]) if code else 1000, text)  # fmt: skip
        finally:
            for name in changed:
                conn.query(f"SET {name} = DEFAULT")
            if spooled:
                os.unlink(spooled)
            if _TRACE:
                sys.stderr.write(
                    f"{(time.monotonic() - started) * 1000:8.1f} ms  "
                    f"{' '.join(str(params.get('query', body[:200])).split())[:150]}\n"
                )

    def _statement(self, params: dict[str, str], body: bytes) -> tuple[str, bytes | None]:
        """The SQL, and the insert data that follows it (None for a statement without data)."""
        if "query" in params:
            return params["query"], (body or None)
        head = _INSERT_HEAD.match(body[: 1 << 16])
        if head is not None:
            return head[1].decode(), body[head.end() :]
        return body.decode(), None

    def _stream(self, conn: Any, sql: str, fmt: str, binds: dict[str, str],
                headers: dict[str, str], started: float) -> None:  # fmt: skip
        stream = conn.send_query(sql, fmt, params=binds)
        try:
            chunks = iter(stream)
            first = next(chunks, None)  # an error before the first block is still a status
            headers["X-ClickHouse-Summary"] = json.dumps(
                {"elapsed_ns": str(int((time.monotonic() - started) * 1e9))}
            )
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in [first] if first is not None else []:
                    self._chunk(chunk.bytes())
                for chunk in chunks:
                    self._chunk(chunk.bytes())
                self.wfile.write(b"0\r\n\r\n")
            except Exception:
                # Headers are out: cut the response so the client sees a broken stream, never a
                # short result that looks whole.
                self.close_connection = True
                self.connection.shutdown(2)
        finally:
            stream.close()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _fail(self, status: int, code: int, message: str) -> None:
        text = message if message.startswith("Code:") else f"Code: {code}. DB::Exception: {message}"
        self._reply(status, (text.rstrip() + "\n").encode(), {
            "X-ClickHouse-Exception-Code": str(code), "Content-Type": "text/plain; charset=UTF-8",
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="the engine's data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    server = _Server((args.host, args.port), args.path)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        sys.exit(0)


if __name__ == "__main__":
    main()


def start(path: str, *, timeout: float = 60.0) -> tuple[Any, str]:
    """Start the front in its own process; returns (process, DSN). The caller terminates it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.chdb_http", "--path", path],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("listening on "):
            return proc, "http://" + line.split()[-1]
    proc.kill()
    raise RuntimeError(f"chdb_http did not start within {timeout} s (last line: {line!r})")
