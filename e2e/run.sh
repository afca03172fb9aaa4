#!/usr/bin/env bash
# e2e/run.sh: end-to-end proof of gatehouse through generated SDKs and a real browser.
#
#   e2e/run.sh [python|ts|browser|fuzz|all]...     # default: all
#   GATEHOUSE_BIN=/tmp/e2e-bin/gatehouse e2e/run.sh ts
#
# Parts (each starts its own fresh release server, see e2e/lib.sh):
#   python   openapi-python-client SDK from openapi/openapi.json: no generator warnings, an audit of
#            the generated code, mypy --strict, then the scenario (e2e/python/)
#   ts       openapi-typescript + openapi-fetch: no generator warnings, tsc --noEmit (strict) with
#            type assertions for every operation, then the scenario on Node (e2e/ts/)
#   browser  Swagger UI at /docs in Debian's chromium via playwright-core: Authorize, Try it out,
#            200, Logout, 401, no request to another host; screenshots in target/e2e/ (e2e/browser/)
#   fuzz     Schemathesis (PyPI) against live servers, every operation as admin and as a plain
#            user: no 5xx, every answer conforms to the spec; reports in e2e/fuzz/reports/ (e2e/fuzz/)
#
# Needs python3, node/npm (20+) and, for the browser part, apt-get (when /usr/bin/chromium is
# missing). Installs only pinned packages, into git-ignored places (e2e/.venv, e2e/*/node_modules);
# a second run reuses them. Prints one PASS/FAIL line per part with its time; exits 1 when any
# part fails. Logs: target/e2e/<part>.log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

parts=()
for arg in "${@:-all}"; do
  case $arg in
    all) parts+=(python ts browser fuzz) ;;
    python | ts | browser | fuzz) parts+=("$arg") ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: e2e/run.sh [python|ts|browser|fuzz|all]..." >&2; exit 2 ;;
  esac
done
# Fail early, once, when there is no server to test; the parts run in their own directories, so
# a relative GATEHOUSE_BIN is made absolute here.
GATEHOUSE_BIN=$(e2e_bin)
export GATEHOUSE_BIN

results=()
n_pass=0
n_fail=0
t_all=$(date +%s%N)
for part in "${parts[@]}"; do
  echo "==== e2e: $part"
  t0=$(date +%s%N)
  rc=0
  # A part that hangs is stopped (with its server and browser) after E2E_PART_TIMEOUT seconds.
  e2e_timeout "${E2E_PART_TIMEOUT:-1800}" "$HERE/$part/run.sh" 2>&1 | tee "$E2E_OUT/$part.log" || rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  if [ "$rc" -eq 0 ]; then
    results+=("PASS  $part  (${secs} s)")
    n_pass=$((n_pass + 1))
  else
    results+=("FAIL  $part  (${secs} s; log: target/e2e/$part.log)")
    n_fail=$((n_fail + 1))
  fi
done
total=$(awk -v a="$t_all" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')

echo
echo "==== e2e results (${total} s)"
printf '%s\n' "${results[@]}"
echo "e2e: $n_pass passed, $n_fail failed"
[ "$n_fail" -eq 0 ]
