#!/usr/bin/env bash
# e2e/python/run.sh: the Python SDK part of the end-to-end proof.
#
#  1. installs the pinned tools (requirements.txt) into the git-ignored venv e2e/.venv;
#  2. generates `gatehouse_client` from the committed openapi/openapi.json with
#     openapi-python-client into the git-ignored e2e/python/generated/; any warning, skipped
#     endpoint or dropped schema fails the part (--fail-on-warning, and the output is read too);
#  3. audits the generated SDK against the spec (check_generated.py: method names are the
#     operationIds, every declared response is parsed into its model, no `Any` where a schema
#     belongs);
#  4. type-checks scenario.py against the generated SDK with mypy --strict;
#  5. runs scenario.py against a fresh server (e2e/lib.sh).
# Every step runs even when an earlier one failed (so one run shows every finding); the part
# fails when any step fails.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib.sh"

VENV=$E2E_DIR/.venv
GEN=$HERE/generated
SPEC=$E2E_ROOT/openapi/openapi.json
FAILED=()

e2e_ensure_venv "$VENV" "$HERE/requirements.txt"
# The generator's post hooks (ruff) come from the venv.
export PATH=$VENV/bin:$PATH

echo "== python: openapi-python-client $("$VENV/bin/openapi-python-client" --version | awk '{print $NF}') generate"
rm -rf "$GEN"
mkdir -p "$GEN"
gen_log=$E2E_OUT/python-generate.log
rc=0
(cd "$GEN" && openapi-python-client generate --path "$SPEC" --config "$HERE/generator.yaml" \
  --meta none --output-path "$GEN/gatehouse_client" --fail-on-warning) >"$gen_log" 2>&1 || rc=$?
# Anything beyond the "Generating <path>" line is a warning or an error.
noise=$(grep -vE '^(Generating .*gatehouse_client)?$' "$gen_log" || true)
if [ "$rc" -ne 0 ] || [ -n "$noise" ]; then
  echo "   FAIL: the generator exited $rc and printed:"
  sed 's/^/   | /' "$gen_log"
  FAILED+=("generate")
else
  echo "   ok: no warnings"
fi
if [ ! -f "$GEN/gatehouse_client/__init__.py" ]; then
  echo "   FAIL: no client was generated"
  exit 1
fi

echo "== python: audit of the generated SDK against the spec"
if ! "$VENV/bin/python" "$HERE/check_generated.py" "$SPEC" "$GEN/gatehouse_client" | sed 's/^/   /'; then
  FAILED+=("audit")
fi

echo "== python: mypy --strict scenario.py"
if (cd "$HERE" && MYPYPATH=$GEN "$VENV/bin/mypy" --config-file "$HERE/mypy.ini" --strict --no-error-summary \
      --cache-dir "$E2E_OUT/mypy-cache" scenario.py) >"$E2E_OUT/python-mypy.log" 2>&1; then
  echo "   ok"
else
  sed 's/^/   | /' "$E2E_OUT/python-mypy.log"
  FAILED+=("mypy")
fi

echo "== python: scenario"
e2e_start_server
if ! PYTHONPATH=$GEN "$VENV/bin/python" "$HERE/scenario.py" | sed 's/^/   /'; then
  FAILED+=("scenario")
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "python: failed steps: ${FAILED[*]}"
  exit 1
fi
echo "python: all steps passed"
