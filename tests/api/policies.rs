//! Policies fail closed over HTTP: scripts that throw, return the wrong type, run forever, recurse,
//! grow memory, sleep, misspell a property or import a file deny with a fast 403 that never shows
//! their source; missing system policies deny; files that never compiled are no kind at all.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// Appears in every failing script (as a comment); must never reach a client.
const MARKER: &str = "SOURCE-MARKER-policies-5f1c9";

/// The bound of the contract for a policy decision to come back (with no margin: the engine's
/// own budget is far below it).
const ANSWER_BOUND: Duration = Duration::from_secs(1);

/// A policy source: a comment with [`MARKER`] and then `code`.
fn with_marker(code: &str) -> String {
    format!("// {MARKER}\n{code}\n")
}

/// Starts a server whose policies are the shipped ones plus `kinds` (`(kind, code)`, each code
/// prefixed with the marker comment) and checks that each kind compiled, so that what the tests
/// see is the runtime behaviour.
fn server_with(kinds: &[(&str, &str)]) -> (TestServer, String) {
    let sources: Vec<(String, String)> = kinds.iter().map(|(k, c)| ((*k).to_owned(), with_marker(c))).collect();
    let refs: Vec<(&str, &str)> = sources.iter().map(|(k, s)| (k.as_str(), s.as_str())).collect();
    let dir = policy_dir_with(&refs);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let token = s.admin_token();
    let r = s.get("/policies", &token);
    assert_eq!(r.status, 200, "{r:?}");
    for (kind, _) in kinds {
        let item = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == *kind)
            .cloned()
            .unwrap_or_else(|| panic!("GET /policies lacks `{kind}`: {r:?}"));
        assert!(
            item["version"].is_string() && item["error"].is_null(),
            "precondition: `{kind}` should compile (this test is about runtime failures): {item}"
        );
    }
    (s, token)
}

/// Sends GET (list) and POST (create) to `kind` and asserts each is a timely 403 problem that
/// shows neither the marker nor `leak` (a fragment of the script's code).
fn assert_fails_closed(s: &TestServer, token: &str, kind: &str, leak: &str) {
    let path = format!("/resources/{kind}");
    let body = json!({"title": "t"});
    for (method, body) in [("GET", None), ("POST", Some(&body))] {
        let start = Instant::now();
        let r = s.req(method, &path, Some(token), body);
        let took = start.elapsed();
        assert!(
            !(200..300).contains(&r.status) && r.status < 500,
            "{method} {path}: fail closed means no 2xx and no 5xx: {r:?}"
        );
        r.assert_problem(403);
        assert!(
            took < ANSWER_BOUND,
            "{method} {path} took {took:?} (bound {ANSWER_BOUND:?})"
        );
        assert!(
            !r.body.contains(MARKER),
            "{method} {path}: body shows the script source: {r:?}"
        );
        assert!(
            !r.body.contains(leak),
            "{method} {path}: body shows script code `{leak}`: {r:?}"
        );
    }
    let h = s.raw("GET", "/healthz", &[], None);
    assert_eq!(h.status, 200, "server unhealthy after `{kind}`: {h:?}");
    assert_eq!(h.json(), json!({"status": "ok"}));
}

/// A script that throws denies with 403.
#[test]
fn policy_runtime_error_denies() {
    let (s, t) = server_with(&[("fail-throw", r#"throw "thrown-secret-7d2e";"#)]);
    assert_fails_closed(&s, &t, "fail-throw", "thrown-secret-7d2e");
    assert!(
        s.logs().contains("fail-throw.rhai"),
        "the failure is logged with its file"
    );
}

/// Scripts returning 42, "yes" or () deny with 403: only true, false or the map decide.
#[test]
fn policy_wrong_result_type_denies() {
    let (s, t) = server_with(&[
        ("fail-int", "40 + 2"),
        ("fail-str", r#""ye" + "s""#),
        ("fail-unit", "let nothing = ();\nnothing"),
    ]);
    assert_fails_closed(&s, &t, "fail-int", "40 + 2");
    assert_fails_closed(&s, &t, "fail-str", r#""ye" + "s""#);
    assert_fails_closed(&s, &t, "fail-unit", "let nothing");
}

/// `loop {}` is stopped by the limits and denies within 1 s.
#[test]
fn policy_endless_loop_denies_quickly() {
    let (s, t) = server_with(&[("fail-loop", "let spins = 0;\nloop { spins += 1; }")]);
    assert_fails_closed(&s, &t, "fail-loop", "spins += 1");
}

/// Endless recursion is stopped by the call-depth limit and denies.
#[test]
fn policy_endless_recursion_denies() {
    let (s, t) = server_with(&[("fail-recurse", "fn down(n) { down(n + 1) }\ndown(0)")]);
    assert_fails_closed(&s, &t, "fail-recurse", "down(n + 1)");
}

/// A string that grows without end is stopped by the size limit and denies.
#[test]
fn policy_endless_string_growth_denies() {
    let (s, t) = server_with(&[("fail-grow", "let blob = \"grow\";\nloop { blob += blob; }")]);
    assert_fails_closed(&s, &t, "fail-grow", "blob += blob");
}

/// `sleep(10)` does not block: it denies well within 1 s.
#[test]
fn policy_sleep_denies_quickly() {
    let (s, t) = server_with(&[("fail-sleep", "sleep(10);\ntrue")]);
    assert_fails_closed(&s, &t, "fail-sleep", "sleep(10)");
}

/// Reading the misspelt `claims.rolez` is an error (deny), not `()` (which would allow here).
#[test]
fn policy_misspelt_property_denies() {
    let (s, t) = server_with(&[("fail-typo", r#"claims.rolez != "nobody""#)]);
    assert_fails_closed(&s, &t, "fail-typo", "claims.rolez");
}

/// `import "/etc/passwd" as x` is refused when the file is compiled (only `lib/<name>` may be
/// imported), so the kind never exists; an import whose path is only known at run time is
/// refused then, and denies.
#[test]
fn policy_file_import_denies() {
    let dir = policy_dir_with(&[
        ("fail-import", "import \"/etc/passwd\" as x;\ntrue"),
        (
            "fail-dyn-import",
            "let p = \"/etc/\" + \"passwd\";\nimport p as x;\ntrue",
        ),
    ]);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let t = s.admin_token();
    let items = s.get("/policies", &t).json()["items"].as_array().unwrap().clone();
    let st = items.iter().find(|i| i["name"] == "fail-import").unwrap();
    assert!(st["version"].is_null(), "{st}");
    let err = st["error"].as_str().unwrap();
    assert!(
        err.starts_with("fail-import.rhai:1:8:") && err.contains("may only import"),
        "{err}"
    );
    for method in ["GET", "POST"] {
        let r = s.req(method, "/resources/fail-import", Some(&t), Some(&json!({"title": "t"})));
        r.assert_problem(404);
    }
    assert_fails_closed(&s, &t, "fail-dyn-import", "string literal");
    assert!(!s.logs().contains("root:x:0:0"), "no file content read");
}

/// `#{allow: false, reason: ...}` gives 403 whose `detail` carries the reason.
#[test]
fn deny_map_reason_reaches_detail() {
    let (s, t) = server_with(&[("deny-why", r#"#{allow: false, reason: "x: not today"}"#)]);
    for (method, body) in [("GET", None), ("POST", Some(json!({"title": "t"})))] {
        let r = s.req(method, "/resources/deny-why", Some(&t), body.as_ref());
        let p = r.assert_problem(403);
        assert!(
            p["detail"].as_str().unwrap().contains("x: not today"),
            "{method}: detail lacks the reason: {r:?}"
        );
    }
}

/// `#{allow: true}` allows: create 201, list 200, read 200.
#[test]
fn allow_map_allows() {
    let (s, t) = server_with(&[("allow-map", "#{allow: true}")]);
    let r = s.post("/resources/allow-map", &t, json!({"title": "ok"}));
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = s.get("/resources/allow-map", &t);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1, "{r:?}");
    let r = s.get(&format!("/resources/allow-map/{id}"), &t);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"], json!({"title": "ok"}));
}

/// Deleting `_users.rhai` makes every /users request 403, for admin too (never open).
#[test]
fn deleting_users_policy_denies_admin() {
    let s = TestServer::start();
    let t = s.admin_token();
    assert_eq!(s.get("/users", &t).status, 200);
    s.remove_policy("_users");
    let gone = wait_until(Duration::from_secs(5), || s.get("/users", &t).status != 200);
    assert!(gone.is_some(), "GET /users still 200 after deleting _users.rhai");
    s.get("/users", &t).assert_problem(403);
    s.get("/users/admin", &t).assert_problem(403);
    s.post(
        "/users",
        &t,
        json!({"username": "late", "password": "late-password-1", "roles": []}),
    )
    .assert_problem(403);
    s.req("DELETE", "/users/admin", Some(&t), None).assert_problem(403);
}

/// Deleting `_policies.rhai` makes GET /policies 403 (never open).
#[test]
fn deleting_policies_policy_denies() {
    let s = TestServer::start();
    let t = s.admin_token();
    assert_eq!(s.get("/policies", &t).status, 200);
    s.remove_policy("_policies");
    let gone = wait_until(Duration::from_secs(5), || s.get("/policies", &t).status != 200);
    assert!(gone.is_some(), "GET /policies still 200 after deleting _policies.rhai");
    s.get("/policies", &t).assert_problem(403);
}

/// With no system policies at all from the start, /users and /policies deny admin.
#[test]
fn no_system_policies_at_start_denies() {
    let s = TestServer::start_with(None, &[]);
    let t = s.admin_token();
    s.get("/users", &t).assert_problem(403);
    s.get("/users/admin", &t).assert_problem(403);
    s.get("/policies", &t).assert_problem(403);
}

/// Splits `…<file>:LINE:COL: message` into its numbers and message.
fn diag_parts(error: &str, file: &str) -> Option<(u32, u32, String)> {
    let at = error.find(&format!("{file}:"))?;
    let rest = &error[at + file.len() + 1..];
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    let msg = parts.next()?.strip_prefix(' ')?.to_owned();
    Some((line, col, msg))
}

/// A kind whose file never compiled does not exist (404), but GET /policies lists it with
/// its error as `file:line:col: message`.
#[test]
fn never_compiled_kind_is_404_but_listed_with_error() {
    let dir = policy_dir_with(&[("broken", "// line one\nlet x = ;\ntrue\n")]);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let t = s.admin_token();
    s.get("/resources/broken", &t).assert_problem(404);
    s.post("/resources/broken", &t, json!({"title": "t"}))
        .assert_problem(404);
    let r = s.get("/policies", &t);
    assert_eq!(r.status, 200, "{r:?}");
    let items = r.json()["items"].as_array().unwrap().clone();
    let item = items
        .iter()
        .find(|i| i["name"] == "broken")
        .unwrap_or_else(|| panic!("GET /policies lacks `broken`: {r:?}"));
    assert!(item["version"].is_null(), "never compiled, so no version: {item}");
    let error = item["error"].as_str().unwrap_or_else(|| panic!("no error: {item}"));
    let (line, col, msg) = diag_parts(error, "broken.rhai").unwrap_or_else(|| panic!("not file:line:col: {error}"));
    assert_eq!(line, 2, "{error}");
    assert!(col >= 1 && !msg.trim().is_empty(), "{error}");
}

/// GET /policies as a non-admin is 403.
#[test]
fn policies_endpoint_denies_non_admin() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let t = s.user(&admin, "reader", &["user"]);
    s.get("/policies", &t).assert_problem(403);
}
