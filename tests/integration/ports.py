"""A free loopback port for a server a test starts, and `tracker up` started on one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def tracker_up(data_dir: Path) -> Iterator[str]:
    """`tracker up` on `data_dir` in a process of its own, once it answers /v1/health; its URL.
    Stopped when the block ends."""
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "tracker", "up", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert up.poll() is None and time.monotonic() < deadline, "tracker up did not start"
            time.sleep(0.3)
        yield url
    finally:
        up.terminate()
        up.wait(timeout=30)
