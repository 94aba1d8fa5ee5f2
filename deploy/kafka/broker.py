#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

Usage:
    broker.py fetch
    broker.py start --dir DIR [--port N] [--timeout S]   # prints 127.0.0.1:PORT
    broker.py stop --dir DIR [--timeout S]
    broker.py kill --dir DIR
    broker.py status --dir DIR                           # exit 0 if running

Importable too: fetch(), start(dir, port=None, timeout=60.0) -> bootstrap, stop(dir),
kill(dir), status(dir) -> bool, bootstrap(dir) -> str. Errors raise BrokerError
(MissingToolError when java/mvn are absent); the CLI maps those to exit codes 1 and 2.
Needs java and mvn on PATH; this script never installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

KAFKA_VERSION = "4.1.1"  # keep in step with <kafka.version> in pom.xml
POM = Path(__file__).resolve().with_name("pom.xml")

# Popen objects of brokers started by this process. Holding them lets us reap our own
# children (a SIGKILLed child stays a zombie, and "alive" to kill(pid, 0), until reaped)
# and keeps Popen.__del__ from warning that the detached broker is "still running".
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


class MissingToolError(BrokerError):
    """java or mvn is not installed."""


def cache_dir() -> Path:
    """Where the broker jars live: $TRACKER_KAFKA_CACHE (default ~/.cache/tracker-kafka)."""
    root = os.environ.get("TRACKER_KAFKA_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "tracker-kafka"
    return base / KAFKA_VERSION / "libs"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        what = "a Java 17+ runtime (e.g. openjdk-17-jre-headless)" if name == "java" else "Maven"
        raise MissingToolError(f"'{name}' not found on PATH: install {what} to run the broker")
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603


def fetch() -> Path:
    """Resolve the broker classpath with Maven into cache_dir(); no-op when already complete."""
    libs = cache_dir()
    marker = libs.parent / "libs.complete"
    # The marker records which pom produced the jars, so editing the pom refetches.
    want = hashlib.sha256(POM.read_bytes() + KAFKA_VERSION.encode()).hexdigest()

    def complete() -> bool:
        return marker.is_file() and marker.read_text().strip() == want

    if complete():
        return libs
    mvn, _ = _tool("mvn"), _tool("java")  # Maven needs java too; fail before locking
    libs.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may fetch at once: one copies, the others wait and reuse it.
    # The lock goes with the file descriptor, so closing the file releases it.
    with (libs.parent / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return libs
        # No marker means a previous copy never finished: start from an empty directory
        # so truncated or stale jars cannot end up on the classpath.
        shutil.rmtree(libs, ignore_errors=True)
        goal = ["dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
        res = _run([mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={KAFKA_VERSION}", *goal])
        if res.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
            raise BrokerError(f"mvn dependency:copy-dependencies failed:\n{tail}")
        marker.write_text(want + "\n")
    return libs


def _jvm(libs: Path) -> list[str]:
    heap = os.environ.get("TRACKER_KAFKA_HEAP", "512m")
    # slf4j-simple at warn keeps broker.log short; readiness does not depend on log text.
    log_level = "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"
    return [_tool("java"), f"-Xmx{heap}", log_level, "-cp", f"{libs}/*"]


def _write_props(path: Path, port: int, cport: int) -> None:
    # The settings verified for a single combined broker+controller node (KRaft).
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(path.parent / "data"),
        # Single node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # Tests join consumer groups constantly; the default 3 s delay only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # After `kill`, the new incarnation is refused (DUPLICATE_BROKER_REGISTRATION) until
        # the dead one's session expires: 3 s instead of the default 9 s speeds fault tests.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        # Retention is enforced within a second (default: 5 minutes), so a test can watch
        # the broker delete what has expired.
        "log.retention.check.interval.ms": "1000",
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def bootstrap(dir: Path) -> str:
    """The bootstrap address of the broker configured in dir (from its server.properties)."""
    return _prop(Path(dir), "advertised.listeners").split("://", 1)[1]


def _prop(dir: Path, key: str) -> str:
    for line in (dir / "server.properties").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    raise BrokerError(f"{key} missing from {dir / 'server.properties'}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as the JVM uses it, so our own last run's TIME_WAIT does not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int, props: Path) -> bool:
    if pid in _CHILDREN:  # poll() reaps our own child, so a killed broker is not a zombie
        return _CHILDREN[pid].poll() is None
    try:  # Linux-only, like the rest of the project's test setup
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # Zombies count as dead (PID 1 in a container may never reap them), and the command
    # line must name our properties file so a recycled pid is never mistaken for us.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"kafka.Kafka" in cmdline and str(props).encode() in cmdline


def _running_pid(dir: Path) -> int | None:
    try:
        pid = int((dir / "broker.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid, dir / "server.properties") else None


def _metadata_ready(port: int) -> bool:
    # Ready = a Metadata (v4) response listing at least one broker. Kafka 4.1 opens the
    # listener only once the broker is unfenced, so a TCP connect would do today, but
    # fenced brokers are left out of Metadata, so this stays right if that order changes,
    # and it proves a Kafka answers. Log lines are not used: we log at warn only and
    # their wording changes between Kafka versions.
    body = struct.pack(">hhih", 3, 4, 42, 7) + b"tracker" + struct.pack(">i?", 0, False)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            buf = b""
            while len(buf) < 16:  # size, correlation id, throttle ms, broker count
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
    except OSError:
        return False
    _, corr, _, brokers = struct.unpack_from(">iiii", buf)
    return bool(corr == 42 and brokers >= 1)


def _log_tail(dir: Path, lines: int = 40) -> str:
    try:
        return "\n".join((dir / "broker.log").read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no broker.log)"


def _signal_and_wait(dir: Path, pid: int, sig: signal.Signals, timeout: float) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the broker leads its own session, so pgid == pid
    deadline = time.monotonic() + timeout
    while _alive(pid, dir / "server.properties"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def start(dir: Path, port: int | None = None, timeout: float = 60.0) -> str:
    """Start (or restart, keeping ports and data) the broker in dir; return its bootstrap."""
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    props = dir / "server.properties"
    if not props.exists():
        # Both sockets stay open until both ports are picked, so the kernel hands out two
        # different ones; the broker binds them moments later (a small, accepted race).
        with socket.socket() as b, socket.socket() as c:
            b.bind(("127.0.0.1", 0))
            c.bind(("127.0.0.1", 0))
            _write_props(props, port or b.getsockname()[1], c.getsockname()[1])
    address = bootstrap(dir)
    if port is not None and address != f"127.0.0.1:{port}":
        raise BrokerError(f"{dir} is already configured for {address}, not port {port}")
    broker_port = int(address.rsplit(":", 1)[1])
    (dir / "bootstrap").write_text(address)
    pid = _running_pid(dir)
    if pid is None:  # when it already runs, start only waits for it to be ready
        pid = _launch(dir, props)
    deadline = time.monotonic() + timeout  # counts from launch: a cold fetch can be slow
    while not _metadata_ready(broker_port):
        if not _alive(pid, props):
            code = _CHILDREN[pid].returncode if pid in _CHILDREN else "?"
            problem = f"broker exited early (exit code {code})"
        elif time.monotonic() > deadline:
            problem = f"broker not ready after {timeout:g}s"
        else:
            time.sleep(0.2)
            continue
        _signal_and_wait(dir, pid, signal.SIGKILL, 10.0)
        (dir / "broker.pid").unlink(missing_ok=True)
        raise BrokerError(f"{problem}; tail of {dir / 'broker.log'}:\n{_log_tail(dir)}")
    return address


def _launch(dir: Path, props: Path) -> int:
    # Refuse taken ports up front: otherwise whatever holds the broker port (maybe another
    # Kafka) could answer the readiness probe before our JVM dies of "address in use".
    busy = [p for p in re.findall(r":(\d+)", _prop(dir, "listeners")) if not _port_free(int(p))]
    if busy:
        raise BrokerError(f"127.0.0.1 port(s) {', '.join(busy)} already in use ({dir})")
    java = _jvm(fetch())
    if not (dir / "data" / "meta.properties").exists():  # formatted dirs keep their data
        # No --standalone: it conflicts with controller.quorum.voters, which we set.
        run = _run([*java, "kafka.tools.StorageTool", "random-uuid"])
        cluster_id = (run.stdout.split() or [""])[-1] if run.returncode == 0 else ""
        if cluster_id:
            cmd = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
            run = _run([*java, *cmd])
        if run.returncode != 0 or not cluster_id:
            raise BrokerError(f"formatting {dir} failed:\n{run.stdout}{run.stderr}")

    with (dir / "broker.log").open("ab") as log:
        log.write(f"--- broker.py start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(  # noqa: S603
            [*java, "kafka.Kafka", str(props)],
            cwd=dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    (dir / "broker.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _halt(dir: Path, sig: signal.Signals, timeout: float) -> None:
    dir = Path(dir).resolve()
    pid = _running_pid(dir)
    if pid is not None:
        done = _signal_and_wait(dir, pid, sig, timeout)
        if not done and sig != signal.SIGKILL:
            done = _signal_and_wait(dir, pid, signal.SIGKILL, 10.0)
        if not done:
            raise BrokerError(f"broker pid {pid} did not exit")
    (dir / "broker.pid").unlink(missing_ok=True)


def stop(dir: Path, timeout: float = 30.0) -> None:
    """SIGTERM the broker (SIGKILL after timeout) and wait for it; fine if not running."""
    _halt(dir, signal.SIGTERM, timeout)


def kill(dir: Path) -> None:
    """SIGKILL the broker (an unclean crash, for fault tests); fine if not running."""
    _halt(dir, signal.SIGKILL, 10.0)


def status(dir: Path) -> bool:
    """True if the broker process for dir is running (not necessarily ready)."""
    return _running_pid(Path(dir).resolve()) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="resolve the broker jars into the cache")
    for name in ("start", "stop", "kill", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, required=True)
        if name == "start":
            p.add_argument("--port", type=int, default=None)
        if name in ("start", "stop"):
            p.add_argument("--timeout", type=float, default=60.0 if name == "start" else 30.0)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(fetch())
        elif args.cmd == "start":
            print(start(args.dir, args.port, args.timeout))
        elif args.cmd == "stop":
            stop(args.dir, args.timeout)
        elif args.cmd == "kill":
            kill(args.dir)
        else:
            return 0 if status(args.dir) else 1
    except MissingToolError as exc:
        print(f"broker.py: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"broker.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
