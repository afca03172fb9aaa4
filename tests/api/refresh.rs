//! Refresh tokens (rotation, reuse detection), revocation (RFC 7009) and "log out everywhere".

use serde_json::json;

use crate::helpers::*;

/// Logs in and returns (access token, refresh token).
fn login_pair(s: &TestServer, user: &str, pw: &str) -> (String, String) {
    let r = s.token_form(&[("grant_type", "password"), ("username", user), ("password", pw)]);
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    (
        b["access_token"].as_str().unwrap().into(),
        b["refresh_token"].as_str().unwrap().into(),
    )
}

fn refresh(s: &TestServer, token: &str) -> Resp {
    s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
}

fn revoke(s: &TestServer, form: &[(&str, &str)]) -> Resp {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    s.raw(
        "POST",
        "/token/revoke",
        &[],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    )
}

fn assert_invalid_grant(r: &Resp) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_grant", "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
}

/// A refresh token buys a new access token and a new refresh token, once; using the old one
/// again revokes the whole family, so the thief's copy and the rotated token both die.
#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = TestServer::start();
    let (_, r1) = login_pair(&s, "admin", ADMIN_PW);
    let first = refresh(&s, &r1);
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let b = first.json();
    let access2 = b["access_token"].as_str().unwrap().to_owned();
    let r2 = b["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotation issues a new refresh token");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(s.get("/users/admin", &access2).status, 200);

    // Reuse of r1: refused, and r2 (same family) is revoked with it.
    assert_invalid_grant(&refresh(&s, &r1));
    assert_invalid_grant(&refresh(&s, &r2));

    // A separate login is a separate family and still works.
    let (_, other) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(refresh(&s, &other).status, 200);

    // Garbage and missing refresh tokens.
    assert_invalid_grant(&refresh(&s, "not-a-refresh-token"));
    let r = s.token_form(&[("grant_type", "refresh_token")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_request", "{r:?}");
}

/// Revoking an access token makes it fail at once with 401 on every endpoint; unknown and
/// garbage tokens still answer 200 (RFC 7009 §2.2); a missing `token` is `invalid_request`.
#[test]
fn revoked_access_token_is_refused_everywhere() {
    let s = TestServer::start();
    let (access, _) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(s.get("/resources/notes", &access).status, 200);
    let r = revoke(&s, &[("token", &access), ("token_type_hint", "access_token")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    for path in ["/resources/notes", "/users", "/policies"] {
        let r = s.get(path, &access);
        r.assert_problem(401);
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .contains("invalid_token"),
            "{r:?}"
        );
    }
    // Other tokens of the same user are untouched.
    let (fresh, _) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(s.get("/resources/notes", &fresh).status, 200);

    assert_eq!(revoke(&s, &[("token", "garbage")]).status, 200);
    assert_eq!(revoke(&s, &[("token", &access)]).status, 200, "revoking twice is fine");
    let r = revoke(&s, &[("token_type_hint", "access_token")]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "invalid_request", "{r:?}");
}

/// Revoking a refresh token (with or without the hint) ends its family.
#[test]
fn revoked_refresh_token_cannot_refresh() {
    let s = TestServer::start();
    let (_, r1) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(
        revoke(&s, &[("token", &r1), ("token_type_hint", "refresh_token")]).status,
        200
    );
    assert_invalid_grant(&refresh(&s, &r1));
    let (_, r2) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(revoke(&s, &[("token", &r2)]).status, 200, "no hint");
    assert_invalid_grant(&refresh(&s, &r2));
}

/// `POST /users/{name}/revoke-tokens`: an admin logs a user out everywhere (access and refresh
/// tokens); the user can log in again; a user may do it for themselves but not for others.
#[test]
fn revoke_all_tokens_of_a_user() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "ann", "password": "ann-password-1", "roles": ["user"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "bob", "password": "bob-password-1", "roles": ["user"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let (ann, ann_refresh) = login_pair(&s, "ann", "ann-password-1");
    let (bob, _) = login_pair(&s, "bob", "bob-password-1");

    let r = s.req("POST", "/users/bob/revoke-tokens", Some(&ann), None);
    r.assert_problem(403);
    let r = s.req("POST", "/users/nobody/revoke-tokens", Some(&admin), None);
    r.assert_problem(404);

    let r = s.req("POST", "/users/ann/revoke-tokens", Some(&admin), None);
    assert_eq!(r.status, 204, "{r:?}");
    s.get("/users/ann", &ann).assert_problem(401);
    assert_invalid_grant(&refresh(&s, &ann_refresh));
    assert_eq!(s.get("/users/bob", &bob).status, 200, "bob is not affected");
    let (ann2, _) = login_pair(&s, "ann", "ann-password-1");
    assert_eq!(s.get("/users/ann", &ann2).status, 200);

    // Log out everywhere, by oneself.
    let r = s.req("POST", "/users/bob/revoke-tokens", Some(&bob), None);
    assert_eq!(r.status, 204, "{r:?}");
    s.get("/users/bob", &bob).assert_problem(401);
}

/// A refresh token dies with its user's password change, disabling and deletion.
#[test]
fn refresh_follows_the_user() {
    let s = TestServer::start();
    let admin = s.admin_token();
    for name in ["cy", "di", "ed"] {
        let r = s.post(
            "/users",
            &admin,
            json!({"username": name, "password": "password-123", "roles": []}),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let (_, cy) = login_pair(&s, "cy", "password-123");
    let (_, di) = login_pair(&s, "di", "password-123");
    let (_, ed) = login_pair(&s, "ed", "password-123");
    let r = s.req(
        "PATCH",
        "/users/cy",
        Some(&admin),
        Some(&json!({"password": "new-password-1"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.req("PATCH", "/users/di", Some(&admin), Some(&json!({"disabled": true})));
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.req("DELETE", "/users/ed", Some(&admin), None);
    assert_eq!(r.status, 204, "{r:?}");
    for (who, t) in [("cy", &cy), ("di", &di), ("ed", &ed)] {
        let r = refresh(&s, t);
        assert_eq!(r.status, 400, "{who}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_grant", "{who}: {r:?}");
    }
}

/// Refresh tokens and revocations are stored durably: both survive kill -9.
#[test]
fn refresh_and_revocation_survive_kill_9() {
    let mut s = TestServer::start();
    let (access, refresh_token) = login_pair(&s, "admin", ADMIN_PW);
    assert_eq!(revoke(&s, &[("token", &access)]).status, 200);
    s.kill9();
    s.spawn();
    s.get("/users/admin", &access).assert_problem(401);
    assert_eq!(refresh(&s, &refresh_token).status, 200);
}

/// Repeated failed logins for one user name get 429 with `Retry-After` (RFC 6749 error shape,
/// no hashing spent), even with the right password, until the window ends; other users and
/// guarded requests are unaffected.
#[test]
fn failed_logins_are_throttled() {
    let s = TestServer::start_with(
        Some(&shipped_policies()),
        &[
            ("GATEHOUSE_LOGIN_FAILURE_LIMIT", "3"),
            ("GATEHOUSE_LOGIN_FAILURE_WINDOW", "60"),
        ],
    );
    let admin = s.admin_token();
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "ann", "password": "ann-password-1", "roles": []}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    for _ in 0..3 {
        let r = s.token_form(&[
            ("grant_type", "password"),
            ("username", "ann"),
            ("password", "wrong-password"),
        ]);
        assert_invalid_grant(&r);
    }
    for pw in ["wrong-password", "ann-password-1"] {
        let r = s.token_form(&[("grant_type", "password"), ("username", "ann"), ("password", pw)]);
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.json()["error"], "temporarily_unavailable", "{r:?}");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{r:?}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    }
    assert!(!s.login("admin", ADMIN_PW).is_empty(), "another user still logs in");
    assert_eq!(s.get("/resources/notes", &admin).status, 200);
}

/// While `/token` is hammered by 16 clients logging in, guarded GETs keep answering (each well
/// under a generous 2 s bound): hashing runs on its own threads, never on the async workers.
#[test]
fn guarded_gets_answer_during_a_login_flood() {
    let s = std::sync::Arc::new(TestServer::start());
    let admin = s.admin_token();
    let r = s.post("/resources/notes", &admin, json!({"title": "t"}));
    let path = format!("/resources/notes/{}", r.json()["id"].as_str().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..16)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut logins = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = s.token_form(&[
                        ("grant_type", "password"),
                        ("username", "admin"),
                        ("password", ADMIN_PW),
                    ]);
                    assert_eq!(r.status, 200, "{r:?}");
                    logins += 1;
                }
                logins
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..50 {
        let start = std::time::Instant::now();
        assert_eq!(s.get(&path, &admin).status, 200);
        slowest = slowest.max(start.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let logins: usize = flooders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(logins > 0);
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "slowest guarded GET {slowest:?} during {logins} logins"
    );
}
