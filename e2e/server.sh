#!/usr/bin/env bash
# e2e/server.sh: run a throwaway release gatehouse (free port, temp data dir, temp copy of
# policies/, admin password $E2E_ADMIN_PASSWORD, default `e2e-admin-password-1`).
#
#   e2e/server.sh                      # start it, print the URL, stop it on Ctrl-C
#   e2e/server.sh CMD [ARGS...]        # run CMD with GATEHOUSE_URL and GATEHOUSE_ADMIN_PASSWORD
#                                      # exported, then stop the server; exits with CMD's status
#
#   GATEHOUSE_BIN=/tmp/e2e-bin/gatehouse e2e/server.sh python3 my_check.py
set -euo pipefail
. "$(dirname "$0")/lib.sh"

e2e_start_server
if [ $# -eq 0 ]; then
  echo "GATEHOUSE_URL=$GATEHOUSE_URL"
  echo "GATEHOUSE_ADMIN_PASSWORD=$GATEHOUSE_ADMIN_PASSWORD"
  echo "(Ctrl-C stops the server)"
  wait "$E2E_SERVER_PID"
else
  "$@"
fi
