#!/usr/bin/env bash
# One command from a fresh clone to a running demo on the embedded default (chdb under ./var).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh python  # the virtualenv: the demo needs no broker
exec .venv/bin/tracker demo "$@"
