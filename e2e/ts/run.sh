#!/usr/bin/env bash
# e2e/ts/run.sh: the TypeScript SDK part of the end-to-end proof.
#
#  1. `npm ci` from the committed package-lock.json (skipped when node_modules already matches);
#  2. openapi-typescript generates generated/schema.d.ts from the committed openapi/openapi.json;
#     any output beyond its two normal lines (a warning or an error) fails the step;
#  3. audit.mjs writes generated/audit.ts: a compile-time assertion per operation, request body,
#     declared response (typed as the named schema, never any/unknown/never) and error union;
#  4. tsc (strict) type-checks scenario.ts, conformance.ts, schema.d.ts and audit.ts and emits
#     build/; each error is shown with the source line (or audit assertion) it points at;
#  5. Node runs build/scenario.js against a fresh server (e2e/lib.sh); conformance.ts checks
#     every answer against the spec on the way.
# Every step runs even when an earlier one failed (so one run shows every finding); the part
# fails when any step fails. Each step has a time limit, so nothing hangs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib.sh"

SPEC=$E2E_ROOT/openapi/openapi.json
FAILED=()
[ -f "$SPEC" ] || e2e_die "no spec at $SPEC"
e2e_ensure_node_modules "$HERE"
cd "$HERE"
BIN=$HERE/node_modules/.bin

# tsc_explain LOG: the tsc errors, each followed by the source line it points at (and, for an
# assertion in generated/audit.ts, the comment above it that says what is asserted).
tsc_explain() {
  local file line
  while IFS= read -r err; do
    echo "   | $err"
    if [[ $err =~ ^([^\(]+)\(([0-9]+),[0-9]+\):\ error ]]; then
      file=${BASH_REMATCH[1]} line=${BASH_REMATCH[2]}
      [ -f "$file" ] || continue
      if [[ $file == generated/audit.ts ]]; then
        sed -n "$((line - 1))p" "$file" | sed 's/^ *\/\/ */   |     asserted: /'
      else
        sed -n "${line}p" "$file" | sed 's/^ */   |     at: /'
      fi
    fi
  done <"$1"
}

echo "== ts: openapi-typescript $(node -p 'require("./node_modules/openapi-typescript/package.json").version') -> generated/schema.d.ts"
rm -rf generated build
mkdir -p generated
gen_log=$E2E_OUT/ts-generate.log
rc=0
# NO_COLOR: plain text, so the check below sees every line as printed.
NO_COLOR=1 FORCE_COLOR=0 e2e_timeout 120 "$BIN/openapi-typescript" "$SPEC" -o generated/schema.d.ts >"$gen_log" 2>&1 || rc=$?
noise=$(grep -vE '^(✨ openapi-typescript [0-9.]+|🚀 .* → .*generated/schema\.d\.ts \[[0-9.]+m?s\])?$' "$gen_log" || true)
if [ "$rc" -ne 0 ] || [ -n "$noise" ] || [ ! -s generated/schema.d.ts ]; then
  echo "   FAIL: openapi-typescript exited $rc and printed:"
  sed 's/^/   | /' "$gen_log"
  FAILED+=("generate")
else
  echo "   ok: no warnings ($(wc -l <generated/schema.d.ts) lines)"
fi
if [ ! -s generated/schema.d.ts ]; then
  echo "ts: failed steps: ${FAILED[*]} (nothing else can run)"
  exit 1
fi

echo "== ts: audit types (generated/audit.ts)"
rc=0
e2e_timeout 60 node audit.mjs "$SPEC" generated/audit.ts 2>&1 | sed 's/^/   /' || rc=$?
[ "$rc" -eq 0 ] || FAILED+=("audit")

echo "== ts: tsc (strict) on scenario.ts, conformance.ts, schema.d.ts and audit.ts"
# One tsc run both type-checks and emits build/ (--noEmitOnError false: the scenario runs even when
# the type check fails, so one run shows the server's side too).
rc=0
e2e_timeout 300 "$BIN/tsc" -p . --noEmitOnError false >"$E2E_OUT/ts-tsc.log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "   ok"
else
  tsc_explain "$E2E_OUT/ts-tsc.log"
  FAILED+=("tsc")
fi

echo "== ts: scenario (build/scenario.js, node $(node --version))"
if [ ! -f build/scenario.js ]; then
  echo "   FAIL: tsc emitted no build/scenario.js"
  FAILED+=("build")
else
  e2e_start_server
  rc=0
  GATEHOUSE_SPEC=$SPEC e2e_timeout 180 node build/scenario.js 2>&1 | sed 's/^/   /' || rc=$?
  [ "$rc" -eq 0 ] || FAILED+=("scenario")
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "ts: failed steps: ${FAILED[*]}"
  exit 1
fi
echo "ts: all steps passed"
