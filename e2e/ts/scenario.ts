// The end-to-end scenario through a typed TypeScript client: types from openapi-typescript
// (generated/schema.d.ts, made by e2e/ts/run.sh from the committed openapi/openapi.json) and the
// openapi-fetch runtime. No hand-written request or response types.
//
//   GATEHOUSE_URL=http://127.0.0.1:PORT GATEHOUSE_ADMIN_PASSWORD=... GATEHOUSE_SPEC=openapi/openapi.json \
//     node build/scenario.js
//
// The type check (`tsc --noEmit`, strict) is half of the proof: every `assertType<...>` below
// fails to compile when a response the scenario uses is typed `any`/`unknown` instead of its
// schema, or when a declared error type is missing. Independently of the generated types, every
// answer is checked against the spec itself (conformance.ts, as an openapi-fetch middleware): an
// undeclared status or content type, a `null` the schema does not allow, an undeclared property or
// a missing required header fails the step that received it.
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import createClient, { type Middleware } from "openapi-fetch";
import { Conformance, type Spec } from "./conformance.js";
import type { components, paths } from "./generated/schema.js";

type S = components["schemas"];

// ---- compile-time checks --------------------------------------------------------------------------
type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
type IsAny<T> = 0 extends 1 & T ? true : false;
type IsUnknown<T> = unknown extends T ? (IsAny<T> extends true ? false : true) : false;
type Typed<T> = IsAny<T> extends true ? false : IsUnknown<T> extends true ? false : true;
/** Compiles only when T is `true`. */
function assertType<T extends true>(..._: T extends true ? [] : [never]): void {}

// ---- runtime checks --------------------------------------------------------------------------------
const BASE = process.env.GATEHOUSE_URL ?? "";
const ADMIN_PASSWORD = process.env.GATEHOUSE_ADMIN_PASSWORD ?? "";
const SPEC = process.env.GATEHOUSE_SPEC ?? "";
if (BASE === "" || ADMIN_PASSWORD === "" || SPEC === "") {
  throw new Error("GATEHOUSE_URL, GATEHOUSE_ADMIN_PASSWORD and GATEHOUSE_SPEC must be set");
}
const conformance = new Conformance(JSON.parse(readFileSync(SPEC, "utf8")) as Spec);
/** What conformance.ts found in the answers so far; each step fails on the findings of its own calls. */
const violations: string[] = [];
const checkAgainstSpec: Middleware = {
  async onResponse({ request, response, schemaPath }) {
    const body = await response.clone().text();
    violations.push(...conformance.check(request.method, schemaPath, response.status, response.headers, body));
    return undefined;
  },
};
/** No call may hang the run: every request gives up after 10 s (fetch's default is no limit). */
const fetchWithTimeout = (input: Request): Promise<Response> => fetch(input, { signal: AbortSignal.timeout(10_000) });
const SUFFIX = String(Date.now()).slice(-9);
const ANN = `ann-${SUFFIX}`;
const ANN_PASSWORD = "ann-password-1";
const BOB = `bob-${SUFFIX}`;
const BOB_PASSWORD = "bob-password-1";

class CheckFailed extends Error {}
function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new CheckFailed(what);
}

const passed: string[] = [];
const failed: string[] = [];
async function step(name: string, fn: () => Promise<void>): Promise<void> {
  const t0 = performance.now();
  const seen = violations.length;
  try {
    await fn();
    if (violations.length > seen) {
      failed.push(name);
      console.log(`  FAIL  ${name}: the server answered outside the spec:`);
    } else {
      passed.push(name);
      console.log(`  ok    ${name} (${Math.round(performance.now() - t0)} ms)`);
    }
  } catch (e) {
    failed.push(name);
    const msg = e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
    console.log(`  FAIL  ${name}: ${msg}`);
  }
  for (const v of new Set(violations.slice(seen))) console.log(`          spec: ${v}`);
}

interface Answer {
  response: Response;
  data?: unknown;
  error?: unknown;
}
/** Status and media type (without parameters) are as expected. */
function expectStatus(a: Answer, status: number, mediaType: string): void {
  const ct = a.response.headers.get("content-type") ?? "";
  check(
    a.response.status === status,
    `expected ${status}, got ${a.response.status} ${ct}: ${JSON.stringify(a.data ?? a.error)?.slice(0, 300)}`,
  );
  check(ct.split(";")[0]?.trim() === mediaType, `${status}: content type ${JSON.stringify(ct)}, expected ${mediaType}`);
}
function expectProblem(a: Answer & { error?: S["Problem"] }, status: number): S["Problem"] {
  expectStatus(a, status, "application/problem+json");
  const p = a.error;
  check(p !== undefined, `${status} without a parsed problem`);
  check(p.status === status, `problem.status ${p.status} != HTTP ${status}`);
  check(typeof p.detail === "string" && p.detail !== "", `problem.detail ${JSON.stringify(p.detail)}`);
  check(typeof p.title === "string" && p.title !== "", `problem.title ${JSON.stringify(p.title)}`);
  check(p.type.startsWith("urn:gatehouse:problem:"), `problem.type ${p.type}`);
  return p;
}

function client(headers: Record<string, string> = {}) {
  const c = createClient<paths>({ baseUrl: BASE, headers, fetch: fetchWithTimeout });
  c.use(checkAgainstSpec);
  return c;
}
const anon = client();
const clients = new Map<string, ReturnType<typeof client>>();
function as(token: string): ReturnType<typeof client> {
  let c = clients.get(token);
  if (c === undefined) {
    c = client({ Authorization: `Bearer ${token}` });
    clients.set(token, c);
  }
  return c;
}
const FORM = { "Content-Type": "application/x-www-form-urlencoded" } as const;

async function issue(body: S["TokenRequest"]) {
  return anon.POST("/token", { body, headers: FORM });
}
async function login(username: string, password: string): Promise<S["TokenBody"]> {
  const a = await issue({ grant_type: "password", username, password });
  assertType<Equal<NonNullable<typeof a.data>, S["TokenBody"]>>();
  assertType<Equal<NonNullable<typeof a.error>, S["OAuthError"]>>();
  expectStatus(a, 200, "application/json");
  const tok = a.data;
  check(tok !== undefined, "no token body");
  check(tok.token_type === "Bearer", `token_type ${tok.token_type}`);
  check(Number.isInteger(tok.expires_in) && tok.expires_in > 0, `expires_in ${tok.expires_in}`);
  check(tok.access_token.split(".").length === 3, "access_token is not a JWT");
  check(typeof tok.refresh_token === "string" && tok.refresh_token.length >= 32, "refresh_token");
  check(a.response.headers.get("cache-control") === "no-store", "POST /token without Cache-Control: no-store");
  return tok;
}

const state: {
  admin?: S["TokenBody"];
  ann?: S["TokenBody"];
  ann2?: S["TokenBody"];
  bob?: S["TokenBody"];
  note?: S["DocumentView"];
  page?: S["DocumentPage"];
} = {};
function need<K extends keyof typeof state>(k: K): NonNullable<(typeof state)[K]> {
  const v = state[k];
  if (v === undefined) throw new CheckFailed(`needs \`${k}\` from an earlier step, which failed`);
  return v as NonNullable<(typeof state)[K]>;
}

console.log(`typescript SDK scenario against ${BASE}`);

await step("health: GET /healthz -> Health", async () => {
  const a = await anon.GET("/healthz");
  assertType<Equal<NonNullable<typeof a.data>, S["Health"]>>();
  expectStatus(a, 200, "application/json");
  check(a.data?.status === "ok", `status ${JSON.stringify(a.data)}`);
});

await step("issue_token: admin logs in (password grant, form body)", async () => {
  state.admin = await login("admin", ADMIN_PASSWORD);
});

await step("issue_token: a wrong password is a typed OAuthError invalid_grant", async () => {
  const a = await issue({ grant_type: "password", username: "admin", password: "not-the-password" });
  expectStatus(a, 400, "application/json");
  check(a.error?.error === "invalid_grant", `error ${JSON.stringify(a.error)}`);
});

await step("create_user: admin creates ann and bob -> 201 UserView + Location", async () => {
  const admin = as(need("admin").access_token);
  for (const [username, password] of [[ANN, ANN_PASSWORD], [BOB, BOB_PASSWORD]] as const) {
    const a = await admin.POST("/users", { body: { username, password, roles: ["user"] } });
    assertType<Equal<NonNullable<typeof a.data>, S["UserView"]>>();
    assertType<Equal<NonNullable<typeof a.error>, S["Problem"]>>();
    expectStatus(a, 201, "application/json");
    const u = a.data;
    check(u !== undefined && u.username === username, `user ${JSON.stringify(u)}`);
    check(JSON.stringify(u.roles) === '["user"]' && u.disabled === false, `user ${JSON.stringify(u)}`);
    check(!("password" in u) && !JSON.stringify(u).includes("argon2"), "password leaks");
    check((a.response.headers.get("location") ?? "").endsWith(`/users/${username}`), "Location header");
  }
});

await step("create_user: the same name again -> 409 Problem", async () => {
  const a = await as(need("admin").access_token).POST("/users", {
    body: { username: ANN, password: ANN_PASSWORD, roles: ["user"] },
  });
  expectProblem(a, 409);
});

await step("list_users: admin -> 200 UserPage with ann", async () => {
  const a = await as(need("admin").access_token).GET("/users");
  assertType<Equal<NonNullable<typeof a.data>, S["UserPage"]>>();
  expectStatus(a, 200, "application/json");
  check(a.data?.items.some((u) => u.username === ANN) === true, "ann not listed");
});

await step("issue_token: ann and bob log in", async () => {
  state.ann = await login(ANN, ANN_PASSWORD);
  state.bob = await login(BOB, BOB_PASSWORD);
});

await step("get_user: ann reads herself -> 200 UserView", async () => {
  const a = await as(need("ann").access_token).GET("/users/{username}", { params: { path: { username: ANN } } });
  assertType<Equal<NonNullable<typeof a.data>, S["UserView"]>>();
  expectStatus(a, 200, "application/json");
  check(a.data?.username === ANN, `user ${JSON.stringify(a.data)}`);
});

await step("create_document: ann creates a note in `notes` -> 201 DocumentView + Location", async () => {
  const a = await as(need("ann").access_token).POST("/resources/{kind}", {
    params: { path: { kind: "notes" } },
    body: { title: "groceries", items: ["milk", "eggs"] },
  });
  assertType<Equal<NonNullable<typeof a.data>, S["DocumentView"]>>();
  assertType<Equal<NonNullable<typeof a.error>, S["Problem"]>>();
  assertType<Typed<NonNullable<typeof a.data>["data"]>>();
  expectStatus(a, 201, "application/json");
  const doc = a.data;
  check(doc !== undefined, "no document");
  check(doc.kind === "notes" && doc.owner === ANN, `kind/owner ${doc.kind}/${doc.owner}`);
  check(isDeepStrictEqual(doc.data, { title: "groceries", items: ["milk", "eggs"] }), `data ${JSON.stringify(doc.data)}`);
  check(doc.id.length === 36, `id ${doc.id} is not a UUID`);
  check(doc.created_at !== "" && doc.updated_at !== "", "timestamps");
  check((a.response.headers.get("location") ?? "").endsWith(`/resources/notes/${doc.id}`), "Location header");
  state.note = doc;
});

await step("get_document: ann reads it back -> 200, the same DocumentView", async () => {
  const doc = need("note");
  const a = await as(need("ann").access_token).GET("/resources/{kind}/{id}", {
    params: { path: { kind: "notes", id: doc.id } },
  });
  assertType<Equal<NonNullable<typeof a.data>, S["DocumentView"]>>();
  expectStatus(a, 200, "application/json");
  check(isDeepStrictEqual(a.data, doc), `read ${JSON.stringify(a.data)} != created ${JSON.stringify(doc)}`);
});

await step("list_documents: ann lists `notes` -> 200 DocumentPage with the note", async () => {
  const doc = need("note");
  const a = await as(need("ann").access_token).GET("/resources/{kind}", {
    params: { path: { kind: "notes" }, query: { limit: 10 } },
  });
  assertType<Equal<NonNullable<typeof a.data>, S["DocumentPage"]>>();
  // The contract (DESIGN.md): `"next": cursor|null`, so the type must admit null.
  assertType<Equal<NonNullable<typeof a.data>["next"], string | null | undefined>>();
  expectStatus(a, 200, "application/json");
  check(a.data !== undefined, "no page");
  check(JSON.stringify(a.data.items.map((d) => d.id)) === JSON.stringify([doc.id]), `items ${JSON.stringify(a.data.items)}`);
  state.page = a.data;
});

await step("create_document: a note without a string `title` -> 403 Problem with the policy's reason", async () => {
  const a = await as(need("ann").access_token).POST("/resources/{kind}", {
    params: { path: { kind: "notes" } },
    body: { items: [] },
  });
  const p = expectProblem(a, 403);
  check(p.detail.includes("a note needs a string `title`"), `detail ${JSON.stringify(p.detail)}`);
  check(p.type === "urn:gatehouse:problem:forbidden", `type ${p.type}`);
  check((a.response.headers.get("x-decision-id") ?? "") !== "", "no X-Decision-Id on a policy decision");
});

await step("get_document: bob reads ann's note -> 403 Problem", async () => {
  const a = await as(need("bob").access_token).GET("/resources/{kind}/{id}", {
    params: { path: { kind: "notes", id: need("note").id } },
  });
  assertType<Equal<NonNullable<typeof a.error>, S["Problem"]>>();
  check(expectProblem(a, 403).type === "urn:gatehouse:problem:forbidden", "type");
});

await step("list_users: ann (not admin) -> 403 Problem `only admins may list users`", async () => {
  const p = expectProblem(await as(need("ann").access_token).GET("/users"), 403);
  check(p.detail.includes("only admins may list users"), `detail ${JSON.stringify(p.detail)}`);
});

await step("get_document: an unknown id -> 404 Problem; an unknown kind -> 404 Problem", async () => {
  const ann = as(need("ann").access_token);
  expectProblem(
    await ann.GET("/resources/{kind}/{id}", { params: { path: { kind: "notes", id: "01a00000-0000-7000-8000-000000000000" } } }),
    404,
  );
  expectProblem(await ann.GET("/resources/{kind}", { params: { path: { kind: "no-such-kind" } } }), 404);
});

await step("issue_token: refresh_token grant -> a new TokenBody; the new access token works", async () => {
  const old = need("ann");
  const a = await issue({ grant_type: "refresh_token", refresh_token: old.refresh_token });
  expectStatus(a, 200, "application/json");
  const tok = a.data;
  check(tok !== undefined, "no token body");
  check(tok.refresh_token !== old.refresh_token, "refresh token was not rotated");
  check(tok.access_token !== old.access_token, "same access token");
  const r = await as(tok.access_token).GET("/resources/{kind}/{id}", { params: { path: { kind: "notes", id: need("note").id } } });
  expectStatus(r, 200, "application/json");
  state.ann2 = tok;
});

await step("revoke_token: revoke ann's new access token -> 200; it then gets 401 Problem invalid_token", async () => {
  const tok = need("ann2");
  const a = await anon.POST("/token/revoke", { body: { token: tok.access_token }, headers: FORM });
  // 200 is declared without a body, so the success type is `undefined`: typed, not `unknown`.
  assertType<Equal<typeof a.data, undefined>>();
  assertType<Equal<NonNullable<typeof a.error>, S["OAuthError"]>>();
  check(a.response.status === 200, `revoke: ${a.response.status} ${JSON.stringify(a.error)}`);
  const raw = await a.response.text();
  check(a.data === undefined && raw === "", `revoke answered a body: ${JSON.stringify(raw)}`);
  const id = need("note").id;
  const r = await as(tok.access_token).GET("/resources/{kind}/{id}", { params: { path: { kind: "notes", id } } });
  const p = expectProblem(r, 401);
  check(p.type === "urn:gatehouse:problem:invalid-token", `type ${p.type}`);
  const www = r.response.headers.get("www-authenticate") ?? "";
  check(www.startsWith("Bearer ") && www.includes('error="invalid_token"'), `WWW-Authenticate ${www}`);
  // The first access token was not revoked and still works.
  const first = await as(need("ann").access_token).GET("/resources/{kind}/{id}", { params: { path: { kind: "notes", id } } });
  expectStatus(first, 200, "application/json");
});

await step("issue_token: the used refresh token again -> 400 invalid_grant, and its family is ended", async () => {
  for (const rt of [need("ann").refresh_token, need("ann2").refresh_token]) {
    const a = await issue({ grant_type: "refresh_token", refresh_token: rt });
    expectStatus(a, 400, "application/json");
    check(a.error?.error === "invalid_grant", `error ${JSON.stringify(a.error)}`);
  }
});

await step("revoke_token: a refresh token; it can no longer be used", async () => {
  const tok = await login(BOB, BOB_PASSWORD);
  const a = await anon.POST("/token/revoke", {
    body: { token: tok.refresh_token, token_type_hint: "refresh_token" },
    headers: FORM,
  });
  check(a.response.status === 200, `revoke: ${a.response.status}`);
  const r = await issue({ grant_type: "refresh_token", refresh_token: tok.refresh_token });
  expectStatus(r, 400, "application/json");
  check(r.error?.error === "invalid_grant", `error ${JSON.stringify(r.error)}`);
});

// ---- the policy API: typed results and typed errors beyond `Problem` ---------------------------------
await step("evaluate_policy: admin dry-runs a note without a title -> 200 EvalResult deny with the reason", async () => {
  const a = await as(need("admin").access_token).POST("/policies/evaluate", {
    body: { kind: "notes", action: "create", claims: { sub: ANN, roles: ["user"] }, resource: { data: { items: [] } } },
  });
  assertType<Equal<NonNullable<typeof a.data>, S["EvalResult"]>>();
  assertType<Equal<NonNullable<typeof a.error>, S["Problem"] | S["PolicyProblem"]>>();
  assertType<Equal<NonNullable<typeof a.data>["outcome"], S["OutcomeView"]>>();
  expectStatus(a, 200, "application/json");
  const r = a.data;
  check(r !== undefined && r.allow === false && r.outcome === "deny", `result ${JSON.stringify(r)}`);
  check(r.reason === "a note needs a string `title`", `reason ${JSON.stringify(r.reason)}`);
});

// openapi-fetch serializes every body as JSON unless told otherwise: a text/plain body needs its
// own serializer (and its Content-Type).
const TEXT = { bodySerializer: (b: string) => b, headers: { "Content-Type": "text/plain; charset=utf-8" } } as const;

await step("put_policy: a new kind from text -> 201 PolicyView + ETag; get_policy_source -> the text; stale If-Match -> 412", async () => {
  const admin = as(need("admin").access_token);
  const name = `todos_${SUFFIX}`;
  const source = 'if action == "create" || action == "list" { true } else { resource.owner == claims.sub }\n';
  const a = await admin.PUT("/policies/{name}", { params: { path: { name } }, body: source, ...TEXT });
  assertType<Equal<NonNullable<typeof a.data>, S["PolicyView"]>>();
  assertType<Equal<NonNullable<typeof a.error>, S["Problem"] | S["PolicyProblem"]>>();
  expectStatus(a, 201, "application/json");
  check(a.data?.name === name && a.data.is_kind, `policy ${JSON.stringify(a.data)}`);
  check((a.response.headers.get("etag") ?? "") !== "", "no ETag");
  // GET /policies/{name}: the source comes back as text, with the same ETag. openapi-fetch parses
  // every body as JSON unless told otherwise (its `parseAs` does not follow the media type); the
  // spec's type of this answer (`string`) is asserted in generated/audit.ts.
  const src = await admin.GET("/policies/{name}", { params: { path: { name } }, parseAs: "text" });
  check(src.response.status === 200 && src.data === source, `source ${src.response.status} ${JSON.stringify(src.data)}`);
  check(src.response.headers.get("etag") === a.response.headers.get("etag"), "ETag of GET differs from PUT's");
  const stale = await admin.PUT("/policies/{name}", {
    params: { path: { name }, header: { "If-Match": '"0000000000000000"' } },
    body: "true\n",
    ...TEXT,
  });
  expectProblem(stale, 412);
  // The new kind is live at once.
  const list = await as(need("ann").access_token).GET("/resources/{kind}", { params: { path: { kind: name } } });
  expectStatus(list, 200, "application/json");
});

await step("put_policy: a `tasks` edit that fails its tests -> 422 PolicyProblem listing the failing cases", async () => {
  const a = await as(need("admin").access_token).PUT("/policies/{name}", {
    params: { path: { name: "tasks" } },
    body: "true\n",
    ...TEXT,
  });
  expectStatus(a, 422, "application/problem+json");
  const p = a.error;
  check(p !== undefined && "errors" in p, `problem ${JSON.stringify(p)}`);
  check(p.status === 422 && p.type === "urn:gatehouse:problem:policy-rejected", `problem ${JSON.stringify(p)}`);
  check(p.errors.length > 0 && p.errors.every((e) => typeof e === "string"), `errors ${JSON.stringify(p.errors)}`);
});

console.log(`typescript SDK scenario: ${passed.length} passed, ${failed.length} failed`);
process.exitCode = failed.length > 0 ? 1 : 0;
