#!/usr/bin/env bash
# Spec fuzzing: Schemathesis against a live release gatehouse, checking every answer against the
# OpenAPI document that the server itself serves at /openapi.json.
#
#   e2e/fuzz/run.sh                   # what CI runs
#   GATEHOUSE_BIN=/tmp/fuzz-bin/gatehouse e2e/fuzz/run.sh
#
# Environment:
#   GATEHOUSE_BIN        server binary (default: target/release/gatehouse under the repo root)
#   FUZZ_SEED            Hypothesis seed (default 20261204): the same seed generates the same cases
#   FUZZ_MAX_EXAMPLES    test cases per operation in the broad runs (default 100)
#   FUZZ_CHECKS          Schemathesis checks (default: the five response checks below); `all` adds
#                        the request-side checks (positive/negative data, unsupported methods, ...)
#   FUZZ_ONLY            run only the runs whose name matches this bash regex (e.g. '^admin')
#   FUZZ_REPORT_DIR      where the reports go (default e2e/fuzz/reports, git-ignored)
#   FUZZ_KEEP=1          keep the servers' temporary data, policy copies and logs
#
# Needs python3 (with venv) only: Schemathesis comes from PyPI, pinned in requirements.txt, into
# the git-ignored venv e2e/.venv-fuzz/. Exits non-zero when any run finds a failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
VENV=$ROOT/e2e/.venv-fuzz
SEED=${FUZZ_SEED:-20261204}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-100}
# All the checks that judge the server's answers. (The other Schemathesis checks judge whether the
# schema describes what the server accepts; FUZZ_CHECKS=all turns them on too.)
CHECKS=${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance}
REPORTS=${FUZZ_REPORT_DIR:-$HERE/reports}
ADMIN_PASSWORD=fuzz-admin-password-1
PY=python3
LIB=$HERE/fuzzlib.py
RUN_TIMEOUT=240            # seconds, per Schemathesis run (a whole pass takes about 2.5 minutes)
export PYTHONDONTWRITEBYTECODE=1

if [ ! -x "$BIN" ]; then
  echo "fuzz: no gatehouse binary at $BIN (build it with 'cargo build --release' or set GATEHOUSE_BIN)" >&2
  exit 2
fi

# ---- Schemathesis, pinned, in a venv that is rebuilt whenever requirements.txt changes ------------
ensure_venv() {
  local want have
  want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
  have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
  if [ -x "$VENV/bin/schemathesis" ] && [ "$want" = "$have" ]; then
    return
  fi
  echo "== fuzz: installing Schemathesis into $VENV"
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately.
    (apt-get update && apt-get install -y python3-venv) >/dev/null
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$HERE/requirements.txt"
  echo "$want" >"$VENV/.requirements.sha256"
}
ensure_venv
ST=$VENV/bin/schemathesis
ST_VERSION=$("$ST" --version | awk '{print $NF}')

# ---- servers: one fresh server per run (own data dir, own copy of policies/) ----------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-fuzz.XXXXXX")
SERVER_PID=
cleanup() {
  stop_server
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    echo "fuzz: kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME [SERVE_ARGS...]: sets BASE and SERVER_PID. The access-token lifetime is raised
# to two hours so that no token expires during a run (the default 15 minutes would be close on a
# slow machine). The policy copy gets one file that does not compile, so that GET /policies and
# POST /policies/reload also answer about a policy with an error and no loaded version.
start_server() {
  local dir=$WORK/$1
  shift
  mkdir -p "$dir"
  cp -R "$ROOT/policies" "$dir/policies"
  echo 'if (' >"$dir/policies/fuzzbroken.rhai"
  GATEHOUSE_ADMIN_PASSWORD=$ADMIN_PASSWORD RUST_LOG=${RUST_LOG:-warn} \
    "$BIN" serve --bind 127.0.0.1:0 --data-dir "$dir/data" --policies "$dir/policies" \
    --access-token-ttl 7200 "$@" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  BASE=$("$PY" "$LIB" wait-ready "$dir/server.log" "$SERVER_PID" 30)
}

# Servers run one at a time; only the one this script started is stopped, by its pid.
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}

api() { "$PY" "$LIB" call "$BASE" "$@"; }

# add_user TOKEN NAME PASSWORD ROLE
add_user() {
  api "$1" POST /users 201 "{\"username\":\"$2\",\"password\":\"$3\",\"roles\":[\"$4\"]}" >/dev/null
}

# ---- Schemathesis configuration, written per run -------------------------------------------------
# Dictionaries feed real names and ids into some of the generated values (with the given
# probability; the rest stays schema-derived), so that the fuzzer reaches existing kinds, policies,
# documents and users instead of only ever getting 404.
# write_config FILE USERNAMES USERNAME_PROBABILITY DOC_IDS [EXTRA_TOML]
write_config() {
  cat >"$1" <<EOF
# generated by e2e/fuzz/run.sh
seed = $SEED
hooks = "$HERE/hooks.py"  # realistic policy sources and token forms next to the generated ones
[cache]
enabled = false          # no crash cache: a run must not depend on earlier runs

[generation]
max-examples = $MAX_EXAMPLES
database = "none"        # no Hypothesis example database either

[dictionaries.kinds]
values = ["notes", "tasks"]
[dictionaries.policy_names]
# evaluate and reload are valid names that are also the paths of other operations.
values = ["notes", "tasks", "_users", "_policies", "_keys", "lib/access", "fuzzkind", "fuzzbroken", "evaluate", "reload"]
[dictionaries.usernames]
values = [$2]
[dictionaries.doc_ids]
values = [$4]
[dictionaries.actions]
values = ["create", "read", "list", "update", "delete", "evaluate", "replay"]
[dictionaries.sources]
values = ["true", "false", "if (", "#{ allow: false, reason: \\"no\\" }", "claims.sub == \\"admin\\""]
[dictionaries.new_usernames]
values = ["fuzz-new-1", "fuzz.new@2", "Fuzz_3"]
[dictionaries.passwords]
values = ["fuzz-password-1"]

[parameters]
"path.kind" = { dictionary = "kinds", probability = 0.7 }
"path.name" = { dictionary = "policy_names", probability = 0.7 }
"path.username" = { dictionary = "usernames", probability = $3 }
"path.id" = { dictionary = "doc_ids", probability = 0.6 }
"body.kind" = { dictionary = "kinds", probability = 0.7 }
"body.action" = { dictionary = "actions", probability = 0.7 }
"body.source" = { dictionary = "sources", probability = 0.5 }
"body.username" = { dictionary = "new_usernames", probability = 0.5 }
"body.password" = { dictionary = "passwords", probability = 0.5 }

# PUT /policies/{name}: mostly names that are free (201), next to shipped ones (tests gate: 422).
[dictionaries.put_names]
values = ["fuzzkind", "fuzz-a", "fuzz_b", "notes", "_users", "evaluate"]
[[operations]]
include-operation-id = "put_policy"
parameters = { "path.name" = { dictionary = "put_names", probability = 0.8 } }
${5:-}
EOF
}

# ---- one Schemathesis run ------------------------------------------------------------------------
RESULTS=()
FAILED=0
PASSED=0

# fuzz NAME TOKEN ME CONFIG [schemathesis filter options...]
# ME is the token's user name: after the run, GET /users/ME must not be 401 (a broad run must not
# have logged its own caller out, or everything after that point was a 401 and the run tested much
# less than it claims). ME is `-` for the runs whose point is to end the caller's token.
fuzz() {
  local name=$1 token=$2 me=$3 config=$4
  shift 4
  local out=$REPORTS/$name
  rm -rf "$out"
  mkdir -p "$out"
  echo "== fuzz: $name"
  local rc=0 start=$SECONDS
  # The working directory is the run's own, so nothing (.hypothesis/) lands in the repo.
  (cd "$WORK" && FUZZ_LOGIN_USER=fuzzuser FUZZ_LOGIN_PASSWORD=fuzzuser-password-1 timeout "$RUN_TIMEOUT" "$ST" --config-file "$config" run "$BASE/openapi.json" \
      --checks "$CHECKS" \
      --continue-on-failure \
      --request-timeout 10 \
      --header "Authorization: Bearer $token" \
      --no-color \
      --report junit,ndjson,json --report-dir "$out" \
      "$@") >"$out/schemathesis.txt" 2>&1 || rc=$?
  # The Schemathesis summary block, then one line per distinct failure.
  sed -n '/^=* SUMMARY =*$/,$p' "$out/schemathesis.txt" | sed -n '/^Failures:/,/^Test cases:/p' \
    | sed '/^Test cases:/d;/^$/d;/st explain/d' | sed 's/^/   /' || true
  "$PY" "$LIB" summarize "$name" "$out" >"$out/summary.txt" 2>&1 || true
  if [ "$me" != - ] && ! api "$token" GET "/users/$me" '!401' >/dev/null 2>&1; then
    echo "   the token of \`$me\` stopped working during this run: its results are hollow" \
      | tee -a "$out/summary.txt"
    [ "$rc" -ne 0 ] || rc=1
  fi
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ]; then
      echo "   (timed out after $RUN_TIMEOUT s)" | tee -a "$out/summary.txt"
    fi
    cat "$out/summary.txt"
    echo "   full output: $out/schemathesis.txt"
    RESULTS+=("FAIL  $name ($((SECONDS - start)) s, exit $rc)")
    FAILED=$((FAILED + 1))
  else
    head -1 "$out/summary.txt"
    RESULTS+=("ok    $name ($((SECONDS - start)) s)")
    PASSED=$((PASSED + 1))
  fi
}

selected() { [[ $1 =~ ${FUZZ_ONLY:-.} ]]; }

# Operations that change state in a way that would spoil the rest of a run, and so have runs of
# their own (below):
#  - update_user, delete_user, revoke_user_tokens: on the caller's own name they end the caller's
#    token (a new token version, a disabled or deleted user); on another admin they can lock the
#    caller out of a whole group of operations.
#  - delete_policy: deleting `_users.rhai` or `_policies.rhai` turns every later /users or /policies
#    call into 403, deleting `notes.rhai` every /resources/notes call into 404.
# Checked and kept in the broad runs: POST /keys/rotate (the old key keeps verifying, so the
# caller's token survives), PUT /policies/{name} (every shipped policy has tests that gate a new
# version, so random sources are refused with 422; new names only add kinds), POST /token/revoke
# (the fuzzer never sees the caller's token). fuzz() checks afterwards that the token still works.
DESTRUCTIVE=(update_user delete_user revoke_user_tokens delete_policy)
EXCLUDE_DESTRUCTIVE=()
for op in "${DESTRUCTIVE[@]}"; do EXCLUDE_DESTRUCTIVE+=(--exclude-operation-id "$op"); done

# prepare_server NAME [SERVE_ARGS...]: a fresh server with the users and documents the runs refer
# to. Sets ADMIN_TOKEN, USER_TOKEN, OPERATOR_TOKEN and DOC_IDS.
prepare_server() {
  start_server "$@"
  ADMIN_TOKEN=$("$PY" "$LIB" login "$BASE" admin "$ADMIN_PASSWORD")
  add_user "$ADMIN_TOKEN" fuzzuser fuzzuser-password-1 user
  # A second admin that the fuzzer is never told about: it authenticates the runs that may
  # disable, delete or log out `admin` itself.
  add_user "$ADMIN_TOKEN" fuzz-operator fuzz-operator-password-1 admin
  add_user "$ADMIN_TOKEN" victim-user victim-password-1 user
  add_user "$ADMIN_TOKEN" victim-admin victim-password-2 admin
  USER_TOKEN=$("$PY" "$LIB" login "$BASE" fuzzuser fuzzuser-password-1)
  OPERATOR_TOKEN=$("$PY" "$LIB" login "$BASE" fuzz-operator fuzz-operator-password-1)
  local a b c
  a=$(api "$ADMIN_TOKEN" POST /resources/notes 201 '{"title":"admin note"}')
  b=$(api "$USER_TOKEN" POST /resources/notes 201 '{"title":"user note","public":true}')
  c=$(api "$ADMIN_TOKEN" POST /resources/tasks 201 '{"title":"admin task","assignee":"fuzzuser"}')
  DOC_IDS="\"$a\", \"$b\", \"$c\""
}

mkdir -p "$REPORTS"
echo "== fuzz: Schemathesis $ST_VERSION, seed $SEED, $MAX_EXAMPLES examples per operation, binary $BIN"
echo "   checks: $CHECKS"
T0=$SECONDS

# 1, 2. Every operation but the destructive ones, as admin and as a plain user, with all phases
# (examples, coverage, fuzzing, and stateful: chains along the links Schemathesis infers from
# Location headers and from the data one operation returns and another takes).
for role in admin user; do
  name=$role
  selected "$name" || continue
  prepare_server "$name"
  if [ $role = admin ]; then token=$ADMIN_TOKEN; me=admin; else token=$USER_TOKEN; me=fuzzuser; fi
  write_config "$WORK/$name.toml" '"admin", "fuzzuser", "victim-user", "nobody"' 0.7 "$DOC_IDS"
  fuzz "$name" "$token" "$me" "$WORK/$name.toml" "${EXCLUDE_DESTRUCTIVE[@]}"
  stop_server
done

# 3, 4. The user-changing operations against other users (the built-in `admin` among them), next to
# the operations that create and read users so that chains reach them. The admin side runs as
# `fuzz-operator`, whose name is in no dictionary and no example, so the fuzzer cannot lock the run
# out by disabling, deleting or logging out its own caller (that is what runs 7-12 are for).
# Schemathesis would otherwise learn the caller's name two ways, both switched off here:
#  - it decodes the Bearer JWT and seeds its `sub` claim as a `username` value, and it reuses values
#    from earlier answers (extra data sources): `extra-data-sources.responses = false`;
#  - GET /users lists the caller: not selected here (it has its broad runs above).
# Stateful chains (POST /users -> PATCH/DELETE/revoke of the user just created) still run.
NO_POOL='
[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false'

USER_OPS=(--include-operation-id create_user --include-operation-id get_user
          --include-operation-id update_user --include-operation-id delete_user
          --include-operation-id revoke_user_tokens)
for role in admin user; do
  name=$role-user-changes
  selected "$name" || continue
  prepare_server "$name"
  if [ $role = admin ]; then token=$OPERATOR_TOKEN; me=fuzz-operator; else token=$USER_TOKEN; me=fuzzuser; fi
  write_config "$WORK/$name.toml" '"admin", "victim-user", "victim-admin", "nobody"' 0.8 "$DOC_IDS" "$NO_POOL"
  fuzz "$name" "$token" "$me" "$WORK/$name.toml" "${USER_OPS[@]}"
  stop_server
done

# 5, 6. Deleting policies, next to the operations that read and write them. Deleting one changes
# what the others answer (403 once `_policies` is gone): every answer is still checked.
POLICY_OPS=(--include-operation-id delete_policy --include-operation-id get_policy_source
            --include-operation-id put_policy --include-operation-id get_policy_history
            --include-operation-id list_policies)
for role in admin user; do
  name=$role-policy-deletes
  selected "$name" || continue
  prepare_server "$name"
  if [ $role = admin ]; then token=$ADMIN_TOKEN; me=admin; else token=$USER_TOKEN; me=fuzzuser; fi
  write_config "$WORK/$name.toml" '"admin"' 0.7 "$DOC_IDS"
  fuzz "$name" "$token" "$me" "$WORK/$name.toml" "${POLICY_OPS[@]}"
  stop_server
done

# 7-12. The caller acting on themselves, one operation per run on a fresh server: the first
# request that succeeds ends the token (that is the documented behaviour), and every later answer
# must be a conformant 401. Fewer examples: after the first success there is little left to learn.
for role in admin user; do
  for op in update_user delete_user revoke_user_tokens; do
    name=$role-self-$op
    selected "$name" || continue
    prepare_server "$name"
    if [ $role = admin ]; then token=$ADMIN_TOKEN; me=admin; else token=$USER_TOKEN; me=fuzzuser; fi
    write_config "$WORK/$name.toml" "\"$me\"" 1.0 "$DOC_IDS"
    fuzz "$name" "$token" - "$WORK/$name.toml" --include-operation-id "$op" --max-examples 25
    stop_server
  done
done

# 13. The key operations with an asymmetric algorithm: with the default HS256 the JWKS is empty,
# so its keys (and rotation that adds one) are only seen here.
name=admin-eddsa-keys
if selected "$name"; then
  prepare_server "$name" --jwt-algorithm EdDSA
  write_config "$WORK/$name.toml" '"admin"' 0.7 "$DOC_IDS"
  fuzz "$name" "$ADMIN_TOKEN" admin "$WORK/$name.toml" \
    --include-operation-id get_jwks --include-operation-id get_openid_configuration \
    --include-operation-id rotate_keys --include-operation-id issue_token \
    --include-operation-id revoke_token
  stop_server
fi

echo
echo "== fuzz summary (Schemathesis $ST_VERSION, seed $SEED, $((SECONDS - T0)) s; reports in $REPORTS)"
for line in "${RESULTS[@]}"; do echo "   $line"; done
echo "fuzz: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
