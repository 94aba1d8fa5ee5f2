"""A free loopback port for a server a test starts, and `tracker up` started on one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until `url` answers 200; fails if `proc` exits first or nothing answers in time."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing answered at {url}"
        time.sleep(0.3)


@contextmanager
def tracker_up(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`tracker up` on `data_dir` in a process of its own (with `env` over this one's), once it
    answers /v1/health; its URL. Stopped when the block ends."""
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "tracker", "up", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/health", up, timeout=60)
        yield url
    finally:
        up.terminate()
        up.wait(timeout=30)
