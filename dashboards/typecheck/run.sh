#!/usr/bin/env bash
# Type-check dashboards/generated/*.json against Grafana's published dashboard types
# (@grafana/schema, pinned in package.json to the Grafana version the SDK build targets).
# Each dashboard becomes gen/<uid>.ts (`const dashboard: Json<Dashboard> = <json>`, plus each
# panel's options against its plugin's Options type) and tsc checks them. A self-test then
# breaks a copy on purpose and requires tsc to refuse it, so a check that passes everything
# cannot go unnoticed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund --loglevel=error
node gen.mjs
npx --no-install tsc -p tsconfig.json
echo "typecheck: dashboards/generated/*.json conform to @grafana/schema"

broken="$(mktemp -d)"
trap 'rm -rf "$broken" selftest' EXIT
# One deliberate fault per copy (tsc may report only the first fault of one literal).
node -e '
  const fs = require("fs");
  const [src, dst] = process.argv.slice(1);
  const faults = {
    "wrong-type": (d) => { d.panels[1].gridPos.h = "five"; },
    "unknown-option": (d) => { d.panels[1].options.colourMode = "value"; },
    "unknown-field": (d) => { d.refresh_rate = "1m"; },
    "bad-enum": (d) => { d.panels[1].options.graphMode = "sparkline"; },
  };
  for (const [name, fault] of Object.entries(faults)) {
    const d = JSON.parse(fs.readFileSync(src + "/ist-national.json", "utf8"));
    fault(d);
    fs.writeFileSync(`${dst}/${name}.json`, JSON.stringify(d));
  }
' ../generated "$broken"
node gen.mjs "$broken" selftest >/dev/null
out="$(npx --no-install tsc -p tsconfig.selftest.json 2>&1)" && {
  echo "typecheck self-test FAILED: tsc accepted deliberately broken dashboards" >&2
  exit 1
}
for name in wrong-type unknown-option unknown-field bad-enum; do
  if ! grep -q "^selftest/$name.ts(" <<<"$out"; then
    echo "typecheck self-test FAILED: tsc did not refuse the $name fault" >&2
    echo "$out" >&2
    exit 1
  fi
done
echo "typecheck self-test: each deliberate fault is refused"
