//! `POST /token` (OAuth2 password grant, RFC 6749 errors) and the bearer-token checks every
//! protected endpoint makes (RFC 6750 challenges, forged, expired and revoked tokens).

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Decodes one base64url segment of a JWT as JSON.
fn segment(token: &str, i: usize) -> Value {
    let part = token
        .split('.')
        .nth(i)
        .unwrap_or_else(|| panic!("token has no part {i}: {token}"));
    let bytes = B64
        .decode(part)
        .unwrap_or_else(|e| panic!("part {i} is not base64url ({e}): {token}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("part {i} is not JSON ({e}): {token}"))
}

/// Asserts an RFC 6749 §5.2 error answer of the token endpoint.
fn assert_oauth_error(r: &Resp, code: &str) {
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.content_type().starts_with("application/json"),
        "token errors are RFC 6749 JSON, not problem+json: {r:?}"
    );
    let b = r.json();
    assert_eq!(b["error"], code, "{r:?}");
    assert!(b["error_description"].is_string(), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
}

/// Asserts a 401 problem whose challenge says `error="invalid_token"`.
fn assert_invalid_token(r: &Resp, case: &str) {
    assert_eq!(r.status, 401, "{case}: {r:?}");
    r.assert_problem(401);
    let www = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: 401 without WWW-Authenticate: {r:?}"));
    assert!(www.starts_with("Bearer "), "{case}: {www}");
    assert!(www.contains(r#"error="invalid_token""#), "{case}: {www}");
}

fn bearer(s: &TestServer, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    s.raw("GET", "/resources/notes", &[("Authorization", &auth)], None)
}

/// Claims the server would accept for `sub` whose token version is `uver` (signed with
/// [`SECRET`] they are a valid token).
fn good_claims(sub: &str, roles: &[&str], uver: &str) -> Value {
    let now = now();
    json!({"sub": sub, "roles": roles, "iat": now, "exp": now + 600, "iss": "gatehouse", "jti": "test-jti", "uver": uver})
}

/// A successful login answers `{access_token, token_type: "Bearer", expires_in}` with
/// `Cache-Control: no-store`, and the token carries sub, roles, iat, exp, iss and jti.
#[test]
fn token_success_shape_and_claims() {
    let s = TestServer::start();
    let before = now();
    let r = s.token_form(&[
        ("grant_type", "password"),
        ("username", "admin"),
        ("password", ADMIN_PW),
    ]);
    let after = now();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.content_type().starts_with("application/json"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    let b = r.json();
    let obj = b.as_object().unwrap_or_else(|| panic!("not an object: {r:?}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "refresh_token", "token_type"],
        "{r:?}"
    );
    assert!(
        b["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 40 && t.split('.').count() == 1),
        "the refresh token is opaque, not a JWT: {r:?}"
    );
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"].as_u64(), Some(900), "default lifetime is 900 s: {r:?}");
    let token = b["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let header = segment(token, 0);
    assert_eq!(header["alg"], "HS256", "{header}");
    let c = segment(token, 1);
    assert_eq!(c["sub"], "admin", "{c}");
    assert_eq!(c["roles"], json!(["admin"]), "{c}");
    assert_eq!(c["iss"], "gatehouse", "{c}");
    let iat = c["iat"]
        .as_i64()
        .unwrap_or_else(|| panic!("iat is not an integer: {c}"));
    let exp = c["exp"]
        .as_i64()
        .unwrap_or_else(|| panic!("exp is not an integer: {c}"));
    assert!(before <= iat && iat <= after, "iat {iat} not in [{before}, {after}]");
    assert_eq!(exp - iat, 900, "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()), "{c}");

    // Two logins get distinct token ids.
    let other = s.admin_token();
    assert_ne!(segment(&other, 1)["jti"], c["jti"]);

    // And the token opens a protected endpoint.
    let r = bearer(&s, token);
    assert_eq!(r.status, 200, "{r:?}");
}

/// Wrong password, unknown user and disabled user get the same 400 `invalid_grant` answer
/// (no user enumeration), with `Cache-Control: no-store`.
#[test]
fn token_failures_do_not_reveal_which_part_was_wrong() {
    let s = TestServer::start();
    let admin = s.admin_token();
    s.user(&admin, "dora", &["user"]);
    let r = s.req("PATCH", "/users/dora", Some(&admin), Some(&json!({"disabled": true})));
    assert_eq!(r.status, 200, "{r:?}");

    let wrong_pw = s.token_form(&[
        ("grant_type", "password"),
        ("username", "admin"),
        ("password", "wrong-password"),
    ]);
    let unknown = s.token_form(&[
        ("grant_type", "password"),
        ("username", "nobody"),
        ("password", "wrong-password"),
    ]);
    let disabled = s.token_form(&[
        ("grant_type", "password"),
        ("username", "dora"),
        ("password", "dora-password-123"),
    ]);
    let invalid_name = s.token_form(&[
        ("grant_type", "password"),
        ("username", "no such/user"),
        ("password", "x"),
    ]);
    let long_pw = "x".repeat(5000);
    let huge_password = s.token_form(&[
        ("grant_type", "password"),
        ("username", "admin"),
        ("password", &long_pw),
    ]);
    let empty_password = s.token_form(&[("grant_type", "password"), ("username", "admin"), ("password", "")]);
    for (case, r) in [
        ("wrong password", &wrong_pw),
        ("unknown user", &unknown),
        ("disabled user", &disabled),
        ("invalid user name", &invalid_name),
        ("5000-byte password", &huge_password),
        ("empty password", &empty_password),
    ] {
        assert_oauth_error(r, "invalid_grant");
        assert_eq!(r.status, wrong_pw.status, "{case}");
        assert_eq!(r.body, wrong_pw.body, "{case}: the answer must not tell what was wrong");
    }
}

/// An unknown user costs the server the same password hashing as a wrong password, so the
/// answer time does not tell which users exist (compared on the fastest of several tries, which
/// is robust against a busy machine).
#[test]
fn unknown_user_takes_as_long_as_wrong_password() {
    let s = TestServer::start();
    let time = |user: &str| {
        let start = std::time::Instant::now();
        let r = s.token_form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", "wrong-password"),
        ]);
        assert_oauth_error(&r, "invalid_grant");
        start.elapsed()
    };
    time("admin");
    let (mut known, mut unknown) = (vec![], vec![]);
    for _ in 0..7 {
        known.push(time("admin"));
        unknown.push(time("nobody-here"));
    }
    let known = known.into_iter().min().unwrap();
    let unknown = unknown.into_iter().min().unwrap();
    assert!(
        unknown * 4 >= known && known * 4 >= unknown,
        "fastest wrong password {known:?} vs fastest unknown user {unknown:?}"
    );
}

/// A grant type other than `password` is `unsupported_grant_type`; missing fields and a JSON
/// body are `invalid_request`, all in RFC 6749 shape with `Cache-Control: no-store`.
#[test]
fn token_rejects_bad_grant_types_and_malformed_requests() {
    let s = TestServer::start();
    for grant in ["client_credentials", "authorization_code", "implicit", "PASSWORD"] {
        let r = s.token_form(&[("grant_type", grant), ("username", "admin"), ("password", ADMIN_PW)]);
        assert_oauth_error(&r, "unsupported_grant_type");
    }
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no grant_type", &[("username", "admin"), ("password", ADMIN_PW)]),
        ("no username", &[("grant_type", "password"), ("password", ADMIN_PW)]),
        ("no password", &[("grant_type", "password"), ("username", "admin")]),
        ("empty form", &[]),
    ];
    for (case, form) in cases {
        let r = s.token_form(form);
        assert_eq!(r.status, 400, "{case}: {r:?}");
        assert_oauth_error(&r, "invalid_request");
    }

    let json_body = json!({"grant_type": "password", "username": "admin", "password": ADMIN_PW}).to_string();
    let r = s.raw("POST", "/token", &[], Some(("application/json", json_body.as_bytes())));
    assert_eq!(r.status, 400, "a JSON body is not a token request: {r:?}");
    assert!(!r.content_type().contains("problem"), "{r:?}");
    assert_oauth_error(&r, "invalid_request");

    let r = s.raw("POST", "/token", &[], None);
    assert_eq!(r.status, 400, "no body: {r:?}");
    assert_oauth_error(&r, "invalid_request");
}

/// Exactly what Swagger UI's Authorize dialog sends (empty `scope`, `Authorization: Basic Og==`,
/// `X-Requested-With`) logs in.
#[test]
fn token_accepts_what_swagger_ui_sends() {
    let s = TestServer::start();
    let body = format!(
        "grant_type=password&username=admin&password={}&scope=",
        urlencode(ADMIN_PW)
    );
    let r = s.raw(
        "POST",
        "/token",
        &[
            ("Authorization", "Basic Og=="),
            ("X-Requested-With", "XMLHttpRequest"),
            ("Accept", "application/json, text/plain, */*"),
        ],
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["token_type"], "Bearer", "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&s, &token).status, 200);
}

/// Without a bearer token a protected endpoint answers 401 problem+json with the plain
/// `Bearer realm="gatehouse"` challenge (RFC 6750 §3: no error code when no bearer credentials
/// were sent, also when another scheme such as Basic was used).
#[test]
fn protected_endpoint_without_bearer_token_gets_a_challenge() {
    let s = TestServer::start();
    let r = s.raw("GET", "/resources/notes", &[], None);
    r.assert_problem(401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="gatehouse""#),
        "{r:?}"
    );

    for other_scheme in ["Basic x", "Basic Og==", "Token abc", "Bearer", "Bearer "] {
        let r = s.raw("GET", "/resources/notes", &[("Authorization", other_scheme)], None);
        r.assert_problem(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="gatehouse""#),
            "`Authorization: {other_scheme}`: {r:?}"
        );
    }
}

/// The auth scheme name is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` work.
#[test]
fn bearer_scheme_is_case_insensitive() {
    let s = TestServer::start();
    let token = s.admin_token();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {token}");
        let r = s.raw("GET", "/resources/notes", &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{scheme}: {r:?}");
    }
}

/// The form is decoded properly: `+` is a space, percent-escapes and non-ASCII work, and a
/// `charset` parameter on the content type is accepted.
#[test]
fn token_form_decoding() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let pw = "p&ss=w+rd %41 ünï€ correct horse";
    let r = s.post("/users", &admin, json!({"username": "olga", "password": pw}));
    assert_eq!(r.status, 201, "{r:?}");
    let r = s.token_form(&[("grant_type", "password"), ("username", "olga"), ("password", pw)]);
    assert_eq!(r.status, 200, "percent-encoded password: {r:?}");

    let r = s.post(
        "/users",
        &admin,
        json!({"username": "pia", "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let body = b"grant_type=password&username=pia&password=correct+horse+battery";
    let r = s.raw("POST", "/token", &[], Some(("application/x-www-form-urlencoded", body)));
    assert_eq!(r.status, 200, "`+` means space in a form: {r:?}");
    let r = s.raw(
        "POST",
        "/token",
        &[],
        Some(("application/x-www-form-urlencoded; charset=UTF-8", body)),
    );
    assert_eq!(r.status, 200, "charset parameter: {r:?}");
}

/// Malformed, tampered, wrongly signed, `alg: none`, other-algorithm, expired, not-yet-valid,
/// wrong-issuer and oversized tokens each get 401 problem+json with `error="invalid_token"`;
/// the same claims correctly signed (and an expiry within the 30 s leeway) are accepted.
#[test]
fn protected_endpoint_rejects_invalid_tokens() {
    let s = TestServer::start();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let now = now();
    let uver = token_payload(&s.admin_token())["uver"].as_str().unwrap().to_owned();

    // Controls: the forge makes tokens the server accepts, so each refusal below is due to
    // the one defect of its case.
    let control = forge(&hs256, &good_claims("admin", &["admin"], &uver), SECRET.as_bytes());
    assert_eq!(bearer(&s, &control).status, 200, "a correctly signed token is accepted");
    let mut in_leeway = good_claims("admin", &["admin"], &uver);
    in_leeway["exp"] = json!(now - 10);
    let in_leeway = forge(&hs256, &in_leeway, SECRET.as_bytes());
    let r = bearer(&s, &in_leeway);
    assert_eq!(r.status, 200, "expired 10 s ago is within the 30 s leeway: {r:?}");

    let real = s.admin_token();
    let parts: Vec<&str> = real.split('.').collect();
    let mut escalated = segment(&real, 1);
    escalated["sub"] = json!("admin2");
    escalated["roles"] = json!(["admin", "root"]);
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(escalated.to_string()), parts[2]);
    let mut longer = segment(&real, 1);
    longer["exp"] = json!(now + 100_000);
    let tampered_exp = format!("{}.{}.{}", parts[0], B64.encode(longer.to_string()), parts[2]);

    let claims = good_claims("admin", &["admin"], &uver);
    let wrong_key = forge(&hs256, &claims, b"another-secret-another-secret-another");
    let alg_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64.encode(claims.to_string())
    );
    let alg_none_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "None"}).to_string()),
        B64.encode(claims.to_string())
    );
    // Header says HS512 but the signature is HS256 with the right key...
    let hs512_header = forge(&json!({"alg": "HS512", "typ": "JWT"}), &claims, SECRET.as_bytes());
    // ...and a genuine HS512 signature with the right key: the algorithm is pinned.
    let hs512_genuine = {
        let signing = format!(
            "{}.{}",
            B64.encode(json!({"alg": "HS512", "typ": "JWT"}).to_string()),
            B64.encode(claims.to_string())
        );
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(signing.as_bytes(), &key, jsonwebtoken::Algorithm::HS512).unwrap();
        format!("{signing}.{sig}")
    };
    let mut expired = good_claims("admin", &["admin"], &uver);
    expired["exp"] = json!(now - 100);
    let expired = forge(&hs256, &expired, SECRET.as_bytes());
    let mut not_yet = good_claims("admin", &["admin"], &uver);
    not_yet["nbf"] = json!(now + 300);
    let not_yet = forge(&hs256, &not_yet, SECRET.as_bytes());
    let mut wrong_iss = good_claims("admin", &["admin"], &uver);
    wrong_iss["iss"] = json!("evil");
    let wrong_iss = forge(&hs256, &wrong_iss, SECRET.as_bytes());
    let mut no_exp = good_claims("admin", &["admin"], &uver);
    no_exp.as_object_mut().unwrap().remove("exp");
    let no_exp = forge(&hs256, &no_exp, SECRET.as_bytes());
    let mut no_sub = good_claims("admin", &["admin"], &uver);
    no_sub.as_object_mut().unwrap().remove("sub");
    let no_sub = forge(&hs256, &no_sub, SECRET.as_bytes());
    let mut exp_string = good_claims("admin", &["admin"], &uver);
    exp_string["exp"] = json!((now + 600).to_string());
    let exp_string = forge(&hs256, &exp_string, SECRET.as_bytes());
    let unknown_kid = forge(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "someone-else"}),
        &claims,
        SECRET.as_bytes(),
    );
    let unknown_user = forge(&hs256, &good_claims("ghost", &["admin"], &uver), SECRET.as_bytes());
    let mut big = good_claims("admin", &["admin"], &uver);
    big["pad"] = json!("x".repeat(9 * 1024));
    let oversized = forge(&hs256, &big, SECRET.as_bytes());
    assert!(oversized.len() > 8 * 1024);

    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".into()),
        ("three garbage parts", "a.b.c".into()),
        ("only dots", "..".into()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("tampered payload", tampered),
        ("tampered exp", tampered_exp),
        ("signature of another key", wrong_key),
        ("alg none", alg_none),
        ("alg None", alg_none_none),
        ("HS512 header, HS256 signature", hs512_header),
        ("genuine HS512", hs512_genuine),
        ("expired beyond leeway", expired),
        ("nbf in the future", not_yet),
        ("wrong iss", wrong_iss),
        ("no exp", no_exp),
        ("no sub", no_sub),
        ("exp as a string", exp_string),
        ("unknown kid", unknown_kid),
        ("user that never existed", unknown_user),
        ("oversized (> 8 KiB)", oversized),
    ];
    for (case, token) in &cases {
        assert_invalid_token(&bearer(&s, token), case);
    }
    // The server survived all of it and still serves good tokens.
    assert_eq!(bearer(&s, &real).status, 200);
}

/// A token stops working when its user is disabled or deleted, even though it is still
/// correctly signed and unexpired.
#[test]
fn tokens_of_disabled_and_deleted_users_are_refused() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let bob = s.user(&admin, "bob", &["user"]);
    let carol = s.user(&admin, "carol", &["user"]);
    assert_eq!(bearer(&s, &bob).status, 200);
    assert_eq!(bearer(&s, &carol).status, 200);
    // A validly signed token naming carol, made after her account existed.
    let forged_carol = forge(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good_claims("carol", &["user"], token_payload(&carol)["uver"].as_str().unwrap()),
        SECRET.as_bytes(),
    );

    let r = s.req("PATCH", "/users/bob", Some(&admin), Some(&json!({"disabled": true})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_invalid_token(&bearer(&s, &bob), "disabled user");

    let r = s.req("DELETE", "/users/carol", Some(&admin), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert_invalid_token(&bearer(&s, &carol), "deleted user");
    assert_invalid_token(&bearer(&s, &forged_carol), "deleted user, forged token");
}
