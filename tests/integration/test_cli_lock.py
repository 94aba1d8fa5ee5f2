"""While `tracker up` holds the embedded store, a state-changing command refuses with exit
code 2 and says why, instead of a trace (chdb: one process per data directory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.ports import free_port, tracker_up, wait_http


def test_gateway_add_refuses_while_up_holds_the_store(tmp_path: Path) -> None:
    with tracker_up(tmp_path):
        add = subprocess.run(
            [sys.executable, "-m", "tracker", "gateway", "add", "gw-x", "--agency", "in-sbi",
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert add.returncode == 2
        assert "held by another process" in add.stderr
        assert "Traceback" not in add.stderr
        # The engine's own lock error is not shown beside the plain line (found in review).
        assert "Cannot lock file" not in add.stderr, add.stderr


def test_a_store_that_cannot_be_created_says_why_not_that_it_is_held(tmp_path: Path) -> None:
    """Found in review: every failed start of the embedded engine (a read-only or full disk,
    no permission) was reported as a store held by another process. Here the store's place
    is taken by a file: the engine's own reason is shown."""
    (tmp_path / "chdb").write_text("not a store")
    listed = subprocess.run(
        [sys.executable, "-m", "tracker", "key", "list", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 2
    assert "held by another process" not in listed.stderr, listed.stderr
    assert "cannot open the embedded store" in listed.stderr
    assert "File exists" in listed.stderr and "--data-dir" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_a_stalled_upload_holds_the_shutdown_no_longer_than_its_grace(tmp_path: Path) -> None:
    """Found in review: SIGTERM waited for ever on a gateway that sent its headers and one
    byte of its body (a second SIGTERM was ignored). Requests in progress now get
    TRACKER_SHUTDOWN_GRACE_SECONDS (20 by default; 1 here) and are closed unanswered: they
    were never acknowledged."""
    made = subprocess.run(
        [sys.executable, "-m", "tracker", "gateway", "add", "gw-slow", "--agency", "in-sbi",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("key (shown once, store it now): ")[1].split()[0]
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "tracker", "up", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TRACKER_SHUTDOWN_GRACE_SECONDS": "1"},
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/health", up, timeout=60)
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(
                b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Length: 100000\r\n\r\n["
            )
            time.sleep(0.5)  # the request is in the app, reading its body
            asked = time.monotonic()
            up.send_signal(signal.SIGTERM)
            ended = up.wait(timeout=30)
            took = time.monotonic() - asked
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert took < 10, took
    assert ended == 0  # a stop asked for, done: not 143, the death by a signal raised again


def test_a_stop_before_uvicorns_handlers_are_in_still_stops_the_server() -> None:
    """Found in review (2026-11-26): `_serve` put in handlers that only noted a signal, before
    uvicorn put in its own; a SIGTERM in that moment (~1 ms) was noted and the server ran on.
    Here the signal comes exactly then."""
    script = (
        "import os, signal, time\n"
        "import uvicorn\n"
        "from fastapi import FastAPI\n"
        "import tracker.cli as cli\n"
        "original = uvicorn.Server.run\n"
        "def run_after_a_stop(self, sockets=None):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.1)  # the handler runs\n"
        "    return original(self, sockets=sockets)\n"
        "uvicorn.Server.run = run_after_a_stop\n"
        "cli._serve(FastAPI(), cli._listen('127.0.0.1', 0), 1)\n"
        "print('stopped')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr[-2000:]
