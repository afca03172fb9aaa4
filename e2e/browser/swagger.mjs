// Swagger UI in a real browser: Debian's chromium driven by playwright-core.
//
//   GATEHOUSE_URL=http://127.0.0.1:PORT GATEHOUSE_ADMIN_PASSWORD=... node swagger.mjs OUT_DIR
//
// Opens /docs, logs in with Authorize (OAuth2 password flow, client id and secret left empty),
// runs a guarded operation with Try it out / Execute and expects 200, logs out, executes again and
// expects 401. Every request the page makes must go to the server itself (no CDN, no validator
// badge, nothing else); anything else is blocked and fails the test. Screenshots go to OUT_DIR.
//
// The browser reaches the server as http://gatehouse-e2e.test:PORT, a name that chromium's own
// resolver maps to the server's loopback address (every other name resolves to nothing), so the page
// runs as it does for a user on a real host name: Swagger UI skips some outside requests, such as
// its online validator badge, only on `localhost` and `127.0.0.1` URLs.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.GATEHOUSE_URL;
const PASSWORD = process.env.GATEHOUSE_ADMIN_PASSWORD;
const OUT = process.argv[2];
const CHROMIUM = process.env.E2E_CHROMIUM ?? "/usr/bin/chromium";
if (!BASE || !PASSWORD || !OUT) throw new Error("usage: GATEHOUSE_URL=... GATEHOUSE_ADMIN_PASSWORD=... node swagger.mjs OUT_DIR");
const server = new URL(BASE);
const HOST = "gatehouse-e2e.test";
const PAGE_BASE = `http://${HOST}:${server.port}`;
const origin = new URL(PAGE_BASE).origin;
// The operation to try: GET /users (list_users, tag Users), guarded by _users.rhai (admins only).
const OP = { tag: "Users", id: "list_users", method: "GET", path: "/users" };
const TIMEOUT = 15_000;

const passed = [];
const failed = [];
const foreign = []; // requests to any other origin
const problems = []; // page errors, failed server requests
const exchanges = []; // the server requests, for the log

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed.push(name);
    console.log(`  ok    ${name} (${Date.now() - t0} ms)`);
    return true;
  } catch (e) {
    failed.push(name);
    console.log(`  FAIL  ${name}: ${(e && e.message) || e}`.split("\n").slice(0, 6).join("\n        "));
    return false;
  }
}
function check(cond, what) {
  if (!cond) throw new Error(what);
}

const profile = mkdtempSync(join(tmpdir(), "gatehouse-e2e-chromium-"));
let context;
try {
  console.log(`swagger UI in chromium against ${PAGE_BASE}/docs (${HOST} is ${server.hostname} for this browser only)`);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP ${HOST} ${server.hostname}, MAP * ~NOTFOUND`,
    ],
    viewport: { width: 1280, height: 900 },
    timeout: 60_000,
  });
  context.setDefaultTimeout(TIMEOUT);

  // Every request of every page: the server's origin only. Others are recorded and blocked, so a
  // CDN reference fails here instead of hanging on the closed network.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("data:") || url.startsWith("blob:") || new URL(url).origin === origin) {
      return route.continue();
    }
    const what = `${route.request().method()} ${url}`;
    if (!foreign.includes(what)) foreign.push(what);
    return route.abort("blockedbyclient");
  });
  context.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith("data:") && !url.startsWith("blob:") && new URL(url).origin !== origin) {
      if (!foreign.includes(`${req.method()} ${url}`)) foreign.push(`${req.method()} ${url}`);
    }
  });
  context.on("requestfailed", (req) => {
    if (new URL(req.url()).origin === origin) problems.push(`request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
  });
  context.on("response", async (resp) => {
    const req = resp.request();
    if (new URL(req.url()).origin !== origin) return;
    const path = new URL(req.url()).pathname;
    if (path === "/docs" || path.startsWith("/docs/")) return;
    exchanges.push(`${req.method()} ${path} -> ${resp.status()} ${resp.headers()["content-type"] ?? ""}`);
    if (resp.status() >= 500) problems.push(`server answered ${resp.status()} to ${req.method()} ${req.url()}`);
  });

  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    // Chromium logs every 4xx answer as "Failed to load resource"; the 401 after logout is
    // expected, and statuses are checked where they matter. Anything else is a problem.
    if (msg.type() === "error" && !/^Failed to load resource: the server responded with a status of 4\d\d /.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });

  const opblock = page.locator(`#operations-${OP.tag}-${OP.id}`);
  const liveStatus = opblock.locator(".live-responses-table .response .response-col_status").first();
  const modal = page.locator(".modal-ux");

  // A picture of the operation from its summary line (method, path, lock) down to the live answer.
  const shoot = async (file) => {
    const top = await opblock.boundingBox();
    const end = await opblock.locator(".live-responses-table").boundingBox();
    check(top !== null && end !== null, "the operation is not on screen");
    const scrollY = await page.evaluate(() => window.scrollY);
    await page.screenshot({
      path: join(OUT, file),
      fullPage: true,
      clip: { x: 0, y: top.y + scrollY - 8, width: 1280, height: end.y + end.height - top.y + 16 },
    });
  };

  const execute = async (want) => {
    // Wait for the answer to the call itself, then for Swagger UI to render it.
    const answer = page.waitForResponse(
      (r) => r.request().method() === OP.method && new URL(r.url()).pathname === OP.path,
      { timeout: TIMEOUT },
    );
    await opblock.locator("button.execute").click();
    const resp = await answer;
    await page.waitForFunction(
      ([sel, status]) => document.querySelector(sel)?.textContent?.trim().startsWith(String(status)),
      [`#operations-${OP.tag}-${OP.id} .live-responses-table .response .response-col_status`, resp.status()],
      { timeout: TIMEOUT },
    );
    const shown = (await liveStatus.textContent())?.trim() ?? "";
    check(resp.status() === want, `the server answered ${resp.status()}, expected ${want}`);
    check(shown.startsWith(String(want)), `Swagger UI shows ${JSON.stringify(shown)}, expected ${want}`);
    return resp;
  };

  let loaded = await step("GET /docs renders Swagger UI with the gatehouse spec", async () => {
    const resp = await page.goto(`${PAGE_BASE}/docs`, { waitUntil: "load", timeout: 30_000 });
    check(resp?.status() === 200, `GET /docs: ${resp?.status()}`);
    await page.locator(".swagger-ui .info .title").waitFor();
    const title = (await page.locator(".swagger-ui .info .title").textContent()) ?? "";
    check(title.includes("gatehouse"), `title ${JSON.stringify(title)}`);
    await opblock.waitFor();
  });

  let authorized = false;
  if (loaded) {
    authorized = await step("Authorize: OAuth2 password flow as admin (client id/secret empty)", async () => {
      await page.locator(".scheme-container button.authorize").click();
      await modal.waitFor();
      await modal.locator("#oauth_username").fill("admin");
      await modal.locator("#oauth_password").fill(PASSWORD);
      for (const id of ["#client_id_password", "#client_secret_password"]) {
        const input = modal.locator(id);
        check((await input.count()) === 1, `no ${id} field in the dialog`);
        check((await input.inputValue()) === "", `${id} is not empty`);
      }
      const token = page.waitForResponse((r) => new URL(r.url()).pathname === "/token", { timeout: TIMEOUT });
      await modal.getByRole("button", { name: "Apply given OAuth2 credentials" }).click();
      const tr = await token;
      const sent = tr.request().postData() ?? "";
      check(tr.status() === 200, `POST /token answered ${tr.status()}: ${await tr.text()}`);
      check(/(^|&)grant_type=password(&|$)/.test(sent), `POST /token body ${sent.replace(/password=[^&]*/, "password=***")}`);
      // Swagger UI shows "Authorized" and offers Logout once the token is in.
      await modal.getByRole("button", { name: "Remove authorization" }).waitFor();
      await modal.locator("h6", { hasText: "Authorized" }).waitFor();
      const errors = await modal.locator(".errors").allTextContents();
      check(errors.join("").trim() === "", `the dialog shows errors: ${errors.join(" | ")}`);
      await modal.locator("button.btn-done").click();
      await modal.waitFor({ state: "detached" });
    });
  }

  if (loaded) {
    await step(`${OP.id}: ${OP.method} ${OP.path} -> Try it out -> Execute shows 200`, async () => {
      check(authorized, "needs the Authorize step, which failed");
      await opblock.locator(".opblock-summary").first().click();
      await opblock.locator("button.try-out__btn").click();
      const resp = await execute(200);
      check((resp.request().headers()["authorization"] ?? "").startsWith("Bearer "), "the call carried no bearer token");
      const body = await resp.json();
      check(Array.isArray(body.items) && body.items.some((u) => u.username === "admin"), `body ${JSON.stringify(body)}`);
      await shoot("swagger-ui.png");
    });

    await step("Logout in the Authorize dialog, Execute again shows 401", async () => {
      check(authorized, "needs the Authorize step, which failed");
      await page.locator(".scheme-container button.authorize").click();
      await modal.waitFor();
      await modal.getByRole("button", { name: "Remove authorization" }).click();
      await modal.getByRole("button", { name: "Apply given OAuth2 credentials" }).waitFor();
      await modal.locator("button.btn-done").click();
      await modal.waitFor({ state: "detached" });
      const resp = await execute(401);
      check(!("authorization" in resp.request().headers()), "the call still carried a token after logout");
      check((resp.headers()["www-authenticate"] ?? "").startsWith("Bearer"), "401 without WWW-Authenticate: Bearer");
      check((resp.headers()["content-type"] ?? "").startsWith("application/problem+json"), `401 content type ${resp.headers()["content-type"]}`);
      await shoot("swagger-ui-401.png");
    });
  }

  await step("every request went to the server itself (no CDN, no other host)", async () => {
    check(foreign.length === 0, `requests to other hosts: ${foreign.join(", ")}`);
  });
  await step("no page errors, failed requests or 5xx", async () => {
    check(problems.length === 0, problems.join("; "));
  });
} catch (e) {
  failed.push("browser");
  console.log(`  FAIL  browser: ${(e && e.stack) || e}`);
} finally {
  if (exchanges.length > 0) console.log(`  (API calls the page made: ${exchanges.join("; ")})`);
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(`swagger UI: ${passed.length} passed, ${failed.length} failed`);
process.exitCode = failed.length > 0 ? 1 : 0;
