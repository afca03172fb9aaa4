#!/usr/bin/env bash
# bench/load.sh: wrk load runs of a release gatehouse, side by side with the reference peers
# (../shared/peers: seed-express and poem-baseline), in one run on one machine.
#
#   bench/load.sh [SCENARIO...]      default: peers token-flood reload scale memory
#
# Scenarios:
#   peers        guarded GET of one note (the shipped notes policy) at CONNS connections,
#                alternating gatehouse / poem-baseline / seed-express / seed-express cluster /
#                gatehouse with one worker thread, RUNS rounds
#   token-flood  guarded GET p99 at 8 connections, alone and while POST /token is flooded at
#                64 connections (argon2id on every login)
#   reload       30 s of guarded GETs at 64 connections while the policy is rewritten 100 times
#                (atomic saves, allow and deny in turn): every answer 200 or 403, no socket
#                errors, and the time from each save to its first answer in force
#   scale        guarded GET with 100,000 users and 1,000,000 documents against an empty store,
#                alternating, and listing page 1 against page 1,000 (limit=100) of the full store
#   memory       resident size after start with 100 policies, then over 1,000,000 guarded GETs
#
# Needs: cargo, wrk (installed with apt-get when missing), curl, python3, node + npm.
# Env: DUR=10 RUNS=3 WARM=3 CONNS=64 THREADS=2 WORK=target/bench PEERS=../shared/peers
#      SCALE_USERS=100000 SCALE_DOCS=1000000 OUT=<WORK>/results-<stamp>.txt
# Prints one table per scenario and appends every raw line to OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DUR=${DUR:-10} RUNS=${RUNS:-3} WARM=${WARM:-3} CONNS=${CONNS:-64} THREADS=${THREADS:-2}
WORK=${WORK:-$ROOT/target/bench}
PEERS=${PEERS:-$ROOT/../shared/peers}
SCALE_USERS=${SCALE_USERS:-100000} SCALE_DOCS=${SCALE_DOCS:-1000000}
for v in DUR RUNS WARM CONNS THREADS SCALE_USERS SCALE_DOCS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "load.sh: $v must be a positive whole number, not '${!v}'" >&2; exit 1; }
done
for s in "$@"; do
  case "$s" in peers|token-flood|reload|scale|memory) ;; *) echo "load.sh: unknown scenario $s (peers token-flood reload scale memory)" >&2; exit 1 ;; esac
done
mkdir -p "$WORK"
OUT=${OUT:-$WORK/results-$(date -u +%Y%m%dT%H%M%SZ).txt}
SCENARIOS=("$@"); [ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(peers token-flood reload scale memory)
BIN=$ROOT/target/release/gatehouse
PW=bench-admin-password
PIDS=()

log() { echo "$*" | tee -a "$OUT"; }
die() { echo "load.sh: $*" >&2; exit 1; }
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ---- tools and builds ---------------------------------------------------------------------
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } ||
  die "wrk is missing (apt-get install wrk)"
cargo build --release --locked --bin gatehouse --example seed 2>&1 | tail -1
SEED=$ROOT/target/release/examples/seed

peers_ready() {
  [ -d "$PEERS" ] || die "no peers at $PEERS (set PEERS=...)"
  if [ ! -d "$WORK/peers" ]; then cp -r "$PEERS" "$WORK/peers"; fi
  (cd "$WORK/peers/poem-baseline" && CARGO_TARGET_DIR="$WORK/poem-target" cargo build --release 2>&1 | tail -1)
  [ -d "$WORK/peers/seed-express/node_modules" ] || (cd "$WORK/peers/seed-express" && npm ci --silent >/dev/null)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() { # url
  for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
  die "nothing answers at $1"
}

# start_gatehouse NAME DATA POLICIES -> sets GH_PORT, GH_PID; the admin password is $PW
start_gatehouse() {
  local name=$1 data=$2 policies=$3
  GH_PORT=$(free_port)
  GATEHOUSE_ADMIN_PASSWORD=$PW RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$GH_PORT" \
    --data-dir "$data" --policies "$policies" >"$WORK/$name.log" 2>&1 &
  GH_PID=$!; PIDS+=("$GH_PID")
  wait_up "http://127.0.0.1:$GH_PORT/healthz"
}

token() { # port user password -> access token (form password grant)
  curl -sf "http://127.0.0.1:$1/token" -d grant_type=password -d "username=$2" -d "password=$3" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("access_token") or d["token"])'
}

api() { # method url token [json]
  if [ $# -ge 4 ]; then
    curl -sf -X "$1" "$2" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' -d "$4"
  else
    curl -sf -X "$1" "$2" -H "Authorization: Bearer $3"
  fi
}

# A fresh gatehouse with the shipped policies, alice (user) and alice's note: sets NOTE_URL,
# ALICE (her token).
fresh_gatehouse() {
  local name=$1 dir=$WORK/$1
  rm -rf "$dir"; mkdir -p "$dir"; cp -r "$ROOT/policies" "$dir/policies"
  start_gatehouse "$name" "$dir/data" "$dir/policies"
  local admin; admin=$(token "$GH_PORT" admin "$PW")
  api POST "http://127.0.0.1:$GH_PORT/users" "$admin" '{"username":"alice","password":"alice-password","roles":["user"]}' >/dev/null
  ALICE=$(token "$GH_PORT" alice alice-password)
  local id; id=$(api POST "http://127.0.0.1:$GH_PORT/resources/notes" "$ALICE" \
    '{"title":"groceries","body":"milk, eggs, bread"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  NOTE_URL=/resources/notes/$id
}

cpu_ticks() { # utime+stime of a pid and its children
  local t=0 p f
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat"); set -- $f; t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# run LABEL PID PORT TOKEN PATH [bench.sh env...] -> one RESULT line with the server's CPU
run() {
  local label=$1 pid=$2 port=$3 tok=$4 path=$5; shift 5
  env "$@" CONNS="$CONNS" THREADS="$THREADS" "$WORK/peers/bench.sh" "$port" "$tok" "$path" "$WARM" >/dev/null 2>&1 || true
  local c0 c1 line
  c0=$(cpu_ticks "$pid")
  line=$(env "$@" CONNS="$CONNS" THREADS="$THREADS" "$WORK/peers/bench.sh" "$port" "$tok" "$path" "$DUR" 2>&1 | grep '^RESULT' || true)
  c1=$(cpu_ticks "$pid")
  [ -n "$line" ] || line="RESULT rps=0 failed=1"
  log "scenario=$SCENARIO server=$label server_cpu_pct=$(( (c1 - c0) * 100 / $(getconf CLK_TCK) / DUR )) $line"
}

field() { sed -nE "s/.* $1=([^ ]+).*/\1/p"; }

# ---- scenarios ----------------------------------------------------------------------------
scenario_peers() {
  peers_ready
  # The same server with one async worker thread (tokio's TOKIO_WORKER_THREADS), for comparison:
  # on two cores shared with wrk, fewer threads means less cross-core waking.
  TOKIO_WORKER_THREADS=1 fresh_gatehouse peers-gh1
  local gh1_pid=$GH_PID gh1_port=$GH_PORT gh1_alice=$ALICE gh1_note=$NOTE_URL
  fresh_gatehouse peers-gh
  local gh_pid=$GH_PID gh_port=$GH_PORT
  PORT=3002 "$WORK/poem-target/release/poem-baseline" >/dev/null 2>&1 & local poem=$!; PIDS+=("$poem")
  (cd "$WORK/peers/seed-express" && NODE_ENV=production PORT=3001 exec node server.js) >/dev/null 2>&1 &
  local express=$!; PIDS+=("$express")
  (cd "$WORK/peers/seed-express" && NODE_ENV=production PORT=3003 CLUSTER=1 exec node server.js) >/dev/null 2>&1 &
  local cluster=$!; PIDS+=("$cluster")
  wait_up http://127.0.0.1:3002/plain; sleep 1
  local peer_token; peer_token=$(token 3002 alice alice-pw)
  for r in $(seq "$RUNS"); do
    run gatehouse "$gh_pid" "$gh_port" "$ALICE" "$NOTE_URL"
    run poem-baseline "$poem" 3002 "$peer_token" /resources/notes/1
    run seed-express "$express" 3001 "$peer_token" /resources/notes/1
    run seed-express-cluster "$cluster" 3003 "$peer_token" /resources/notes/1
    run gatehouse-1-worker "$gh1_pid" "$gh1_port" "$gh1_alice" "$gh1_note"
  done
  kill "$poem" "$express" "$cluster" "$gh_pid" "$gh1_pid" 2>/dev/null || true
  python3 - "$OUT" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if "scenario=peers " not in line or "rps=" not in line: continue
    kv = dict(re.findall(r"(\w+)=([^ ]+)", line))
    rows.setdefault(kv["server"], []).append(kv)
med = lambda xs: statistics.median(xs) if xs else 0
def col(server, key): return [float(r.get(key, 0)) for r in rows.get(server, [])]
print("\n| server | req/s (runs) | median req/s | p50 ms | p99 ms | server CPU % |")
print("|---|---|---|---|---|---|")
for s in ["gatehouse", "poem-baseline", "seed-express", "seed-express-cluster", "gatehouse-1-worker"]:
    if s not in rows: continue
    print(f"| {s} | {' / '.join(str(int(x)) for x in col(s, 'rps'))} | {med(col(s, 'rps')):.0f} "
          f"| {med(col(s, 'p50_ms')):.2f} | {med(col(s, 'p99_ms')):.2f} | {med(col(s, 'server_cpu_pct')):.0f} |")
gh, poem, ex = med(col("gatehouse", "rps")), med(col("poem-baseline", "rps")), med(col("seed-express", "rps"))
exc = med(col("seed-express-cluster", "rps"))
p99, ex_p50 = med(col("gatehouse", "p99_ms")), med(col("seed-express", "p50_ms"))
ok = lambda b: "met" if b else "MISSED"
print(f"\ngatehouse / poem-baseline = {gh / poem:.2f} (target >= 0.75: {ok(gh / poem >= 0.75)})" if poem else "")
print(f"gatehouse / seed-express = {gh / ex:.1f} (target >= 5: {ok(gh / ex >= 5)}); / cluster = {gh / exc:.1f}" if ex and exc else "")
print(f"gatehouse p99 {p99:.2f} ms vs seed-express p50 {ex_p50:.2f} ms (target below: {ok(p99 < ex_p50)})")
EOF
}

scenario_token_flood() {
  fresh_gatehouse flood-gh
  local pid=$GH_PID port=$GH_PORT
  for r in $(seq "$RUNS"); do
    CONNS=8 run guarded-alone "$pid" "$port" "$ALICE" "$NOTE_URL"
    env CONNS=64 THREADS=1 METHOD=POST BODY='grant_type=password&username=alice&password=alice-password' \
      "$WORK/peers/bench.sh" "$port" - /token $((DUR + 2 * WARM + 2)) >"$WORK/flood.txt" 2>&1 &
    local flood=$!
    sleep 1
    CONNS=8 run guarded-during-flood "$pid" "$port" "$ALICE" "$NOTE_URL"
    wait "$flood" || true
    log "scenario=$SCENARIO server=token-flood $(grep '^RESULT' "$WORK/flood.txt" || echo 'RESULT failed=1')"
  done
  kill "$pid" 2>/dev/null || true
  python3 - "$OUT" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if "scenario=token-flood " not in line or "rps=" not in line: continue
    kv = dict(re.findall(r"(\w+)=([^ ]+)", line))
    rows.setdefault(kv["server"], []).append(kv)
med = lambda k, key: statistics.median(float(r[key]) for r in rows[k])
print("\n| load | guarded GET req/s | p50 ms | p99 ms |")
print("|---|---|---|---|")
for k in ["guarded-alone", "guarded-during-flood"]:
    print(f"| {k} | {med(k, 'rps'):.0f} | {med(k, 'p50_ms'):.2f} | {med(k, 'p99_ms'):.2f} |")
print(f"| POST /token flood (64 conns) | logins/s {med('token-flood', 'rps'):.0f} | {med('token-flood', 'p50_ms'):.0f} | {med('token-flood', 'p99_ms'):.0f} |")
ratio = med("guarded-during-flood", "p99_ms") / med("guarded-alone", "p99_ms")
print(f"\np99 during flood / alone = {ratio:.2f} (target < 3: {'met' if ratio < 3 else 'MISSED'})")
EOF
}

scenario_reload() {
  fresh_gatehouse reload-gh
  local pid=$GH_PID port=$GH_PORT dir=$WORK/reload-gh
  # The rewrites would fail the shipped tests of notes, and tests gate activation.
  rm -f "$dir/policies/tests/notes.toml"
  local wrk_out=$WORK/reload-wrk.txt
  BENCH_TOKEN=$ALICE wrk -t "$THREADS" -c 64 -d 30s --timeout 5s -s "$ROOT/bench/status.lua" \
    "http://127.0.0.1:$port$NOTE_URL" >"$wrk_out" 2>&1 &
  local w=$!
  sleep 1
  python3 "$ROOT/bench/rewrite.py" "$dir/policies/notes.rhai" "http://127.0.0.1:$port$NOTE_URL" "$ALICE" 100 \
    | tee -a "$OUT"
  wait "$w" || true
  log "scenario=reload server=gatehouse $(grep '^RESULT' "$wrk_out" || echo 'RESULT failed=1')"
  kill "$pid" 2>/dev/null || true
  python3 - "$OUT" <<'EOF'
import re, sys
all_lines = [l.rstrip("\n") for l in open(sys.argv[1])]
lines = [l for l in all_lines if l.startswith("scenario=reload ")]
kv = dict(re.findall(r"(\w+)=([^ ]+)", lines[-1]))
stat = dict(re.findall(r"(\w+)=([^ ]+)", [l for l in all_lines if l.startswith("rewrites=")][-1]))
statuses = dict(s.split(":") for s in kv.get("statuses", "").split(",") if s)
other = {k: v for k, v in statuses.items() if k not in ("200", "403")}
print("\n| requests | 200 | 403 | other | socket errors | rewrites | save-to-effect median / p95 / max ms |")
print("|---|---|---|---|---|---|---|")
print(f"| {kv.get('requests')} | {statuses.get('200', 0)} | {statuses.get('403', 0)} | {other or 0} | {kv.get('sock_errors')} "
      f"| {stat['rewrites']} | {stat['median_ms']} / {stat['p95_ms']} / {stat['max_ms']} |")
good = not other and kv.get("sock_errors") == "0" and float(stat["median_ms"]) < 250
print(f"\nall answers 200/403, no socket errors, median save-to-effect < 250 ms: {'met' if good else 'MISSED'}")
EOF
}

scenario_scale() {
  local big=$WORK/scale-big empty=$WORK/scale-empty summary
  if [ ! -f "$big/seed.json" ] || [ "$(python3 -c "import json;d=json.load(open('$big/seed.json'));print(d['users'],d['docs'])")" != "$SCALE_USERS $SCALE_DOCS" ]; then
    rm -rf "$big"; mkdir -p "$big"
    echo "seeding $SCALE_USERS users and $SCALE_DOCS documents (takes a few minutes)..."
    "$SEED" --data-dir "$big/data" --users "$SCALE_USERS" --docs "$SCALE_DOCS" --password "$PW" >"$big/seed.json"
  fi
  summary=$big/seed.json
  rm -rf "$empty"; mkdir -p "$empty"
  "$SEED" --data-dir "$empty/data" --users 3 --docs 1 --password "$PW" >"$empty/seed.json"
  for d in "$big" "$empty"; do rm -rf "$d/policies"; cp -r "$ROOT/policies" "$d/policies"; done
  start_gatehouse scale-big "$big/data" "$big/policies"; local big_pid=$GH_PID big_port=$GH_PORT
  start_gatehouse scale-empty "$empty/data" "$empty/policies"; local empty_pid=$GH_PID empty_port=$GH_PORT
  local big_alice empty_alice big_admin
  big_alice=$(token "$big_port" alice "$PW"); empty_alice=$(token "$empty_port" alice "$PW")
  big_admin=$(token "$big_port" admin "$PW")
  local big_doc empty_doc page1000
  big_doc=$(python3 -c "import json;print(json.load(open('$summary'))['alice_doc'])")
  empty_doc=$(python3 -c "import json;print(json.load(open('$empty/seed.json'))['alice_doc'])")
  page1000=$(python3 -c "import json;print(json.load(open('$summary'))['cursors'].get('page_1000',''))")
  log "scenario=scale rss_kib_big=$(rss_kib "$big_pid") users=$SCALE_USERS docs=$SCALE_DOCS"
  for r in $(seq "$RUNS"); do
    run get-1M-docs "$big_pid" "$big_port" "$big_alice" "/resources/notes/$big_doc"
    run get-empty "$empty_pid" "$empty_port" "$empty_alice" "/resources/notes/$empty_doc"
    run list-page-1 "$big_pid" "$big_port" "$big_admin" "/resources/notes?limit=100"
    [ -n "$page1000" ] && run list-page-1000 "$big_pid" "$big_port" "$big_admin" "/resources/notes?limit=100&after=$page1000"
  done
  log "scenario=scale rss_kib_big_after=$(rss_kib "$big_pid")"
  kill "$big_pid" "$empty_pid" 2>/dev/null || true
  python3 - "$OUT" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if "scenario=scale " not in line or "rps=" not in line: continue
    kv = dict(re.findall(r"(\w+)=([^ ]+)", line))
    rows.setdefault(kv["server"], []).append(kv)
med = lambda k, key: statistics.median(float(r[key]) for r in rows[k])
print("\n| request | req/s (runs) | median req/s | p50 ms | p99 ms |")
print("|---|---|---|---|---|")
for k in ["get-empty", "get-1M-docs", "list-page-1", "list-page-1000"]:
    if k in rows:
        print(f"| {k} | {' / '.join(r['rps'] for r in rows[k])} | {med(k, 'rps'):.0f} | {med(k, 'p50_ms'):.2f} | {med(k, 'p99_ms'):.2f} |")
g = med("get-1M-docs", "rps") / med("get-empty", "rps")
print(f"\nguarded GET, 1M documents / empty store = {g:.2f} (target >= 0.85: {'met' if g >= 0.85 else 'MISSED'})")
if "list-page-1000" in rows:
    l = med("list-page-1000", "rps") / med("list-page-1", "rps")
    print(f"listing page 1,000 / page 1 = {l:.2f} (target: the same, within noise)")
EOF
}

scenario_memory() {
  local dir=$WORK/memory
  rm -rf "$dir"; mkdir -p "$dir/policies"; cp -r "$ROOT/policies/." "$dir/policies/"
  for i in $(seq -w 1 95); do sed "s/notes/kind$i/g" "$ROOT/policies/notes.rhai" >"$dir/policies/kind$i.rhai"; done
  local n; n=$(ls "$dir/policies"/*.rhai | wc -l)
  start_gatehouse memory "$dir/data" "$dir/policies"
  local pid=$GH_PID port=$GH_PORT
  # Right after start, and once the first-start admin password hash's 19 MiB have been handed
  # back to the OS (mimalloc returns freed memory after a short delay).
  sleep 2
  local early; early=$(rss_kib "$pid")
  sleep 8
  log "scenario=memory policies=$n rss_kib_after_start=$early rss_kib_settled=$(rss_kib "$pid")"
  local admin; admin=$(token "$port" admin "$PW")
  api POST "http://127.0.0.1:$port/users" "$admin" '{"username":"alice","password":"alice-password","roles":["user"]}' >/dev/null
  ALICE=$(token "$port" alice alice-password)
  local id; id=$(api POST "http://127.0.0.1:$port/resources/notes" "$ALICE" '{"title":"groceries"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  local total=0 i line
  for i in 1 2 3 4 5 6 7 8 9 10; do
    line=$(CONNS=64 "$WORK/peers/bench.sh" "$port" "$ALICE" "/resources/notes/$id" 5 2>&1 | grep '^RESULT' || true)
    total=$((total + $(echo "$line" | field requests)))
    log "scenario=memory round=$i requests_so_far=$total rss_kib=$(rss_kib "$pid")"
    [ "$total" -ge 1000000 ] && break
  done
  kill "$pid" 2>/dev/null || true
  python3 - "$OUT" <<'EOF'
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("scenario=memory ")]
start = dict(re.findall(r"(\w+)=([^ ]+)", [l for l in lines if "after_start" in l][-1]))
rounds = [dict(re.findall(r"(\w+)=([^ ]+)", l)) for l in lines if "round=" in l]
rounds = rounds[-len([r for r in rounds if r["round"] == "1"] and rounds):]
last_start = max(i for i, r in enumerate(rounds) if r["round"] == "1")
rounds = rounds[last_start:]
mid = rounds[len(rounds) // 2]
print("\n| policies | RSS 2 s after start | RSS 10 s after start | after " + rounds[0]["requests_so_far"] + " req | after " + mid["requests_so_far"] + " req | after " + rounds[-1]["requests_so_far"] + " req |")
print("|---|---|---|---|---|---|")
mib = lambda k: f"{int(k) / 1024:.1f} MiB"
print(f"| {start['policies']} | {mib(start['rss_kib_after_start'])} | {mib(start['rss_kib_settled'])} | {mib(rounds[0]['rss_kib'])} | {mib(mid['rss_kib'])} | {mib(rounds[-1]['rss_kib'])} |")
ok = lambda k: 'met' if int(start[k]) < 64 * 1024 else 'MISSED'
print(f"\nRSS after start < 64 MiB: at 2 s {ok('rss_kib_after_start')}, at 10 s {ok('rss_kib_settled')}")
EOF
}

log "# bench/load.sh $(date -u +%FT%TZ) host=$(hostname) cores=$(nproc) DUR=$DUR RUNS=$RUNS CONNS=$CONNS wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f2) rustc=$(rustc --version | cut -d' ' -f2) node=$(node --version 2>/dev/null || echo none)"
for SCENARIO in "${SCENARIOS[@]}"; do
  echo "== $SCENARIO"
  case "$SCENARIO" in
    peers) scenario_peers ;;
    token-flood) peers_ready; scenario_token_flood ;;
    reload) scenario_reload ;;
    scale) peers_ready; scenario_scale ;;
    memory) peers_ready; scenario_memory ;;
    *) die "unknown scenario $SCENARIO" ;;
  esac
done
log "# wrote $OUT"
