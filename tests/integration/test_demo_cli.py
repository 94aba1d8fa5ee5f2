"""`tracker demo`: one demo gateway, whose key is issued anew on every run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.ports import free_port, tracker_up, wait_http


def _tracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _demo_key(data_dir: Path) -> str:
    run = _tracker("demo", "--no-serve", "--days", "1", "--data-dir", str(data_dir))
    assert run.returncode == 0, run.stderr
    found = re.search(r"demo gateway tracker-demo key: (\S+)", run.stdout)
    assert found, run.stdout
    # No URL of a server that --no-serve does not start (found in review).
    assert "http://" not in run.stdout and "not serving (--no-serve)" in run.stdout, run.stdout
    return found.group(1)


def test_each_demo_run_replaces_the_demo_key(tmp_path: Path) -> None:
    """Found in review: every run registered another all-agency gateway, and every key an
    earlier run printed stayed valid."""
    first, second = _demo_key(tmp_path), _demo_key(tmp_path)
    assert first != second
    listed = _tracker("gateway", "list", "--data-dir", str(tmp_path))
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["tracker-demo"]
    with tracker_up(tmp_path) as url:

        def whoami(key: str) -> int:
            return httpx.post(f"{url}/v1/gateway/whoami",
                              headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code  # fmt: skip

        assert (whoami(second), whoami(first)) == (200, 401)
    # Revoked by its operator, the demo gateway is not brought back: exit 2, no key, no trace.
    revoked = _tracker("gateway", "revoke", "tracker-demo", "--data-dir", str(tmp_path))
    assert revoked.returncode == 0, revoked.stderr
    again = _tracker("demo", "--no-serve", "--days", "1", "--data-dir", str(tmp_path))
    assert again.returncode == 2 and "no demo key is issued" in again.stderr, again.stderr
    assert "key:" not in again.stdout and "Traceback" not in again.stderr


def test_the_serving_demo_names_its_store_and_a_stop_ends_it_cleanly(tmp_path: Path) -> None:
    """Found in review (2026-11-26): `up`'s banner names the store in use, `demo`'s did not;
    and SIGTERM ended it with 143 (uvicorn raises the signal again after its shutdown)."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "tracker", "demo", "--days", "1", "--port", str(port),
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        banner = ""
        for line in demo.stdout:  # ends at EOF should the process die first
            if line.startswith("headline: "):
                banner = line
                break
        assert f"(data in chdb://{tmp_path / 'chdb'}" in banner, banner
        wait_http(f"http://127.0.0.1:{port}/v1/health", demo)  # type: ignore[arg-type]
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
