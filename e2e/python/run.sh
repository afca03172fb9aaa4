#!/usr/bin/env bash
# e2e/python/run.sh: the Python SDK part of the end-to-end proof.
#
#  1. installs the pinned tools (requirements.txt) into the git-ignored venv e2e/.venv (skipped
#     when the venv was built from the same requirements.txt);
#  2. generates `gatehouse_client` from the committed openapi/openapi.json with
#     openapi-python-client into the git-ignored e2e/python/generated/; any warning, skipped
#     endpoint or dropped schema fails the step (--fail-on-warning, and the output is read too);
#  3. audits the generated SDK against the spec (check_generated.py: method names are the
#     operationIds, every declared response is parsed into its model, every schema has its model
#     and no copies, no `Any` where a schema belongs);
#  4. mypy --strict on scenario.py, conformance.py and the whole generated package;
#  5. runs scenario.py against a fresh server (e2e/lib.sh); conformance.py checks every answer
#     against the spec on the way.
# Every step runs even when an earlier one failed (so one run shows every finding); the part
# fails when any step fails. Each step has a time limit, so nothing hangs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib.sh"

VENV=$E2E_DIR/.venv
GEN=$HERE/generated
SPEC=$E2E_ROOT/openapi/openapi.json
FAILED=()
[ -f "$SPEC" ] || e2e_die "no spec at $SPEC"

e2e_ensure_venv "$VENV" "$HERE/requirements.txt" --exact
# The generator's post hooks (ruff) come from the venv.
export PATH=$VENV/bin:$PATH
export PYTHONDONTWRITEBYTECODE=1

echo "== python: openapi-python-client $(openapi-python-client --version | awk '{print $NF}') generate"
rm -rf "$GEN"
mkdir -p "$GEN"
gen_log=$E2E_OUT/python-generate.log
rc=0
(cd "$GEN" && e2e_timeout 120 openapi-python-client generate --path "$SPEC" --config "$HERE/generator.yaml" \
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
  echo "python: failed steps: ${FAILED[*]} (nothing else can run)"
  exit 1
fi

echo "== python: audit of the generated SDK against the spec"
rc=0
e2e_timeout 120 python "$HERE/check_generated.py" "$SPEC" "$GEN/gatehouse_client" >"$E2E_OUT/python-audit.log" 2>&1 || rc=$?
sed 's/^/   /' "$E2E_OUT/python-audit.log"
[ "$rc" -eq 0 ] || FAILED+=("audit")

echo "== python: mypy --strict on scenario.py, conformance.py and the generated package"
rc=0
(cd "$HERE" && MYPYPATH=$GEN e2e_timeout 300 mypy --config-file "$HERE/mypy.ini" --no-error-summary \
  --cache-dir "$E2E_OUT/mypy-cache" scenario.py conformance.py "$GEN/gatehouse_client") \
  >"$E2E_OUT/python-mypy.log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "   ok"
else
  sed 's/^/   | /' "$E2E_OUT/python-mypy.log"
  FAILED+=("mypy")
fi

echo "== python: scenario"
e2e_start_server
rc=0
GATEHOUSE_SPEC=$SPEC PYTHONPATH=$GEN:$HERE e2e_timeout 180 python "$HERE/scenario.py" 2>&1 | sed 's/^/   /' \
  || rc=$?
[ "$rc" -eq 0 ] || FAILED+=("scenario")

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "python: failed steps: ${FAILED[*]}"
  exit 1
fi
echo "python: all steps passed"
