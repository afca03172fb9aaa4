#!/usr/bin/env bash
# e2e/browser/run.sh: the Swagger UI part of the end-to-end proof.
#
#  1. Debian's chromium at /usr/bin/chromium (apt-get install when missing; Playwright never
#     downloads a browser here);
#  2. `npm ci` of playwright-core from the committed package-lock.json (cached);
#  3. swagger.mjs against a fresh server (e2e/lib.sh): Authorize with the OAuth2 password flow,
#     Try it out / Execute on list_users (200), Logout, Execute (401), no request to any other
#     origin (the page is loaded as http://gatehouse-e2e.test:PORT, see swagger.mjs).
#     Screenshots: target/e2e/swagger-ui.png and target/e2e/swagger-ui-401.png.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib.sh"

e2e_ensure_chromium
e2e_ensure_node_modules "$HERE"
echo "== browser: $(/usr/bin/chromium --version 2>/dev/null | head -1), playwright-core $(node -p 'require("'"$HERE"'/node_modules/playwright-core/package.json").version')"
e2e_start_server
rm -f "$E2E_OUT/swagger-ui.png" "$E2E_OUT/swagger-ui-401.png"
# Every step has its own time-out (15 s; 60 s to start chromium); this bounds the whole test.
if ! e2e_timeout "${E2E_BROWSER_TIMEOUT:-300}" node "$HERE/swagger.mjs" "$E2E_OUT" | sed 's/^/   /'; then
  echo "browser: failed"
  exit 1
fi
echo "browser: all steps passed (screenshots: $E2E_OUT/swagger-ui.png, $E2E_OUT/swagger-ui-401.png)"
