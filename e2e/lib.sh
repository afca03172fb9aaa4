# e2e/lib.sh: shared helpers for the end-to-end parts (source it; do not run it).
#
#   . "$(dirname "$0")/../lib.sh"
#   e2e_start_server [SERVE_ARGS...]  # sets and exports GATEHOUSE_URL; the server stops when the
#                               # shell exits; SERVE_ARGS go to `gatehouse serve` (e.g. --jwt-algorithm EdDSA)
#
# Environment:
#   GATEHOUSE_BIN   server binary (default: target/release/gatehouse under the repo root;
#                   a relative path is taken from the current directory)
#   E2E_KEEP=1      keep the server's temporary data dir, policy copy and log
#
# Everything the parts install goes into git-ignored places under e2e/ (venv, node_modules,
# generated clients) and target/e2e/ (screenshots, logs). Nothing is installed globally except
# Debian's chromium for the browser part.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_DIR/.." && pwd)
E2E_OUT=${E2E_OUT:-$E2E_ROOT/target/e2e}
# The first-start admin password of every server these scripts start.
export E2E_ADMIN_PASSWORD=${E2E_ADMIN_PASSWORD:-e2e-admin-password-1}
mkdir -p "$E2E_OUT"

e2e_log() { printf '%s\n' "e2e: $*" >&2; }
e2e_die() { printf '%s\n' "e2e: $*" >&2; exit 1; }

# e2e_timeout SECS CMD [ARGS...]: run CMD (a program, not a shell function); past SECS seconds it
# gets TERM, 10 s later KILL, and the reason is logged. Returns CMD's status (124 on time-out).
e2e_timeout() {
  local secs=$1 rc=0
  shift
  timeout --kill-after=10 "$secs" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    e2e_log "timed out after ${secs} s: $*"
  fi
  return "$rc"
}

# ---- the server -----------------------------------------------------------------------------------
e2e_bin() {
  local bin=${GATEHOUSE_BIN:-$E2E_ROOT/target/release/gatehouse}
  case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
  [ -x "$bin" ] || e2e_die "no gatehouse binary at $bin (build it with 'cargo build --release' or set GATEHOUSE_BIN)"
  printf '%s\n' "$bin"
}

E2E_SERVER_PID=
E2E_SERVER_DIR=

# e2e_start_server: a fresh release server on a free port (the kernel picks it: --bind
# 127.0.0.1:0, the address is read from the startup banner), with a temp data dir and a temp copy
# of policies/, the admin password $E2E_ADMIN_PASSWORD. Waits for GET /healthz, exports
# GATEHOUSE_URL (no trailing slash) and GATEHOUSE_ADMIN_PASSWORD, and stops the server on exit.
e2e_start_server() {
  local bin
  bin=$(e2e_bin)
  E2E_SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-e2e.XXXXXX")
  cp -R "$E2E_ROOT/policies" "$E2E_SERVER_DIR/policies"
  trap e2e_cleanup EXIT
  trap 'exit 130' INT TERM
  # No GATEHOUSE_* setting from the caller's environment leaks into the server.
  (
    for v in $(compgen -e | grep '^GATEHOUSE_' || true); do unset "$v"; done
    export GATEHOUSE_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD
    export RUST_LOG=${RUST_LOG:-warn}
    exec "$bin" serve --bind 127.0.0.1:0 --data-dir "$E2E_SERVER_DIR/data" \
      --policies "$E2E_SERVER_DIR/policies" "$@"
  ) >"$E2E_SERVER_DIR/server.log" 2>&1 &
  E2E_SERVER_PID=$!
  local url
  url=$(python3 - "$E2E_SERVER_DIR/server.log" "$E2E_SERVER_PID" <<'EOF'
import os, re, sys, time, urllib.request
log, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 30
url = None
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited during startup")
    if url is None:
        with open(log, encoding="utf-8", errors="replace") as f:
            m = re.search(r"listening on (http://[0-9.:\[\]a-z]+)", f.read())
        if m:
            url = m.group(1).rstrip("/")
    if url is not None:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200 and b'"ok"' in r.read():
                    print(url)
                    sys.exit(0)
        except OSError:
            pass
    time.sleep(0.05)
sys.exit("the server did not answer GET /healthz within 30 s")
EOF
  ) || {
    sed 's/^/  server.log: /' "$E2E_SERVER_DIR/server.log" >&2
    e2e_die "could not start $bin"
  }
  export GATEHOUSE_URL=$url
  export GATEHOUSE_ADMIN_PASSWORD=$E2E_ADMIN_PASSWORD
  e2e_log "server $("$bin" --version 2>/dev/null | head -1) at $GATEHOUSE_URL (pid $E2E_SERVER_PID, dir $E2E_SERVER_DIR)"
}

# Only the server this shell started is stopped, by its pid.
e2e_stop_server() {
  if [ -n "$E2E_SERVER_PID" ]; then
    kill "$E2E_SERVER_PID" 2>/dev/null || true
    wait "$E2E_SERVER_PID" 2>/dev/null || true
    E2E_SERVER_PID=
  fi
}

e2e_cleanup() {
  local rc=$?
  e2e_stop_server
  if [ -n "$E2E_SERVER_DIR" ] && [ -d "$E2E_SERVER_DIR" ]; then
    # Any 5xx or panic in the server log is worth seeing next to the part's result.
    # (ERROR is the log level: `error=` fields of WARN lines, such as failing policies, are not.
    # grep -m, not head: head would end grep with SIGPIPE, and pipefail would fail the part.)
    if grep -qE 'panicked| ERROR ' "$E2E_SERVER_DIR/server.log" 2>/dev/null; then
      e2e_log "the server logged errors:"
      grep -m 20 -E 'panicked| ERROR ' "$E2E_SERVER_DIR/server.log" | sed 's/^/  server.log: /' >&2
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
      e2e_log "kept $E2E_SERVER_DIR"
    else
      rm -rf "$E2E_SERVER_DIR"
    fi
  fi
  return $rc
}

# ---- installs (pinned, cached) --------------------------------------------------------------------
# e2e_ensure_venv VENV REQUIREMENTS [--exact]: a venv with the pinned requirements, rebuilt when the
# requirements file changes. --exact: REQUIREMENTS is the whole closure (a `pip freeze`); it is
# installed with --no-deps, so nothing unpinned comes in, and `pip check` proves it complete.
e2e_ensure_venv() {
  local venv=$1 req=$2 exact=${3:-} want have
  local -a pip_args=(--quiet --disable-pip-version-check --no-input --require-virtualenv)
  [ "$exact" = --exact ] && pip_args+=(--no-deps)
  want=$(sha256sum "$req" | cut -d' ' -f1)
  have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
  if [ -x "$venv/bin/python" ] && [ "$want" = "$have" ]; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || e2e_die "python3 not found (Python 3.11 or newer is needed)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || e2e_die "python3 is $(python3 --version 2>&1); Python 3.11 or newer is needed"
  e2e_log "installing $(basename "$req") into $venv ($(python3 --version 2>&1))"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately.
    (export DEBIAN_FRONTEND=noninteractive; apt-get update && apt-get install -y python3-venv) >/dev/null \
      || e2e_die "python3 -m venv failed, and so did apt-get install python3-venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || e2e_die "python3 -m venv $venv failed"
  fi
  if ! e2e_timeout 900 "$venv/bin/python" -m pip install "${pip_args[@]}" -r "$req" \
    || ! "$venv/bin/python" -m pip check --disable-pip-version-check >"$venv/pip-check.log" 2>&1; then
    cat "$venv/pip-check.log" >&2 2>/dev/null || true
    rm -rf "$venv"
    e2e_die "pip could not install $req (see above)"
  fi
  echo "$want" >"$venv/.requirements.sha256"
}

# e2e_ensure_node_modules DIR: `npm ci` in DIR (package.json + package-lock.json), skipped when
# node_modules was installed from the same lockfile.
e2e_ensure_node_modules() {
  local dir=$1 want have
  command -v npm >/dev/null 2>&1 || e2e_die "npm not found (Node 20 is needed)"
  want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
  have=$(cat "$dir/node_modules/.e2e-lock.sha256" 2>/dev/null || true)
  if [ -d "$dir/node_modules" ] && [ "$want" = "$have" ]; then
    return 0
  fi
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' \
    || e2e_die "node is $(node --version); Node 20 or newer is needed"
  e2e_log "npm ci in $dir (node $(node --version), npm $(npm --version))"
  if ! (cd "$dir" && e2e_timeout 900 npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    rm -rf "$dir/node_modules"
    e2e_die "npm ci failed in $dir (see above)"
  fi
  echo "$want" >"$dir/node_modules/.e2e-lock.sha256"
}

# e2e_ensure_chromium: Debian's chromium at /usr/bin/chromium (Playwright never downloads one).
e2e_ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || e2e_die "/usr/bin/chromium is missing and there is no apt-get"
  e2e_log "installing Debian's chromium"
  (export DEBIAN_FRONTEND=noninteractive; apt-get update && apt-get install -y chromium) >/dev/null \
    || e2e_die "apt-get install chromium failed"
  [ -x /usr/bin/chromium ] || e2e_die "apt-get installed chromium, but /usr/bin/chromium is missing"
}
