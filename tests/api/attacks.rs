//! The attack corpus: one case per known attack on JWT verification (RFC 8725). Every case must
//! get 401 problem+json, never 2xx, never 500, and the server must keep serving.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Signs raw header and payload text with HS256 and the server's secret.
fn sign_raw(header: &str, payload: &str) -> String {
    let signing = format!("{}.{}", b64(header), b64(payload));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let sig = jsonwebtoken::crypto::sign(signing.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{signing}.{sig}")
}

#[test]
fn attack_corpus_is_refused() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let claims = token_payload(&admin);
    let body = claims.to_string();
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let parts: Vec<String> = admin.split('.').map(str::to_owned).collect();
    // Control: a correctly signed raw token is accepted, so each refusal is due to its defect.
    assert_eq!(s.get("/users/admin", &sign_raw(hs, &body)).status, 200);

    let n = now();
    let uver = claims["uver"].as_str().unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&body))),
        ("alg None", format!("{}.{}.", b64(r#"{"alg":"None"}"#), b64(&body))),
        (
            "alg NONE with signature",
            format!("{}.{}.{}", b64(r#"{"alg":"NONE"}"#), b64(&body), parts[2]),
        ),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        (
            "signature of another token",
            format!("{}.{}.{}", parts[0], b64(&body.replace("admin", "admim")), parts[2]),
        ),
        (
            "algorithm switched to HS512",
            format!("{}.{}.{}", b64(r#"{"alg":"HS512"}"#), parts[1], parts[2]),
        ),
        (
            "algorithm switched to RS256",
            format!("{}.{}.{}", b64(r#"{"alg":"RS256"}"#), parts[1], parts[2]),
        ),
        (
            "kid path traversal",
            sign_raw(r#"{"alg":"HS256","kid":"../../../../etc/passwd"}"#, &body),
        ),
        (
            "kid SQL injection",
            sign_raw(r#"{"alg":"HS256","kid":"' OR '1'='1"}"#, &body),
        ),
        (
            "kid huge",
            sign_raw(&format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(4000)), &body),
        ),
        (
            "jku header",
            sign_raw(r#"{"alg":"HS256","jku":"http://127.0.0.1:1/jwks.json"}"#, &body),
        ),
        (
            "x5u header",
            sign_raw(r#"{"alg":"HS256","x5u":"http://127.0.0.1:1/cert.pem"}"#, &body),
        ),
        (
            "embedded jwk",
            sign_raw(r#"{"alg":"HS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}"#, &body),
        ),
        (
            "unknown crit",
            sign_raw(
                r#"{"alg":"HS256","crit":["gatehouse-unknown"],"gatehouse-unknown":1}"#,
                &body,
            ),
        ),
        (
            "duplicate sub",
            sign_raw(
                hs,
                &format!(
                    r#"{{"sub":"nobody","sub":"admin","roles":["admin"],"iat":{n},"exp":{},"iss":"gatehouse","jti":"d","uver":"{uver}"}}"#,
                    n + 600
                ),
            ),
        ),
        (
            "duplicate roles",
            sign_raw(
                hs,
                &format!(
                    r#"{{"sub":"admin","roles":[],"roles":["admin"],"iat":{n},"exp":{},"iss":"gatehouse","jti":"d","uver":"{uver}"}}"#,
                    n + 600
                ),
            ),
        ),
        ("payload is an array", sign_raw(hs, "[1,2,3]")),
        ("payload is a number", sign_raw(hs, "42")),
        ("payload is not JSON", sign_raw(hs, "not json")),
        (
            "header is not JSON",
            format!("{}.{}.{}", b64("nope"), parts[1], parts[2]),
        ),
        ("broken base64url", format!("{}.{}!!.{}", parts[0], parts[1], parts[2])),
        (
            "standard base64 padding",
            format!("{}==.{}.{}", parts[0], parts[1], parts[2]),
        ),
        ("four segments", format!("{admin}.extra")),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        (
            "oversized (over 8 KiB)",
            sign_raw(hs, &json!({"sub": "admin", "pad": "x".repeat(9000)}).to_string()),
        ),
        ("roles as a string", {
            let mut c = claims.clone();
            c["roles"] = json!("admin");
            sign_raw(hs, &c.to_string())
        }),
        ("exp as a string", {
            let mut c = claims.clone();
            c["exp"] = json!(format!("{}", n + 600));
            sign_raw(hs, &c.to_string())
        }),
    ];
    for (case, token) in &cases {
        let r = s.get("/users/admin", token);
        assert_eq!(r.status, 401, "{case}: {r:?}");
        r.assert_problem(401);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{case}: {r:?}");
    }
    assert_eq!(s.raw("GET", "/healthz", &[], None).status, 200);
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}
