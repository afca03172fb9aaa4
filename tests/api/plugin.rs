//! The plugin API, black-box: the `ticket_desk` example (a gatehouse with a plugin of its own)
//! started like the real binary, with the policies that ship beside it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::*;

fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ticket_desk/policies")
}

fn desk() -> TestServer {
    TestServer::start_bin(&example_bin("ticket_desk"), Some(&example_policies()), &[])
}

fn ticket(title: &str, priority: &str, department: &str) -> Value {
    json!({"title": title, "priority": priority, "department": department})
}

fn detail(r: &Resp, status: u16) -> String {
    r.assert_problem(status)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn ticket_desk_endpoints_are_decided_by_its_policy_helper_and_claim() {
    let s = desk();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["staff", "dept:finance"]);
    let bob = s.user(&admin, "bob", &["manager", "dept:finance"]);
    let carl = s.user(&admin, "carl", &["manager", "dept:it"]);
    let dora = s.user(&admin, "dora", &["manager", "director", "dept:finance"]);
    let eve = s.user(&admin, "eve", &["staff"]);

    // The plugin's claim is in the token; the reserved ones are gatehouse's own.
    let claims = token_payload(&ann);
    assert_eq!(claims["department"], "finance", "{claims}");
    assert_eq!(claims["sub"], "ann");
    assert_eq!(claims["roles"], json!(["staff", "dept:finance"]));
    assert!(token_payload(&eve).get("department").is_none());

    // Open: the policy compares the body with the claim.
    let r = s.post("/tickets", &ann, ticket("printer jam", "normal", "finance"));
    assert_eq!(r.status, 201, "{r:?}");
    let t = r.json();
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/tickets/{id}").as_str()));
    assert_eq!(t["owner"], "ann");
    assert_eq!(t["status"], "open");
    assert_eq!(t["priority"], "normal");
    assert!(t["approved_by"].is_null());

    let r = s.post("/tickets", &ann, ticket("new laptop", "low", "it"));
    assert!(detail(&r, 403).contains("own department (finance)"), "{r:?}");
    let r = s.post("/tickets", &eve, ticket("coffee", "low", "finance"));
    assert!(detail(&r, 403).contains("dept:"), "{r:?}");

    // No token, a bad body, an unknown id.
    let r = s.req("POST", "/tickets", None, Some(&ticket("x", "low", "finance")));
    r.assert_problem(401);
    assert!(
        r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")),
        "{r:?}"
    );
    s.req("GET", &format!("/tickets/{id}"), None, None).assert_problem(401);
    s.post("/tickets", &ann, ticket("x", "whenever", "finance"))
        .assert_problem(400);
    s.get("/tickets/not-a-ticket", &ann).assert_problem(404);

    // View: the owner and their department, not another one.
    assert_eq!(s.get(&format!("/tickets/{id}"), &ann).status, 200);
    assert_eq!(s.get(&format!("/tickets/{id}"), &bob).json()["title"], "printer jam");
    s.get(&format!("/tickets/{id}"), &carl).assert_problem(403);

    // Approve, the plugin's own action.
    let approve = |token: &str, id: &str| s.req("POST", &format!("/tickets/{id}/approve"), Some(token), None);
    assert!(detail(&approve(&ann, &id), 403).contains("only managers"));
    assert!(detail(&approve(&carl, &id), 403).contains("own department"));
    let r = approve(&bob, &id);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "approved");
    assert_eq!(r.json()["approved_by"], "bob");
    approve(&bob, &id).assert_problem(409);

    // Urgent tickets: the Rhai helper `priority_rank` ranks them beyond a manager.
    let urgent = s
        .post("/tickets", &ann, ticket("server down", "urgent", "finance"))
        .json();
    let urgent = urgent["id"].as_str().unwrap();
    assert!(detail(&approve(&bob, urgent), 403).contains("director"));
    assert_eq!(approve(&dora, urgent).status, 200);
    let own = s.post("/tickets", &dora, ticket("my chair", "low", "finance")).json();
    assert!(detail(&approve(&dora, own["id"].as_str().unwrap()), 403).contains("own ticket"));

    // Admins may do anything the desk offers (the policy says so), even without a department.
    assert_eq!(s.get(&format!("/tickets/{id}"), &admin).status, 200);

    // The same kind on the document store is governed by the same file, which denies it.
    let r = s.get("/resources/tickets", &ann);
    assert!(detail(&r, 403).contains("ticket desk"), "{r:?}");
    // The document store itself is still served (a kind without a policy file is 404).
    s.get("/resources/notes", &ann).assert_problem(404);
}

#[test]
fn plugin_claims_are_issued_again_on_refresh() {
    let s = desk();
    let admin = s.admin_token();
    s.user(&admin, "ann", &["staff", "dept:finance"]);
    let r = s.token_form(&[
        ("grant_type", "password"),
        ("username", "ann"),
        ("password", "ann-password-123"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(r.status, 200, "{r:?}");
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token_payload(&access)["department"], "finance");
    assert_eq!(s.post("/tickets", &access, ticket("t", "low", "finance")).status, 201);
}

#[test]
fn plugin_operations_are_in_the_served_and_printed_spec() {
    let s = desk();
    let served = s.raw("GET", "/openapi.json", &[], None).json();
    let out = std::process::Command::new(example_bin("ticket_desk"))
        .arg("openapi")
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served, printed, "`ticket_desk openapi` and /openapi.json differ");

    for (path, method, id) in [
        ("/tickets", "post", "open_ticket"),
        ("/tickets/{id}", "get", "get_ticket"),
        ("/tickets/{id}/approve", "post", "approve_ticket"),
        ("/resources/{kind}", "post", "create_document"),
        ("/token", "post", "issue_token"),
    ] {
        let op = &served["paths"][path][method];
        assert_eq!(op["operationId"], id, "{path} {method}: {op}");
    }
    let approve = &served["paths"]["/tickets/{id}/approve"]["post"];
    assert!(
        approve["security"].as_array().is_some_and(|a| !a.is_empty()),
        "plugin operations use the bearer scheme: {approve}"
    );
    assert_eq!(approve["tags"], json!(["Tickets"]));
    assert!(served["components"]["schemas"].get("Ticket").is_some());
    assert!(served["components"]["schemas"].get("NewTicket").is_some());
    // Swagger UI is served for the combined document too.
    assert_eq!(s.raw("GET", "/docs/", &[], None).status, 200);
    let yaml = s.raw("GET", "/openapi.yaml", &[], None).body;
    assert!(yaml.contains("/tickets/{id}/approve"));
}

/// The example's policy tests pass with the example binary, which registers the plugin's helper
/// (the plain `gatehouse` binary does not know `priority_rank`, so there they fail).
#[test]
fn example_policy_tests_need_and_get_the_plugin_helper() {
    let dir = example_policies();
    let run = |bin: &std::path::Path| {
        std::process::Command::new(bin)
            .args(["policy", "test", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&example_bin("ticket_desk"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("7 passed, 0 failed"), "{stdout}");
    let out = run(std::path::Path::new(BIN));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("priority_rank"));
}
