//! One test per library trap of `/work/shared/LIBRARIES.md` that can be seen from outside (poem,
//! jsonwebtoken, rhai, sled, notify, argon2), each named after its trap.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::helpers::*;

/// The contract's 1 s, plus 0.5 s for the polling client on a shared 2-core machine.
const RELOAD_BOUND: Duration = Duration::from_millis(1500);
const ANSWER_BOUND: Duration = Duration::from_secs(1);

fn assert_no_panic(s: &TestServer) {
    let logs = s.logs();
    assert!(!logs.contains("panicked"), "server log shows a panic:\n{logs}");
}

// ---------------------------------------------------------------- poem / poem-openapi

/// poem: a failed security extractor is 401 problem+json with `WWW-Authenticate`, not poem's
/// default 401 text/plain "authorization error"; a bad token adds `error="invalid_token"`.
#[test]
fn poem_401_is_problem_json_with_www_authenticate() {
    let s = TestServer::start();
    for path in ["/users", "/users/admin", "/resources/notes", "/policies"] {
        for headers in [vec![], vec![("Authorization", "Basic YWRtaW46eA==")]] {
            let r = s.raw("GET", path, &headers, None);
            r.assert_problem(401);
            assert_eq!(
                r.header("www-authenticate"),
                Some(r#"Bearer realm="gatehouse""#),
                "{path}: {r:?}"
            );
        }
        let r = s.raw("GET", path, &[("Authorization", "Bearer not-a-jwt")], None);
        r.assert_problem(401);
        let www = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{path}: no WWW-Authenticate: {r:?}"));
        assert!(
            www.starts_with("Bearer ") && www.contains(r#"error="invalid_token""#),
            "{path}: {www}"
        );
    }
    let r = s.req("POST", "/resources/notes", None, Some(&json!({"title": "x"})));
    r.assert_problem(401);
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
}

/// poem: 404, 405, 415 and body-parse errors raised by poem itself are problem+json, not text/plain.
#[test]
fn poem_framework_errors_are_problem_json() {
    let s = TestServer::start();
    let t = s.admin_token();
    let auth = format!("Bearer {t}");
    let h = [("Authorization", auth.as_str())];
    s.raw("GET", "/no/such/endpoint", &h, None).assert_problem(404);
    s.raw("DELETE", "/healthz", &h, None).assert_problem(405);
    s.raw("POST", "/resources/notes", &h, Some(("text/plain", b"title=x")))
        .assert_problem(415);
    s.raw(
        "POST",
        "/resources/notes",
        &h,
        Some(("application/json", b"{\"title\":")),
    )
    .assert_problem(400);
    s.raw("POST", "/resources/notes", &h, Some(("application/json", b"[1,2]")))
        .assert_problem(400);
    s.raw("POST", "/users", &h, Some(("application/json", b"{\"username\": 5}")))
        .assert_problem(400);
}

/// poem: a form missing a field is not poem's 400 text/plain: the token endpoint answers with an
/// RFC 6749 §5.2 JSON error (`invalid_request`); `validator`s are not trusted on forms.
#[test]
fn poem_form_errors_are_oauth_json() {
    let s = TestServer::start();
    for form in [
        vec![("grant_type", "password"), ("username", "admin")],
        vec![("grant_type", "password"), ("password", ADMIN_PW)],
        vec![("username", "admin"), ("password", ADMIN_PW)],
    ] {
        let r = s.token_form(&form);
        assert_eq!(r.status, 400, "{form:?}: {r:?}");
        assert!(r.content_type().contains("json"), "{form:?}: not JSON: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{form:?}: {r:?}");
    }
}

/// poem / Swagger UI: the password-flow request Swagger UI sends (Basic `Og==` client
/// credentials or empty `client_id`/`client_secret` fields, an empty `scope`, X-Requested-With)
/// logs in, with `token_type: Bearer` and `Cache-Control: no-store`.
#[test]
fn poem_swagger_ui_password_flow_request_logs_in() {
    let s = TestServer::start();
    let body = format!(
        "grant_type=password&scope=&username=admin&password={}",
        urlencode(ADMIN_PW)
    );
    let r = s.raw(
        "POST",
        "/token",
        &[
            ("Authorization", "Basic Og=="),
            ("Accept", "application/json, text/plain, */*"),
            ("X-Requested-With", "XMLHttpRequest"),
        ],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["token_type"], "Bearer");
    assert!(
        r.header("cache-control").is_some_and(|v| v.contains("no-store")),
        "{r:?}"
    );
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    // Swagger then sends `${token_type} ${access_token}`.
    let r = s.raw(
        "GET",
        "/users/admin",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");

    let body = format!(
        "grant_type=password&scope=&client_id=&client_secret=&username=admin&password={}",
        urlencode(ADMIN_PW)
    );
    let r = s.raw(
        "POST",
        "/token",
        &[],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// poem-openapi: the spec's OAuth2 password flow points at the root-relative `/token`, where
/// the token endpoint is mounted (Swagger resolves it against the selected server).
#[test]
fn poem_token_url_matches_token_endpoint() {
    let s = TestServer::start();
    let r = s.raw("GET", "/openapi.json", &[], None);
    assert_eq!(r.status, 200);
    let spec = r.json();
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap().clone();
    let urls: Vec<&str> = schemes
        .values()
        .filter_map(|v| v["flows"]["password"]["tokenUrl"].as_str())
        .collect();
    assert_eq!(urls, ["/token"], "{schemes:?}");
}

// ---------------------------------------------------------------- jsonwebtoken

/// Claims the server would accept for `admin` (`uver` is admin's current token version), with
/// `patch` merged in (`null` removes a claim).
fn admin_claims(uver: &str, patch: Value) -> Value {
    let n = now();
    let mut c = json!({
        "sub": "admin", "roles": ["admin"], "iat": n - 5, "exp": n + 600,
        "iss": "gatehouse", "jti": "forged-jti-1", "uver": uver,
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn forged(s: &TestServer, patch: Value) -> String {
    let uver = token_payload(&s.admin_token())["uver"].as_str().unwrap().to_owned();
    forge(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &admin_claims(&uver, patch),
        SECRET.as_bytes(),
    )
}

fn assert_invalid_token(s: &TestServer, token: &str, what: &str) {
    let r = s.get("/users/admin", token);
    r.assert_problem(401);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(www.contains(r#"error="invalid_token""#), "{what}: {r:?}");
}

/// jsonwebtoken: the backend (rust_crypto) is installed, so login and a guarded request
/// round-trip without the "no CryptoProvider" panic.
#[test]
fn jsonwebtoken_crypto_backend_round_trip() {
    let s = TestServer::start();
    let t = s.admin_token();
    assert_eq!(t.split('.').count(), 3, "{t}");
    assert_eq!(s.get("/users/admin", &t).status, 200);
    assert_eq!(s.get("/resources/notes", &t).status, 200);
    assert_eq!(s.raw("GET", "/healthz", &[], None).status, 200);
    assert_no_panic(&s);
    assert!(!s.logs().contains("CryptoProvider"), "{}", s.logs());
}

/// Control for the forged-token traps: a well-formed forged token is accepted, so the refusals
/// below are about the one claim each changes.
#[test]
fn jsonwebtoken_forged_control_is_accepted() {
    let s = TestServer::start();
    let r = s.get("/users/admin", &forged(&s, json!({})));
    assert_eq!(r.status, 200, "{r:?}");
}

/// jsonwebtoken: `validate_nbf` defaults to false; gatehouse checks `nbf` (future → 401).
#[test]
fn jsonwebtoken_nbf_is_checked() {
    let s = TestServer::start();
    assert_invalid_token(&s, &forged(&s, json!({"nbf": now() + 3600})), "nbf in an hour");
    let r = s.get("/users/admin", &forged(&s, json!({"nbf": now() - 60})));
    assert_eq!(r.status, 200, "a past nbf is fine: {r:?}");
}

/// jsonwebtoken: the default leeway is 60 s; gatehouse allows its configured 30 s only.
#[test]
fn jsonwebtoken_leeway_is_30s_not_default_60s() {
    let s = TestServer::start();
    let n = now();
    assert_invalid_token(
        &s,
        &forged(&s, json!({"iat": n - 700, "exp": n - 45})),
        "expired 45 s ago",
    );
    let r = s.get("/users/admin", &forged(&s, json!({"iat": n - 700, "exp": n - 5})));
    assert_eq!(r.status, 200, "expired 5 s ago is within the 30 s leeway: {r:?}");
}

/// jsonwebtoken: `alg: none` is refused.
#[test]
fn jsonwebtoken_alg_none_refused() {
    use base64::Engine as _;
    let s = TestServer::start();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.",
        b64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        b64.encode(admin_claims("any", json!({})).to_string())
    );
    assert_invalid_token(&s, &token, "alg none");
}

/// jsonwebtoken (GHSA-h395-gr6q-cpjc): a mistyped `exp`/`nbf` (strings) does not skip validation.
#[test]
fn jsonwebtoken_mistyped_time_claims_refused() {
    let s = TestServer::start();
    assert_invalid_token(&s, &forged(&s, json!({"exp": "1"})), "exp as a string in the past");
    let future = (now() + 3600).to_string();
    assert_invalid_token(&s, &forged(&s, json!({"nbf": future})), "nbf as a string in the future");
}

/// jsonwebtoken: `iss` is unchecked unless set; gatehouse requires its issuer.
#[test]
fn jsonwebtoken_issuer_checked() {
    let s = TestServer::start();
    assert_invalid_token(&s, &forged(&s, json!({"iss": "evil"})), "wrong iss");
    assert_invalid_token(&s, &forged(&s, json!({"iss": null})), "no iss");
    assert_invalid_token(&s, &forged(&s, json!({"exp": null})), "no exp");
}

/// jsonwebtoken: with `aud` configured, issued tokens carry it and are accepted
/// (`set_audience` called); a wrong or missing `aud` is refused.
#[test]
fn jsonwebtoken_audience_set_and_required() {
    let s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_AUDIENCE", "gh-api")]);
    let t = s.admin_token();
    let r = s.get("/users/admin", &t);
    assert_eq!(r.status, 200, "an issued token with aud is refused: {r:?}");
    let r = s.get("/users/admin", &forged(&s, json!({"aud": "gh-api"})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_invalid_token(&s, &forged(&s, json!({"aud": "other"})), "wrong aud");
    assert_invalid_token(&s, &forged(&s, json!({})), "no aud");
}

// ---------------------------------------------------------------- rhai

/// Starts a server with the shipped policies plus `kinds`.
fn server_with(kinds: &[(&str, &str)]) -> (TestServer, String) {
    let dir = policy_dir_with(kinds);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let t = s.admin_token();
    (s, t)
}

/// GET and POST to `kind` are 403 problems within [`ANSWER_BOUND`].
fn assert_denied_fast(s: &TestServer, t: &str, kind: &str) {
    let path = format!("/resources/{kind}");
    let body = json!({"title": "t"});
    for (method, body) in [("GET", None), ("POST", Some(&body))] {
        let start = Instant::now();
        let r = s.req(method, &path, Some(t), body);
        let took = start.elapsed();
        r.assert_problem(403);
        assert!(took < ANSWER_BOUND, "{method} {path} took {took:?}");
    }
    assert_eq!(s.raw("GET", "/healthz", &[], None).status, 200);
}

/// rhai: `Engine::new()` resolves `import` from disk; a policy importing a module file that
/// exports `ALLOW = true` must never be allowed: a literal path outside `lib/` does not compile
/// (the kind does not exist), and a path built at run time is refused then.
#[test]
fn rhai_file_import_refused() {
    let modules = tempfile::tempdir().unwrap();
    std::fs::write(modules.path().join("leak.rhai"), "export const ALLOW = true;\n").unwrap();
    let module = modules.path().join("leak");
    let src = format!("import {:?} as m;\nm::ALLOW\n", module.to_str().unwrap());
    let dynamic = format!("let p = {:?};\nimport p as m;\nm::ALLOW\n", module.to_str().unwrap());
    let (s, t) = server_with(&[
        ("imp", &src),
        ("imp-etc", "import \"/etc/passwd\" as x;\ntrue\n"),
        ("imp-dyn", &dynamic),
    ]);
    for kind in ["imp", "imp-etc"] {
        for (method, body) in [("GET", None), ("POST", Some(json!({"title": "t"})))] {
            s.req(method, &format!("/resources/{kind}"), Some(&t), body.as_ref())
                .assert_problem(404);
        }
    }
    assert_denied_fast(&s, &t, "imp-dyn");
}

/// rhai: the `sleep` builtins block the thread and escape the operation budget; every form of
/// call (int, float, function pointer) is refused at once.
#[test]
fn rhai_sleep_refused_quickly() {
    let (s, t) = server_with(&[
        ("sleep-int", "sleep(10);\ntrue\n"),
        ("sleep-float", "sleep(2.5);\ntrue\n"),
        ("sleep-fn", "let f = Fn(\"sleep\");\nf.call(10);\ntrue\n"),
    ]);
    for kind in ["sleep-int", "sleep-float", "sleep-fn"] {
        assert_denied_fast(&s, &t, kind);
    }
}

/// rhai: by default a misspelt property reads as `()`, so `claims.rolez != "admin"` is true;
/// here it is an error and denies.
#[test]
fn rhai_misspelt_property_denies() {
    let (s, t) = server_with(&[
        ("typo", "claims.rolez != \"admin\"\n"),
        ("typo-data", "resource.data.titel == ()\n"),
    ]);
    assert_denied_fast(&s, &t, "typo");
    assert_denied_fast(&s, &t, "typo-data");
}

/// rhai: `eval` is disabled: a policy calling it never allows (it does not compile, so the kind
/// is absent and GET /policies shows the error; or it denies at run time).
#[test]
fn rhai_eval_refused() {
    let (s, t) = server_with(&[("evil", "eval(\"true\")\n")]);
    let r = s.get("/resources/evil", &t);
    match r.status {
        403 => {
            r.assert_problem(403);
        }
        404 => {
            r.assert_problem(404);
            let p = s.get("/policies", &t);
            let items = p.json()["items"].as_array().unwrap().clone();
            let item = items.iter().find(|i| i["name"] == "evil").unwrap();
            assert!(
                item["error"].as_str().is_some_and(|e| e.contains("evil.rhai:1:")),
                "{item}"
            );
        }
        _ => panic!("eval policy: expected 403 or 404 (not compiled), got {r:?}"),
    }
    let r = s.post("/resources/evil", &t, json!({"title": "t"}));
    assert!(r.status == 403 || r.status == 404, "{r:?}");
}

/// rhai: no operation limit by default; endless loops are stopped and deny within 1 s.
#[test]
fn rhai_operation_limit_stops_loops() {
    let (s, t) = server_with(&[
        ("spin", "let i = 0;\nloop { i += 1; }\n"),
        ("spin-while", "while true {}\n"),
        ("spin-for", "let n = 0;\nfor x in 0..1000000000 { n += x; }\nn > 0\n"),
    ]);
    for kind in ["spin", "spin-while", "spin-for"] {
        assert_denied_fast(&s, &t, kind);
    }
}

/// rhai: no size limits by default; growing a string, an array or a map is stopped and denies.
#[test]
fn rhai_size_limits_stop_growth() {
    let (s, t) = server_with(&[
        ("grow-str", "let s = \"ab\";\nloop { s += s; }\n"),
        ("grow-arr", "let a = [];\nloop { a.push(\"xxxxxxxxxxxxxxxx\"); }\n"),
        (
            "grow-map",
            "let m = #{};\nlet i = 0;\nloop { m[\"k\" + i] = i; i += 1; }\n",
        ),
        ("grow-pad", "let a = [];\na.pad(100000000, 0);\ntrue\n"),
    ]);
    for kind in ["grow-str", "grow-arr", "grow-map", "grow-pad"] {
        assert_denied_fast(&s, &t, kind);
    }
}

/// rhai: a reused Scope keeps top-level `let`s between runs; each request gets a fresh one.
#[test]
fn rhai_scope_not_reused_between_requests() {
    let src = "let leaked = is_def_var(\"seen\");\nlet seen = true;\nif leaked { #{allow: false, reason: \"scope reused\"} } else { true }\n";
    let (s, t) = server_with(&[("fresh", src)]);
    for i in 0..3 {
        let r = s.get("/resources/fresh", &t);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
}

// ---------------------------------------------------------------- sled

/// sled: writes ride a 500 ms background flush unless flushed; everything acknowledged (users,
/// password changes, documents) survives `kill -9` right after the answer.
#[test]
fn sled_acknowledged_write_survives_kill9() {
    let mut s = TestServer::start();
    let t = s.admin_token();
    let r = s.post(
        "/users",
        &t,
        json!({"username": "kilroy", "password": "kilroy-password-1", "roles": ["user"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = s.req(
        "PATCH",
        "/users/kilroy",
        Some(&t),
        Some(&json!({"password": "kilroy-password-2"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = s.post("/resources/notes", &t, json!({"title": format!("n{i}")}));
        assert_eq!(r.status, 201, "{r:?}");
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    s.kill9();
    s.spawn();
    let t = s.admin_token();
    s.login("kilroy", "kilroy-password-2");
    for (i, id) in ids.iter().enumerate() {
        let r = s.get(&format!("/resources/notes/{id}"), &t);
        assert_eq!(r.status, 200, "document {i} lost: {r:?}");
        assert_eq!(r.json()["data"]["title"], format!("n{i}"));
    }
}

/// sled: a second open of the data dir fails with a lock error; the CLI says plainly that a
/// server runs (no panic), and the server keeps working.
#[test]
fn sled_second_handle_refused_while_server_runs() {
    let s = TestServer::start();
    let data = s.data.to_str().unwrap().to_owned();
    let o = cli_timeout(
        &[],
        &["user", "list", "--data-dir", &data],
        None,
        s.dir.path(),
        Duration::from_secs(30),
    )
    .expect("user list hung");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{all}");
    assert_ne!(o.status.code(), Some(101), "panicked: {all}");
    assert!(
        !all.contains("panicked") && !all.contains("WouldBlock"),
        "not plain: {all}"
    );
    assert!(all.to_lowercase().contains("server"), "{all}");
    let t = s.admin_token();
    assert_eq!(s.get("/users/admin", &t).status, 200);
}

// ---------------------------------------------------------------- notify

fn probe(s: &TestServer, t: &str, kind: &str) -> (u16, Option<String>) {
    let r = s.get(&format!("/resources/{kind}"), t);
    (r.status, r.json()["detail"].as_str().map(str::to_owned))
}

fn deny(reason: &str) -> String {
    format!("#{{allow: false, reason: \"{reason}\"}}\n")
}

fn applied_within_bound(s: &TestServer, t: &str, kind: &str, reason: &str, what: &str) {
    let want = (403, Some(reason.to_owned()));
    let took = wait_until(Duration::from_secs(5), || probe(s, t, kind) == want)
        .unwrap_or_else(|| panic!("{what}: not picked up within 5 s (now {:?})", probe(s, t, kind)));
    assert!(took < RELOAD_BOUND, "{what}: took {took:?}");
}

/// notify: watching the file misses the second temp-file-and-rename save; the directory watch
/// picks up every one of several saves in a row.
#[test]
fn notify_atomic_save_picked_up_twice_in_a_row() {
    let (s, t) = server_with(&[("atom", &deny("save-0"))]);
    for i in 1..=3 {
        let reason = format!("save-{i}");
        s.write_policy_atomic("atom", &deny(&reason));
        applied_within_bound(&s, &t, "atom", &reason, &format!("atomic save {i}"));
    }
}

/// notify: vim's save (rename to backup, write a new file, delete the backup) is picked up,
/// twice in a row.
#[test]
fn notify_vim_style_save_picked_up_twice() {
    let (s, t) = server_with(&[("vim", &deny("v0"))]);
    let file = s.policies.join("vim.rhai");
    let backup = s.policies.join("vim.rhai~");
    for i in 1..=2 {
        let reason = format!("v{i}");
        std::fs::rename(&file, &backup).unwrap();
        std::fs::write(&file, deny(&reason)).unwrap();
        std::fs::remove_file(&backup).unwrap();
        applied_within_bound(&s, &t, "vim", &reason, &format!("vim save {i}"));
    }
}

/// notify: a Kubernetes ConfigMap update (swapping the `..data` symlink) never names the policy
/// file in its events; it is still picked up.
#[test]
fn notify_configmap_symlink_swap_picked_up() {
    use std::os::unix::fs::symlink;
    let s = TestServer::start();
    let t = s.admin_token();
    let p = &s.policies;
    std::fs::create_dir(p.join("..2026_01")).unwrap();
    std::fs::write(p.join("..2026_01/cm.rhai"), deny("cm-1")).unwrap();
    symlink("..2026_01", p.join("..data")).unwrap();
    symlink("..data/cm.rhai", p.join("cm.rhai")).unwrap();
    applied_within_bound(&s, &t, "cm", "cm-1", "configmap initial");

    for (i, stamp) in [(2, "..2026_02"), (3, "..2026_03")] {
        let reason = format!("cm-{i}");
        std::fs::create_dir(p.join(stamp)).unwrap();
        std::fs::write(p.join(stamp).join("cm.rhai"), deny(&reason)).unwrap();
        symlink(stamp, p.join("..data_tmp")).unwrap();
        let old = std::fs::read_link(p.join("..data")).unwrap();
        std::fs::rename(p.join("..data_tmp"), p.join("..data")).unwrap();
        std::fs::remove_dir_all(p.join(old)).unwrap();
        applied_within_bound(&s, &t, "cm", &reason, &format!("configmap swap {i}"));
    }
}

// ---------------------------------------------------------------- argon2

/// argon2: hashing is CPU-heavy; done off the async workers, 20 concurrent wrong-password logins
/// do not stall other requests: every /healthz meanwhile answers in under 2 s.
#[test]
fn argon2_hashing_does_not_block_other_requests() {
    let s = TestServer::start();
    let stop = AtomicBool::new(false);
    let logins = AtomicUsize::new(0);
    let bad: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut slowest = Duration::ZERO;
    let mut samples = 0;
    let mut failed_health = None;
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = s.token_form(&[
                        ("grant_type", "password"),
                        ("username", "admin"),
                        ("password", "definitely-wrong-pw"),
                    ]);
                    if r.status != 400 || r.json()["error"] != "invalid_grant" {
                        bad.lock().unwrap().push(format!("{r:?}"));
                    }
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let start = Instant::now();
            let r = s.try_req("GET", "/healthz", None);
            let took = start.elapsed();
            if !r.as_ref().is_ok_and(|r| r.status == 200) {
                failed_health = Some(format!("{r:?}"));
                break;
            }
            slowest = slowest.max(took);
            samples += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let logins = logins.into_inner();
    eprintln!("{logins} failed logins; {samples} healthz samples, slowest {slowest:?}");
    assert_eq!(failed_health, None, "GET /healthz failed during the login flood");
    let bad = bad.into_inner().unwrap();
    assert!(
        bad.is_empty(),
        "{} bad login answers, first: {:?}",
        bad.len(),
        bad.first()
    );
    assert!(logins >= 20, "the login flood barely ran");
    assert!(samples >= 5, "only {samples} healthz samples");
    assert!(slowest < Duration::from_secs(2), "slowest /healthz took {slowest:?}");
}
