"""While `tracker up` holds the embedded store, a state-changing command refuses with exit
code 2 and says why, instead of a trace (chdb: one process per data directory)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.ports import free_port


def test_gateway_add_refuses_while_up_holds_the_store(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "tracker", "up", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert up.poll() is None and time.monotonic() < deadline, "tracker up did not start"
            time.sleep(0.3)
        add = subprocess.run(
            [sys.executable, "-m", "tracker", "gateway", "add", "gw-x", "--agency", "in-sbi",
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert add.returncode == 2
        assert "held by another process" in add.stderr
        assert "Traceback" not in add.stderr
    finally:
        up.terminate()
        up.wait(timeout=30)
