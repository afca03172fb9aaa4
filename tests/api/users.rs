//! `/users`: administration by an admin, what a plain user may do to their own record under the
//! shipped `_users.rhai`, token invalidation on password change, disabling and deletion, and
//! that no password or hash ever appears in an answer or the server log.

use serde_json::{json, Value};

use crate::helpers::*;

/// Asserts that a success answer carries no password field, password or hash.
fn assert_no_secret(r: &Resp) {
    for needle in ["password", "$argon2", "argon2id"] {
        assert!(!r.body.contains(needle), "answer carries `{needle}`: {r:?}");
    }
}

/// Asserts that an error answer carries neither the password sent nor a hash.
fn assert_no_secret_in_error(r: &Resp, pw: &str) {
    assert!(
        pw.is_empty() || !r.body.contains(pw),
        "answer echoes the password: {r:?}"
    );
    assert!(!r.body.contains("$argon2"), "answer carries a hash: {r:?}");
}

/// Asserts that the server log carries none of `passwords` and no argon2 hash.
fn assert_log_clean(s: &TestServer, passwords: &[&str]) {
    let logs = s.logs();
    assert!(!logs.trim().is_empty(), "the server log is empty; nothing was checked");
    for pw in passwords {
        assert!(
            !logs.contains(pw),
            "the server log contains the password `{pw}`:\n{logs}"
        );
    }
    assert!(
        !logs.contains("$argon2"),
        "the server log contains a password hash:\n{logs}"
    );
}

/// Asserts the shape of a user as the API shows it.
fn assert_user_view(v: &Value, name: &str, roles: &[&str], disabled: bool) {
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "disabled", "roles", "updated_at", "username"],
        "{v}"
    );
    assert_eq!(v["username"], name, "{v}");
    assert_eq!(v["roles"], json!(roles), "{v}");
    assert_eq!(v["disabled"], disabled, "{v}");
}

fn token_req(s: &TestServer, user: &str, pw: &str) -> Resp {
    s.token_form(&[("grant_type", "password"), ("username", user), ("password", pw)])
}

fn assert_invalid_grant(r: &Resp) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_grant", "{r:?}");
}

fn assert_401(r: &Resp) {
    r.assert_problem(401);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(www.contains(r#"error="invalid_token""#), "{r:?}");
}

/// An admin creates (201 + Location), reads, lists, changes and deletes users (204, then 404);
/// no answer carries a password or hash.
#[test]
fn admin_manages_users() {
    let s = TestServer::start();
    let admin = s.admin_token();

    let r = s.post(
        "/users",
        &admin,
        json!({"username": "dave", "password": "dave-secret-pw-1", "roles": ["user", "editor"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_no_secret(&r);
    assert_eq!(r.header("location"), Some("/users/dave"), "{r:?}");
    assert_user_view(&r.json(), "dave", &["user", "editor"], false);

    // Roles default to none.
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "erin", "password": "erin-secret-pw-1"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "erin", &[], false);

    let r = s.get("/users/dave", &admin);
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "dave", &["user", "editor"], false);

    let r = s.get("/users", &admin);
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    let page = r.json();
    let mut names: Vec<&str> = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {r:?}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["admin", "dave", "erin"], "{r:?}");
    assert!(page.get("next").is_some(), "a page has `next`: {r:?}");

    let r = s.req("PATCH", "/users/dave", Some(&admin), Some(&json!({"roles": ["user"]})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "dave", &["user"], false);
    assert_eq!(s.get("/users/dave", &admin).json()["roles"], json!(["user"]));

    // The new roles are in the next token.
    let dave = s.login("dave", "dave-secret-pw-1");
    assert_eq!(s.get("/users/dave", &dave).status, 200);

    let r = s.req("DELETE", "/users/dave", Some(&admin), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    s.get("/users/dave", &admin).assert_problem(404);
    s.req("DELETE", "/users/dave", Some(&admin), None).assert_problem(404);
    s.req("PATCH", "/users/dave", Some(&admin), Some(&json!({"disabled": true})))
        .assert_problem(404);
    assert_invalid_grant(&token_req(&s, "dave", "dave-secret-pw-1"));

    assert_log_clean(&s, &[ADMIN_PW, "dave-secret-pw-1", "erin-secret-pw-1"]);
}

/// Duplicates get 409; invalid names, short passwords, bad roles, unknown or missing fields 400,
/// all as problem+json.
#[test]
fn user_creation_is_validated() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "fred", "password": "fred-secret-pw-1"}),
    );
    assert_eq!(r.status, 201, "{r:?}");

    let r = s.post(
        "/users",
        &admin,
        json!({"username": "fred", "password": "another-pw-123"}),
    );
    r.assert_problem(409);
    assert_no_secret_in_error(&r, "another-pw-123");
    // The duplicate attempt did not change fred's password.
    s.login("fred", "fred-secret-pw-1");
    assert_invalid_grant(&token_req(&s, "fred", "another-pw-123"));
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "admin", "password": "another-pw-123"}),
    );
    r.assert_problem(409);
    s.login("admin", ADMIN_PW);

    let long_name = "a".repeat(65);
    for name in [
        "",
        "bad name",
        "-leading-dash",
        ".dot",
        "slash/y",
        "ünïcode",
        long_name.as_str(),
    ] {
        let r = s.post(
            "/users",
            &admin,
            json!({"username": name, "password": "long-enough-pw"}),
        );
        r.assert_problem(400);
    }
    for pw in ["", "short", "1234567"] {
        let r = s.post("/users", &admin, json!({"username": "gina", "password": pw}));
        r.assert_problem(400);
        assert_no_secret_in_error(&r, pw);
    }
    let bodies = [
        json!({"username": "gina", "password": "long-enough-pw", "is_admin": true}),
        json!({"username": "gina", "password": "long-enough-pw", "password_hash": "$argon2id$x"}),
        json!({"username": "gina", "password": "long-enough-pw", "roles": ["bad role"]}),
        json!({"username": "gina", "password": "long-enough-pw", "roles": "admin"}),
        json!({"username": "gina"}),
        json!({"password": "long-enough-pw"}),
        json!(["gina", "long-enough-pw"]),
    ];
    for body in &bodies {
        let r = s.post("/users", &admin, body.clone());
        assert_eq!(r.status, 400, "{body}: {r:?}");
        r.assert_problem(400);
    }
    let r = s.raw(
        "POST",
        "/users",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(("application/json", b"{")),
    );
    r.assert_problem(400);
    let r = s.req("PATCH", "/users/fred", Some(&admin), Some(&json!({"nickname": "f"})));
    r.assert_problem(400);
    let r = s.req(
        "PATCH",
        "/users/fred",
        Some(&admin),
        Some(&json!({"password": "short"})),
    );
    r.assert_problem(400);
    // None of the refused requests created gina.
    s.get("/users/gina", &admin).assert_problem(404);

    assert_log_clean(&s, &[ADMIN_PW, "fred-secret-pw-1", "another-pw-123", "long-enough-pw"]);
}

/// Under the shipped `_users.rhai` a plain user reads only their own record, cannot list,
/// cannot change roles (403 with the policy's reason), and can change their own password,
/// which invalidates their earlier tokens.
#[test]
fn plain_user_manages_only_their_own_password() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let hank = s.user(&admin, "hank", &["user"]);
    s.user(&admin, "ivy", &["user"]);

    let r = s.get("/users/hank", &hank);
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "hank", &["user"], false);

    s.get("/users/ivy", &hank).assert_problem(403);
    s.get("/users/admin", &hank).assert_problem(403);
    // A user who does not exist looks the same as one who does: no enumeration.
    s.get("/users/ghost", &hank).assert_problem(403);
    s.get("/users", &hank).assert_problem(403);
    let r = s.post(
        "/users",
        &hank,
        json!({"username": "mallory", "password": "mallory-pw-123"}),
    );
    r.assert_problem(403);
    s.req("DELETE", "/users/ivy", Some(&hank), None).assert_problem(403);
    let r = s.req(
        "PATCH",
        "/users/ivy",
        Some(&hank),
        Some(&json!({"password": "hijacked-pw-123"})),
    );
    r.assert_problem(403);
    s.login("ivy", "ivy-password-123");

    let r = s.req("PATCH", "/users/hank", Some(&hank), Some(&json!({"roles": ["admin"]})));
    let p = r.assert_problem(403);
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("not your roles"),
        "the 403 carries the policy's reason: {r:?}"
    );
    let r = s.req(
        "PATCH",
        "/users/hank",
        Some(&hank),
        Some(&json!({"password": "hank-new-pw-456", "roles": ["admin"]})),
    );
    r.assert_problem(403);
    let r = s.req("PATCH", "/users/hank", Some(&hank), Some(&json!({"disabled": false})));
    r.assert_problem(403);
    assert_eq!(s.get("/users/hank", &admin).json()["roles"], json!(["user"]));
    // Nothing of that changed the password.
    s.login("hank", "hank-password-123");

    // iat has second precision: let a second pass so the change is after the old token.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = s.req(
        "PATCH",
        "/users/hank",
        Some(&hank),
        Some(&json!({"password": "hank-new-pw-456"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "hank", &["user"], false);

    assert_invalid_grant(&token_req(&s, "hank", "hank-password-123"));
    let fresh = s.login("hank", "hank-new-pw-456");
    assert_eq!(s.get("/users/hank", &fresh).status, 200);
    assert_401(&s.get("/users/hank", &hank));

    assert_log_clean(
        &s,
        &[
            ADMIN_PW,
            "hank-password-123",
            "hank-new-pw-456",
            "ivy-password-123",
            "hijacked-pw-123",
            "mallory-pw-123",
        ],
    );
}

/// Disabling a user refuses their existing token (401) and their logins (`invalid_grant`);
/// enabling them again lets them log in.
#[test]
fn disabled_user_is_locked_out() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let jack = s.user(&admin, "jack", &["user"]);
    assert_eq!(s.get("/users/jack", &jack).status, 200);

    let r = s.req("PATCH", "/users/jack", Some(&admin), Some(&json!({"disabled": true})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_secret(&r);
    assert_user_view(&r.json(), "jack", &["user"], true);
    assert_401(&s.get("/users/jack", &jack));
    assert_401(&s.get("/resources/notes", &jack));
    assert_invalid_grant(&token_req(&s, "jack", "jack-password-123"));

    let r = s.req("PATCH", "/users/jack", Some(&admin), Some(&json!({"disabled": false})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["disabled"], false, "{r:?}");
    let again = s.login("jack", "jack-password-123");
    assert_eq!(s.get("/users/jack", &again).status, 200);

    assert_log_clean(&s, &[ADMIN_PW, "jack-password-123"]);
}

/// A deleted user's token is refused at once, and a new user with the same name does not
/// inherit it.
#[test]
fn deleted_user_token_does_not_survive_recreation() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let kim = s.user(&admin, "kim", &["user"]);
    assert_eq!(s.get("/users/kim", &kim).status, 200);

    let r = s.req("DELETE", "/users/kim", Some(&admin), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert_401(&s.get("/users/kim", &kim));
    assert_invalid_grant(&token_req(&s, "kim", "kim-password-123"));

    // iat has second precision: the re-creation must be in a later second than the old token.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "kim", "password": "kim-second-life-pw", "roles": ["user"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_401(&s.get("/users/kim", &kim));
    assert_invalid_grant(&token_req(&s, "kim", "kim-password-123"));
    let new_kim = s.login("kim", "kim-second-life-pw");
    assert_eq!(s.get("/users/kim", &new_kim).status, 200);

    assert_log_clean(&s, &[ADMIN_PW, "kim-password-123", "kim-second-life-pw"]);
}
