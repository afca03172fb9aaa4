#!/usr/bin/env bash
# e2e/ts/run.sh: the TypeScript SDK part of the end-to-end proof.
#
#  1. `npm ci` from the committed package-lock.json (skipped when node_modules already matches);
#  2. openapi-typescript generates generated/schema.d.ts from the committed openapi/openapi.json;
#     any output beyond its two normal lines (a warning or an error) fails the part;
#  3. audit.mjs writes generated/audit.ts: a compile-time assertion per operation, request body
#     and declared response (typed as the named schema, never any/unknown);
#  4. `tsc --noEmit` (strict) type-checks scenario.ts, schema.d.ts and audit.ts;
#  5. tsc compiles scenario.ts to build/, and Node runs it against a fresh server (e2e/lib.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib.sh"

SPEC=$E2E_ROOT/openapi/openapi.json
FAILED=()
e2e_ensure_node_modules "$HERE"
cd "$HERE"
BIN=$HERE/node_modules/.bin

echo "== ts: openapi-typescript $(node -p 'require("./node_modules/openapi-typescript/package.json").version') -> generated/schema.d.ts"
rm -rf generated build
mkdir -p generated
gen_log=$E2E_OUT/ts-generate.log
rc=0
# NO_COLOR: plain text, so the check below sees every line as printed.
NO_COLOR=1 FORCE_COLOR=0 "$BIN/openapi-typescript" "$SPEC" -o generated/schema.d.ts >"$gen_log" 2>&1 || rc=$?
noise=$(grep -vE '^(✨ openapi-typescript [0-9.]+|🚀 .* → .*generated/schema\.d\.ts \[[0-9.]+m?s\])?$' "$gen_log" || true)
if [ "$rc" -ne 0 ] || [ -n "$noise" ] || [ ! -s generated/schema.d.ts ]; then
  echo "   FAIL: openapi-typescript exited $rc and printed:"
  sed 's/^/   | /' "$gen_log"
  FAILED+=("generate")
else
  echo "   ok: no warnings ($(wc -l <generated/schema.d.ts) lines)"
fi

echo "== ts: audit types (generated/audit.ts)"
node audit.mjs "$SPEC" generated/audit.ts | sed 's/^/   /'

echo "== ts: tsc --noEmit (strict) on scenario.ts + schema.d.ts + audit.ts"
if "$BIN/tsc" --noEmit -p . >"$E2E_OUT/ts-tsc.log" 2>&1; then
  echo "   ok"
else
  sed 's/^/   | /' "$E2E_OUT/ts-tsc.log"
  FAILED+=("tsc")
fi

echo "== ts: scenario (tsc -> build/scenario.js, node $(node --version))"
# Already type-checked above: this emit only transpiles.
if ! "$BIN/tsc" -p . --noEmitOnError false --skipLibCheck >"$E2E_OUT/ts-build.log" 2>&1 && [ ! -f build/scenario.js ]; then
  sed 's/^/   | /' "$E2E_OUT/ts-build.log"
  FAILED+=("build")
else
  e2e_start_server
  if ! node build/scenario.js | sed 's/^/   /'; then
    FAILED+=("scenario")
  fi
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "ts: failed steps: ${FAILED[*]}"
  exit 1
fi
echo "ts: all steps passed"
