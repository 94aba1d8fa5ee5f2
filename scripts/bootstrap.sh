#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Java 17+ and Maven (Debian packages) when missing, a Python virtualenv in .venv with the
# project and its dev tools, and Apache Kafka's jars (resolved from Maven Central, cached).
# `bootstrap.sh python`: the virtualenv only, all the embedded demo needs (scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
only=${1:-all}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python first: checked before anything is installed for the rest.
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: installing Python 3 (Debian package)"
  apt_install python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Python 3.11+ is required (found: $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
if [ "$only" = python ]; then
  :  # the embedded demo: no broker, browser, Node.js or compose
elif ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  echo "bootstrap: installing Java 17 (openjdk-17-jre-headless)"
  apt_install openjdk-17-jre-headless
fi
if [ "$only" != python ] && ! command -v mvn >/dev/null 2>&1; then
  echo "bootstrap: installing Maven"
  apt_install maven
fi

# Headless Chromium for the transparency page test, Node.js for the dashboards' type check.
if [ "$only" != python ] && ! command -v chromium >/dev/null 2>&1; then
  echo "bootstrap: installing Chromium (Debian package)"
  apt_install chromium
fi
if [ "$only" != python ] && { ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; }; then
  echo "bootstrap: installing Node.js and npm"
  apt_install nodejs npm
fi

# docker-compose only parses deploy/docker-compose.yml in the tests (no engine runs here).
if [ "$only" != python ] && ! docker compose version >/dev/null 2>&1 \
    && ! command -v docker-compose >/dev/null 2>&1; then
  echo "bootstrap: installing docker-compose (to check deploy/ files)"
  apt_install docker-compose
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || { apt_install python3-venv && "$PYTHON" -m venv .venv; }
fi
# Reinstall only when the dependency list or pins changed since the last successful install.
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # constraints.txt pins the versions the suite was last run with (generated files such as the
  # JSON Schema depend on them); new dependencies float until it is regenerated.
  .venv/bin/python -m pip install -q -e '.[dev]' -c constraints.txt
  rm -f .venv/.installed-* && touch "$stamp"
fi

if [ "$only" = python ]; then
  echo "bootstrap: ready (.venv)"
  exit 0
fi
.venv/bin/python deploy/kafka/broker.py fetch >/dev/null
echo "bootstrap: ready (.venv, Java $(java_major), Kafka jars cached)"
