#!/usr/bin/env bash
# The project's one test command: installs what is missing, then lint, types and every test
# (unit, and integration against a real Kafka broker and chdb). Non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy --strict"; mypy .
echo "== dashboards: generated JSON against Grafana's published types (tsc)"
bash dashboards/typecheck/run.sh
echo "== pytest"; pytest -q "$@"
