//! The operator's policy tools: tests that gate activation, libraries, remote editing, dry runs,
//! the decision log with its ids, replay, forced reload, helpers and limits.

use std::{path::Path, time::Duration};

use serde_json::{json, Value};

use crate::helpers::*;

const NOTES_TESTS: &str = r#"
[[test]]
name = "owner reads"
claims = { sub = "ann", roles = ["user"] }
action = "read"
resource = { id = "n1", owner = "ann" }
expect = "allow"

[[test]]
name = "stranger is told why"
claims = { sub = "bob", roles = ["user"] }
action = "read"
resource = { id = "n1", owner = "ann" }
expect = "deny"
reason = "not yours"
"#;

const GOOD: &str =
    r#"if resource.owner == () || resource.owner == claims.sub { true } else { #{allow: false, reason: "not yours"} }"#;
const GOOD_V2: &str = r#"// v2
if resource.owner == () || resource.owner == claims.sub { true } else { #{allow: false, reason: "not yours"} }"#;
/// Compiles, but lets strangers read: fails "stranger is told why".
const LEAKY: &str = "true";

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn status_of(s: &TestServer, admin: &str, name: &str) -> Value {
    let r = s.get("/policies", admin);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn text(s: &TestServer, method: &str, path: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    s.raw(method, path, &headers, Some(("text/plain", body.as_bytes())))
}

/// A server whose policy dir has `notes.rhai` = `policy` and `tests/notes.toml`.
fn server_with_tests(policy: &str) -> TestServer {
    let dir = policy_dir_with(&[("notes", policy)]);
    write(dir.path(), "tests/notes.toml", NOTES_TESTS);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    // start_with copies only the top-level `.rhai` files.
    write(&s.policies, "tests/notes.toml", NOTES_TESTS);
    s
}

#[test]
fn shipped_policies_pass_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        &[],
        &["policy", "test", shipped_policies().to_str().unwrap()],
        None,
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for file in ["notes.toml", "_users.toml", "_policies.toml", "tasks.toml"] {
        assert!(stdout.contains(file), "{file} missing from {stdout}");
    }
}

#[test]
fn policy_test_names_each_failure_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.rhai", LEAKY);
    write(dir.path(), "tests/notes.toml", NOTES_TESTS);
    write(dir.path(), "tests/ghost.toml", NOTES_TESTS);
    write(dir.path(), "tests/broken.toml", "[[test]\n");
    let out = cli(&[], &["policy", "test", dir.path().to_str().unwrap()], None, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(r#"`stranger is told why`: expected deny (reason: "not yours"), got allow"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("ghost.rhai"),
        "a test file without its policy fails: {stdout}"
    );
    assert!(stdout.contains("broken.toml:1:"), "parse errors have a line: {stdout}");
    assert!(stdout.contains("1 passed, 3 failed"), "{stdout}");
}

/// A version whose tests fail never goes live, from the watcher or anywhere else; the status
/// shows the failing cases; fixing it lets the next version through.
#[test]
fn failing_tests_keep_the_last_good_version() {
    let s = server_with_tests(GOOD);
    let admin = s.admin_token();
    let bob = s.user(&admin, "bob", &["user"]);
    let ann = s.user(&admin, "ann", &["user"]);
    let id = s.post("/resources/notes", &ann, json!({"title": "a"})).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/resources/notes/{id}");
    assert!(
        wait_until(Duration::from_secs(3), || status_of(&s, &admin, "notes")
            ["tests_passed"]
            == 2)
        .is_some(),
        "{:?}",
        status_of(&s, &admin, "notes")
    );
    let good_version = status_of(&s, &admin, "notes")["version"].clone();

    s.write_policy_atomic("notes", LEAKY);
    let blocked = wait_until(Duration::from_secs(3), || {
        !status_of(&s, &admin, "notes")["error"].is_null()
    });
    assert!(blocked.is_some(), "the failing version must be reported");
    let st = status_of(&s, &admin, "notes");
    assert_eq!(st["version"], good_version, "{st}");
    assert!(st["error"].as_str().unwrap().contains("1 of 2 tests"), "{st}");
    assert_eq!(st["failing_tests"].as_array().unwrap().len(), 1, "{st}");
    assert!(
        st["failing_tests"][0]
            .as_str()
            .unwrap()
            .contains("stranger is told why"),
        "{st}"
    );
    let r = s.get(&path, &bob);
    assert_eq!((r.status, r.json()["detail"].as_str()), (403, Some("not yours")));

    s.write_policy_atomic("notes", GOOD_V2);
    assert!(wait_until(Duration::from_secs(3), || {
        let st = status_of(&s, &admin, "notes");
        st["error"].is_null() && st["version"] != good_version
    })
    .is_some());

    // Changing only the tests re-tests the version in force; a failure is reported, the
    // version keeps running (it is what runs), and nothing else changes.
    write(
        &s.policies,
        "tests/notes.toml",
        &NOTES_TESTS.replace("not yours", "go away"),
    );
    assert!(
        wait_until(Duration::from_secs(3), || !status_of(&s, &admin, "notes")["error"]
            .is_null())
        .is_some()
    );
    assert_eq!(s.get(&path, &bob).status, 403);
    assert_eq!(s.get(&path, &ann).status, 200);
}

#[test]
fn libraries_are_shared_reloaded_and_contained() {
    let s = TestServer::start_with(None, &[]);
    let admin_src = std::fs::read_to_string(shipped_policies().join("_policies.rhai")).unwrap();
    s.write_policy("_policies", &admin_src);
    write(&s.policies, "lib/rules.rhai", "fn verdict() { \"one\" }");
    s.write_policy(
        "memo",
        "import \"lib/rules\" as rules;\n#{allow: false, reason: rules::verdict()}",
    );
    let admin = s.admin_token();
    let deny_reason = || s.get("/resources/memo", &admin).json()["detail"].clone();
    assert!(wait_until(Duration::from_secs(3), || deny_reason() == "one").is_some());
    let st = status_of(&s, &admin, "memo");
    assert_eq!(st["imports"], json!(["rules"]), "{st}");
    let v1 = st["version"].clone();

    // Changing the library reloads its dependant, as a new version.
    write(&s.policies, "lib/rules.rhai", "fn verdict() { \"two\" }");
    assert!(wait_until(Duration::from_secs(3), || deny_reason() == "two").is_some());
    assert_ne!(status_of(&s, &admin, "memo")["version"], v1);

    // A broken library keeps the dependant on its last good version, and says so.
    write(&s.policies, "lib/rules.rhai", "fn verdict( {");
    assert!(
        wait_until(Duration::from_secs(3), || !status_of(&s, &admin, "lib/rules")["error"]
            .is_null())
        .is_some()
    );
    assert!(
        wait_until(Duration::from_secs(3), || !status_of(&s, &admin, "memo")["error"]
            .is_null())
        .is_some()
    );
    assert_eq!(deny_reason(), "two");
    let err = status_of(&s, &admin, "memo")["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("lib/rules.rhai") && err.starts_with("memo.rhai:1:8:"),
        "{err}"
    );

    // Nothing outside policies/lib/ can be imported.
    std::fs::write(s.dir.path().join("secret.rhai"), "export const X = 1;").unwrap();
    for path in ["../secret", "lib/../../secret", "/etc/passwd", "lib/sub/x"] {
        s.write_policy("escape", &format!("import \"{path}\" as m;\ntrue"));
        let r = s.req("POST", "/policies/reload", Some(&admin), None);
        assert_eq!(r.status, 200, "{r:?}");
        let st = status_of(&s, &admin, "escape");
        assert!(st["version"].is_null(), "{path}: {st}");
        assert!(
            st["error"].as_str().unwrap().contains("may only import"),
            "{path}: {st}"
        );
    }
}

#[test]
fn remote_editing_vets_writes_records_and_locks_out_on_delete() {
    let s = server_with_tests(GOOD);
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let r = s.get("/policies/notes", &admin);
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/plain"), "{r:?}");
    assert_eq!(r.body, GOOD);
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(s.get("/policies/notes", &ann).status, 403);
    assert_eq!(s.get("/policies/nope", &admin).status, 404);
    assert_eq!(s.get("/policies/Bad%20Name", &admin).status, 400);

    // Does not compile: 422 with file:line:col, file unchanged.
    let r = text(&s, "PUT", "/policies/notes", &admin, "true &&\n  (", &[]);
    let p = r.assert_problem(422);
    assert!(p["errors"][0].as_str().unwrap().starts_with("notes.rhai:"), "{p}");
    // Compiles, fails its tests: 422 with the failing case, file unchanged.
    let r = text(&s, "PUT", "/policies/notes", &admin, LEAKY, &[]);
    let p = r.assert_problem(422);
    assert!(p["errors"][0].as_str().unwrap().contains("stranger is told why"), "{p}");
    assert_eq!(std::fs::read_to_string(s.policies.join("notes.rhai")).unwrap(), GOOD);
    // A stale If-Match: 412, unchanged.
    let r = text(
        &s,
        "PUT",
        "/policies/notes",
        &admin,
        GOOD_V2,
        &[("If-Match", "\"0000000000000000\"")],
    );
    r.assert_problem(412);
    // Good: written, live at once, ETag is the new content's.
    let r = text(&s, "PUT", "/policies/notes", &admin, GOOD_V2, &[("If-Match", &etag)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.header("etag").unwrap(), etag);
    assert_eq!(r.json()["tests_passed"], 2);
    assert_eq!(std::fs::read_to_string(s.policies.join("notes.rhai")).unwrap(), GOOD_V2);
    assert!(r.header("x-decision-id").is_some());
    // A new kind, by a plain user: 403; by an admin: 201, and the kind exists at once.
    assert_eq!(text(&s, "PUT", "/policies/memo", &ann, "true", &[]).status, 403);
    let r = text(&s, "PUT", "/policies/memo", &admin, "true", &[]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.get("/resources/memo", &ann).status, 200);
    // Delete: the kind is gone.
    assert_eq!(s.req("DELETE", "/policies/memo", Some(&admin), None).status, 204);
    assert_eq!(s.get("/resources/memo", &ann).status, 404);
    assert_eq!(s.req("DELETE", "/policies/memo", Some(&admin), None).status, 404);

    // Every change is recorded: who, when, old and new version.
    let h = s.get("/policies/notes/history", &admin).json();
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{h}");
    assert_eq!(items[0]["by"], "admin");
    assert_eq!(items[0]["change"], "update");
    assert_eq!(format!("\"{}\"", items[0]["old_version"].as_str().unwrap()), etag);
    let memo = s.get("/policies/memo/history", &admin).json();
    let changes: Vec<&str> = memo["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["create", "delete"]);

    // Deleting `_policies.rhai` locks /policies for everyone: fail closed.
    assert_eq!(s.req("DELETE", "/policies/_policies", Some(&admin), None).status, 204);
    assert_eq!(s.get("/policies", &admin).status, 403);
    assert_eq!(text(&s, "PUT", "/policies/_policies", &admin, "true", &[]).status, 403);
}

#[test]
fn dry_runs_decide_without_touching_anything() {
    let s = server_with_tests(GOOD);
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let body = json!({"kind": "notes", "claims": {"sub": "bob", "roles": []}, "action": "read",
                      "resource": {"id": "n1", "owner": "ann"}});
    let r = s.post("/policies/evaluate", &admin, body.clone());
    assert_eq!(r.status, 200, "{r:?}");
    let d = r.json();
    assert_eq!(
        (d["allow"].as_bool(), d["outcome"].as_str(), d["reason"].as_str()),
        (Some(false), Some("deny"), Some("not yours"))
    );
    assert_eq!(d["policy_version"], status_of(&s, &admin, "notes")["version"]);
    assert!(d["duration_us"].as_u64().is_some());

    let mut with_source = body.clone();
    with_source["source"] = json!("claims.sub == \"bob\"");
    let d = s.post("/policies/evaluate", &admin, with_source.clone()).json();
    assert_eq!(d["outcome"], "allow", "{d}");
    with_source["source"] = json!("claims.nope");
    let d = s.post("/policies/evaluate", &admin, with_source.clone()).json();
    assert_eq!(d["outcome"], "error", "{d}");
    assert!(d["error"].as_str().unwrap().contains("nope"), "operators see why: {d}");
    with_source["source"] = json!("(((");
    s.post("/policies/evaluate", &admin, with_source).assert_problem(422);
    let mut unknown = body.clone();
    unknown["kind"] = json!("nothing");
    s.post("/policies/evaluate", &admin, unknown).assert_problem(404);
    s.post("/policies/evaluate", &ann, body).assert_problem(403);
    assert_eq!(std::fs::read_to_string(s.policies.join("notes.rhai")).unwrap(), GOOD);
}

fn decisions(s: &TestServer) -> Vec<Value> {
    std::fs::read_to_string(s.data.join("decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// From a user's complaint (the 403 they got) to the exact decision and its reason.
#[test]
fn decision_ids_lead_to_the_logged_decision() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let bob = s.user(&admin, "bob", &["user"]);
    let r = s.post("/resources/notes", &ann, json!({"title": "secret plans"}));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = s.raw(
        "DELETE",
        &format!("/resources/notes/{id}"),
        &[
            ("Authorization", &format!("Bearer {bob}")),
            ("X-Request-Id", "complaint-42"),
        ],
        None,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-request-id"), Some("complaint-42"));
    let decision_id = r.header("x-decision-id").unwrap().to_owned();
    let found = wait_until(Duration::from_secs(2), || {
        decisions(&s).iter().any(|d| d["decision_id"] == decision_id.as_str())
    });
    assert!(found.is_some());
    let all = decisions(&s);
    let rec = all.iter().find(|d| d["decision_id"] == decision_id.as_str()).unwrap();
    assert_eq!(rec["request_id"], "complaint-42");
    assert_eq!(rec["sub"], "bob");
    assert_eq!(rec["policy"], "notes");
    assert_eq!(rec["action"], "delete");
    assert_eq!(rec["resource_id"], id.as_str());
    assert_eq!(rec["outcome"], "deny");
    assert_eq!(rec["reason"], "only the owner of a note may delete it");
    assert_eq!(rec["policy_version"], status_of(&s, &admin, "notes")["version"]);
    assert!(rec["duration_us"].as_u64().is_some() && rec["time"].as_str().unwrap().ends_with('Z'));
    // Document data stays out of the log by default, and credentials always do.
    let text = std::fs::read_to_string(s.data.join("decisions.jsonl")).unwrap();
    assert!(
        !text.contains("secret plans"),
        "document data leaked into the decision log"
    );
    assert!(!text.contains(&bob) && !text.contains("password"), "credentials leaked");

    // A made-up or hostile request id is replaced.
    let r = s.raw("GET", "/healthz", &[("X-Request-Id", "evil\tid")], None);
    let rid = r.header("x-request-id").unwrap();
    assert!(rid != "evil\tid" && rid.len() == 36, "{rid}");
    assert!(r.header("x-decision-id").is_none(), "no policy decided /healthz");
}

#[test]
fn decision_log_settings() {
    // Off: no file, but the ids are still sent.
    let s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_DECISION_LOG", "off")]);
    let admin = s.admin_token();
    let r = s.get("/resources/notes", &admin);
    assert!(r.header("x-decision-id").is_some());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s.data.join("decisions.jsonl").exists());
    let r = s.req(
        "POST",
        "/policies/notes/replay",
        Some(&admin),
        Some(&json!({"source": "true"})),
    );
    r.assert_problem(409);
    drop(s);

    // Elsewhere, with data, mirrored to the tracing log.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit/decisions.jsonl");
    let s = TestServer::start_with(
        Some(&shipped_policies()),
        &[
            ("GATEHOUSE_DECISION_LOG", log.to_str().unwrap()),
            ("GATEHOUSE_DECISION_LOG_DATA", "true"),
            ("GATEHOUSE_DECISION_LOG_TRACING", "true"),
        ],
    );
    let admin = s.admin_token();
    s.post("/resources/notes", &admin, json!({"title": "kept on purpose"}));
    assert!(wait_until(Duration::from_secs(2), || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("kept on purpose"))
    .is_some());
    assert!(s.logs().contains("gatehouse::decision"), "{}", s.logs());
}

#[test]
fn replay_shows_what_a_candidate_would_change() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let bob = s.user(&admin, "bob", &["user"]);
    let id = s.post("/resources/notes", &ann, json!({"title": "a"})).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/resources/notes/{id}");
    assert_eq!(s.get(&path, &ann).status, 200);
    assert_eq!(s.get(&path, &bob).status, 403);
    std::thread::sleep(Duration::from_millis(300));

    // A candidate that lets everyone read: bob's denied read would now be allowed.
    let candidate = "action == \"read\" || action == \"create\" || resource.owner == claims.sub";
    let r = s.post(
        "/policies/notes/replay",
        &admin,
        json!({"source": candidate, "last": 10}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let out = r.json();
    assert_eq!(out["evaluated"], 3, "{out}");
    // The create was decided on the note's title, which the log leaves out by default: it is
    // not compared rather than reported as a change.
    assert_eq!(
        (out["without_data"].as_u64(), out["not_replayable"].as_u64()),
        (Some(3), Some(1)),
        "{out}"
    );
    let changed = out["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{out}");
    assert_eq!(
        (
            changed[0]["sub"].as_str(),
            changed[0]["before"].as_str(),
            changed[0]["after"].as_str()
        ),
        (Some("bob"), Some("deny"), Some("allow"))
    );
    assert_eq!(changed[0]["resource_id"], id.as_str());
    s.post("/policies/notes/replay", &admin, json!({"source": "((("}))
        .assert_problem(422);
    s.post("/policies/notes/replay", &admin, json!({"source": "true", "last": 0}))
        .assert_problem(400);
    s.post("/policies/notes/replay", &ann, json!({"source": "true"}))
        .assert_problem(403);

    // The same from the CLI: exit 2 when something would change, 0 when nothing would.
    let file = s.dir.path().join("candidate.rhai");
    std::fs::write(&file, candidate).unwrap();
    let out = s.cli(
        &["policy", "replay", "notes", file.to_str().unwrap(), "--last", "10"],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sub=bob") && stdout.contains("deny -> allow"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 3 decision(s) would change"), "{stdout}");
    let same = std::fs::read_to_string(s.policies.join("notes.rhai")).unwrap();
    std::fs::write(&file, same).unwrap();
    let out = s.cli(&["policy", "replay", "notes", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn policy_eval_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pol = shipped_policies();
    let env = [("GATEHOUSE_POLICIES".to_owned(), pol.to_str().unwrap().to_owned())];
    let input = r#"{"claims": {"sub": "bob", "roles": ["user"]}, "action": "delete", "resource": {"id": "n1", "owner": "ann"}}"#;
    let out = cli(
        &env,
        &["policy", "eval", "notes", "--input", "-"],
        Some(input),
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["reason"], "only the owner of a note may delete it");
    let allowed = input.replace("bob", "ann");
    let out = cli(
        &env,
        &["policy", "eval", "notes", "--input", "-"],
        Some(&allowed),
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let out = cli(
        &env,
        &["policy", "eval", "notes", "--input", "-"],
        Some("{\"claims\": 5}"),
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

/// Request facts and helpers reach the policy: client address, named headers (never the
/// credentials), time.
#[test]
fn request_helpers_reach_policies() {
    let policy = r#"
        if "authorization" in request.headers || "cookie" in request.headers { return #{allow: false, reason: "leak"}; }
        if !cidr_match(["127.0.0.0/8", "::1"], request.ip) { return #{allow: false, reason: "not local"}; }
        if !("x-tenant" in request.headers) || !glob_match("acme-*", request.headers["x-tenant"]) {
            return #{allow: false, reason: "wrong tenant"};
        }
        hour(request.time) >= 0 && weekday(request.time) != ""
    "#;
    let dir = policy_dir_with(&[("memo", policy)]);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let admin = s.admin_token();
    let auth = format!("Bearer {admin}");
    let r = s.raw(
        "GET",
        "/resources/memo",
        &[("Authorization", &auth), ("Cookie", "a=b"), ("X-Tenant", "acme-eu")],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.raw(
        "GET",
        "/resources/memo",
        &[("Authorization", &auth), ("X-Tenant", "other")],
        None,
    );
    assert_eq!(r.json()["detail"], "wrong tenant");
}

#[test]
fn script_limits_are_settings() {
    let policy = "let n = 0; for i in 0..2000 { n += i; } n > 0";
    let dir = policy_dir_with(&[("memo", policy)]);
    let s = TestServer::start_with(Some(dir.path()), &[]);
    let admin = s.admin_token();
    assert_eq!(s.get("/resources/memo", &admin).status, 200);
    drop(s);
    let s = TestServer::start_with(Some(dir.path()), &[("GATEHOUSE_POLICY_MAX_OPERATIONS", "1000")]);
    let admin = s.admin_token();
    assert_eq!(s.get("/resources/memo", &admin).status, 403);
    let env = [("GATEHOUSE_POLICY_TIMEOUT_MS".to_owned(), "0".to_owned())];
    let out = cli(
        &env,
        &["policy", "check", dir.path().to_str().unwrap()],
        None,
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("policy_timeout_ms"), "{err}");
}

/// Files created while the server runs, in a fresh directory the watcher never saw, are loaded
/// by `POST /policies/reload` at once.
#[test]
fn forced_reload_loads_at_once() {
    let s = TestServer::start();
    let admin = s.admin_token();
    s.write_policy("instant", "true");
    let r = s.req("POST", "/policies/reload", Some(&admin), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json()["loaded"].as_array().unwrap().iter().any(|n| n == "instant"),
        "{r:?}"
    );
    assert_eq!(s.get("/resources/instant", &admin).status, 200);
    let ann = s.user(&admin, "ann", &["user"]);
    assert_eq!(s.req("POST", "/policies/reload", Some(&ann), None).status, 403);
}

/// Regressions from a newcomer's trial: a test file that cannot be read (dangling symlink,
/// directory) blocks activation instead of counting as "no tests"; `PUT` vets against the test
/// file as it is on disk now, not as the watcher last saw it; `If-Match` values that are not
/// ASCII or weak never match.
#[test]
fn unreadable_tests_and_fresh_tests_block_saves() {
    let s = server_with_tests(GOOD);
    let admin = s.admin_token();
    let tests = s.policies.join("tests/notes.toml");
    std::fs::remove_file(&tests).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("missing.toml"), &tests).unwrap();
    let r = text(&s, "PUT", "/policies/notes", &admin, LEAKY, &[]);
    let p = r.assert_problem(422);
    assert!(p["errors"][0].as_str().unwrap().contains("cannot be read"), "{p}");
    std::fs::remove_file(&tests).unwrap();
    std::fs::create_dir(&tests).unwrap();
    text(&s, "PUT", "/policies/notes", &admin, LEAKY, &[]).assert_problem(422);
    let out = s.cli(&["policy", "test", s.policies.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir(&tests).unwrap();

    // A test file written a moment ago (before any watcher event) already gates the save.
    write(
        &s.policies,
        "tests/fresh.toml",
        "[[test]]\nname = \"must deny\"\naction = \"read\"\nexpect = \"deny\"\n",
    );
    text(&s, "PUT", "/policies/fresh", &admin, "true", &[]).assert_problem(422);
    assert!(!s.policies.join("fresh.rhai").exists());
    assert_eq!(text(&s, "PUT", "/policies/fresh", &admin, "false", &[]).status, 201);

    let etag = s.get("/policies/notes", &admin).header("etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    for bad in ["caf\u{e9}", weak.as_str()] {
        let auth = format!("Bearer {admin}");
        let r = s.try_raw(
            "DELETE",
            "/policies/notes",
            &[("Authorization", &auth), ("If-Match", bad)],
            None,
        );
        if let Ok(r) = r {
            assert_eq!(r.status, 412, "{bad}: {r:?}");
        }
    }
    assert!(s.policies.join("notes.rhai").exists());
    let r = s.raw(
        "DELETE",
        "/policies/notes",
        &[("Authorization", &format!("Bearer {admin}")), ("If-Match", &etag)],
        None,
    );
    assert_eq!(r.status, 204);
}

#[test]
fn replay_skips_torn_lines_and_reload_reports_every_failure() {
    let s = TestServer::start();
    let admin = s.admin_token();
    assert_eq!(s.get("/resources/notes", &admin).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(s.data.join("decisions.jsonl"))
        .unwrap();
    // A torn multi-byte character, and a line that names the policy but is not a record.
    std::io::Write::write_all(&mut log, b"{\"torn\":\xe2\x82\n{\"policy\":\"notes\",\n").unwrap();
    let r = s.post("/policies/notes/replay", &admin, json!({"source": "true"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["unreadable_lines"], 2, "{r:?}");
    s.post("/policies/nothing/replay", &admin, json!({"source": "true"}))
        .assert_problem(404);

    s.write_policy("broken", "(((");
    let first = s.req("POST", "/policies/reload", Some(&admin), None).json();
    let again = s.req("POST", "/policies/reload", Some(&admin), None).json();
    for r in [first, again] {
        let failed = r["failed"].as_array().unwrap();
        assert!(
            failed.iter().any(|f| f.as_str().unwrap().starts_with("broken.rhai:1:")),
            "{r}"
        );
    }
}
