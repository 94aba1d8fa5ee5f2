#!/usr/bin/env bash
# The project's one test command: installs what is missing, then lint, types and every test
# (unit, and integration against a real Kafka broker and chdb). Non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

# One command a line: under `set -e` a failure that is not the last of an `&&` list does not
# stop the script (found in review: ruff's findings were skipped and the run passed).
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"; mypy .
echo "== dashboards: generated JSON against Grafana's published types (tsc)"
bash dashboards/typecheck/run.sh
echo "== pytest"; pytest -q "$@"
