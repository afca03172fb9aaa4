//! Signing keys: algorithms, `kid`, JWKS, discovery, rotation without downtime.

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

fn header_of(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A server signing with `alg` and a generated key (no `jwt_secret`).
fn server_with(alg: &str) -> TestServer {
    TestServer::start_with(
        Some(&shipped_policies()),
        &[("GATEHOUSE_JWT_SECRET", ""), ("GATEHOUSE_JWT_ALGORITHM", alg)],
    )
}

/// With HS256 every token carries a `kid`, the JWKS is empty (a secret is never published) and
/// the discovery document names the endpoints.
#[test]
fn hs256_jwks_is_empty_and_discovery_names_endpoints() {
    let s = TestServer::start();
    let t = s.admin_token();
    let h = header_of(&t);
    assert_eq!(h["alg"], "HS256");
    assert!(h["kid"].as_str().is_some_and(|k| k.starts_with("hs256-")), "{h}");
    let r = s.raw("GET", "/.well-known/jwks.json", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"keys": []}));
    assert!(!r.body.contains(SECRET));
    let r = s.raw("GET", "/.well-known/openid-configuration", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    let d = r.json();
    assert_eq!(d["issuer"], "gatehouse");
    assert_eq!(d["token_endpoint"], format!("http://127.0.0.1:{}/token", s.port));
    assert_eq!(
        d["revocation_endpoint"],
        format!("http://127.0.0.1:{}/token/revoke", s.port)
    );
    assert_eq!(
        d["jwks_uri"],
        format!("http://127.0.0.1:{}/.well-known/jwks.json", s.port)
    );
    assert_eq!(d["grant_types_supported"], json!(["password", "refresh_token"]));
}

/// EdDSA with a generated key: tokens verify, the key is published, survives a restart, and
/// rotation lets old tokens verify while new ones use the new `kid`.
#[test]
fn eddsa_generated_key_publishes_and_rotates() {
    let mut s = server_with("EdDSA");
    let admin = s.admin_token();
    let h = header_of(&admin);
    assert_eq!(h["alg"], "EdDSA");
    let kid1 = h["kid"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/resources/notes", &admin).status, 200);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kid"], kid1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "no private part: {jwks}");

    // The generated key survives a restart.
    s.stop();
    s.spawn();
    assert_eq!(s.get("/resources/notes", &admin).status, 200);

    // Only admins rotate (shipped _keys.rhai).
    let ann = s.user(&admin, "ann", &["user"]);
    s.req("POST", "/keys/rotate", Some(&ann), None).assert_problem(403);

    let r = s.req("POST", "/keys/rotate", Some(&admin), None);
    assert_eq!(r.status, 200, "{r:?}");
    let kid2 = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(kid1, kid2);
    assert_eq!(r.json()["kids"], json!([kid1, kid2]));
    // Old tokens keep working; new tokens carry the new kid; both keys are published.
    assert_eq!(s.get("/resources/notes", &admin).status, 200);
    let fresh = s.admin_token();
    assert_eq!(header_of(&fresh)["kid"], kid2.as_str());
    assert_eq!(s.get("/resources/notes", &fresh).status, 200);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
}

/// ES256 with a generated key works end to end and publishes an EC key.
#[test]
fn es256_generated_key_works() {
    let s = server_with("ES256");
    let t = s.admin_token();
    assert_eq!(header_of(&t)["alg"], "ES256");
    assert_eq!(s.get("/resources/notes", &t).status, 200);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"][0]["kty"], "EC", "{jwks}");
    assert_eq!(jwks["keys"][0]["crv"], "P-256", "{jwks}");
}

/// RS256 from a PKCS#8 PEM file (`jwt_private_key`); rotation over HTTP is refused with 409
/// because the key is configured, not generated.
#[test]
fn rs256_from_pem_file() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rsa.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .status()
        .expect("openssl is needed for this test");
    assert!(ok.success());
    let s = TestServer::start_with(
        Some(&shipped_policies()),
        &[
            ("GATEHOUSE_JWT_SECRET", ""),
            ("GATEHOUSE_JWT_ALGORITHM", "RS256"),
            ("GATEHOUSE_JWT_PRIVATE_KEY", pem.to_str().unwrap()),
        ],
    );
    let t = s.admin_token();
    assert_eq!(header_of(&t)["alg"], "RS256");
    assert_eq!(s.get("/resources/notes", &t).status, 200);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "{jwks}");
    assert!(jwks["keys"][0]["n"].is_string(), "{jwks}");
    s.req("POST", "/keys/rotate", Some(&t), None).assert_problem(409);
}

/// `gatehouse keys rotate` with the server stopped: after a restart, old tokens still verify
/// and new ones use the new key.
#[test]
fn cli_rotation_keeps_old_tokens_valid() {
    let mut s = server_with("EdDSA");
    let old = s.admin_token();
    let kid1 = header_of(&old)["kid"].as_str().unwrap().to_owned();
    s.stop();
    let out = s.cli(
        &[
            "keys",
            "rotate",
            "--data-dir",
            s.data.to_str().unwrap(),
            "--jwt-algorithm",
            "EdDSA",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&kid1) && listing.contains("retired"), "{listing}");
    s.spawn();
    assert_eq!(s.get("/resources/notes", &old).status, 200);
    let fresh = s.admin_token();
    assert_ne!(header_of(&fresh)["kid"], kid1.as_str());
}

/// Attacks on an EdDSA server: an HS256 token "signed" with the public key as the HMAC
/// secret (algorithm confusion), the same key's kid with another `alg`, `alg: none`, and an
/// embedded `jwk` header are all 401.
#[test]
fn eddsa_server_refuses_algorithm_confusion() {
    use base64::Engine as _;
    let s = server_with("EdDSA");
    let admin = s.admin_token();
    let kid = header_of(&admin)["kid"].as_str().unwrap().to_owned();
    let claims = token_payload(&admin);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&x).unwrap();
    let cases = [
        (
            "HS256 with the public key as secret",
            forge(&json!({"alg": "HS256", "kid": kid}), &claims, &public),
        ),
        (
            "HS256 with the JWK x as secret",
            forge(&json!({"alg": "HS256", "kid": kid}), &claims, x.as_bytes()),
        ),
        ("HS256 without kid", forge(&json!({"alg": "HS256"}), &claims, &public)),
        (
            "embedded jwk header",
            forge(
                &json!({"alg": "HS256", "kid": kid, "jwk": {"kty": "oct", "k": "AAAA"}}),
                &claims,
                &public,
            ),
        ),
    ];
    for (case, token) in cases {
        let r = s.get("/resources/notes", &token);
        assert_eq!(r.status, 401, "{case}: {r:?}");
        r.assert_problem(401);
    }
    // The real signature with a different alg in the header.
    let parts: Vec<&str> = admin.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let switched = format!(
        "{}.{}.{}",
        b64.encode(json!({"alg": "ES256", "kid": kid}).to_string()),
        parts[1],
        parts[2]
    );
    assert_eq!(s.get("/resources/notes", &switched).status, 401);
    let none = format!(
        "{}.{}.",
        b64.encode(json!({"alg": "none", "kid": kid}).to_string()),
        parts[1]
    );
    assert_eq!(s.get("/resources/notes", &none).status, 401);
}

/// RS256 with a generated 2048-bit key works end to end.
#[test]
fn rs256_generated_key_works() {
    let s = server_with("RS256");
    let t = s.admin_token();
    assert_eq!(header_of(&t)["alg"], "RS256");
    assert_eq!(s.get("/resources/notes", &t).status, 200);
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "{jwks}");
    // HS/RS confusion: an HS256 token "signed" with the published public key material.
    let kid = header_of(&t)["kid"].as_str().unwrap().to_owned();
    let claims = token_payload(&t);
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    for secret in [
        n.as_bytes(),
        jwks.to_string().as_bytes(),
        jwks["keys"][0].to_string().as_bytes(),
    ] {
        let forged = forge(&json!({"alg": "HS256", "kid": kid}), &claims, secret);
        s.get("/resources/notes", &forged).assert_problem(401);
        let forged = forge(&json!({"alg": "HS256"}), &claims, secret);
        s.get("/resources/notes", &forged).assert_problem(401);
    }
}

/// A retired key leaves (JWKS and verification) once every token it signed has expired:
/// with a 1 s token lifetime and no leeway, a key rotated out is gone after a restart 2 s later.
#[test]
fn retired_key_leaves_after_its_tokens_expire() {
    let mut s = TestServer::start_with(
        Some(&shipped_policies()),
        &[
            ("GATEHOUSE_JWT_SECRET", ""),
            ("GATEHOUSE_JWT_ALGORITHM", "EdDSA"),
            ("GATEHOUSE_ACCESS_TOKEN_TTL", "1"),
            ("GATEHOUSE_LEEWAY", "0"),
        ],
    );
    let t = s.admin_token();
    let kid1 = header_of(&t)["kid"].as_str().unwrap().to_owned();
    let r = s.req("POST", "/keys/rotate", Some(&t), None);
    assert_eq!(r.status, 200, "{r:?}");
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    s.stop();
    s.spawn();
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 1, "{jwks}");
    assert_ne!(kids[0], kid1);
}

/// `keys list` only reads: it never generates, retires or prunes keys, whatever the settings.
#[test]
fn cli_keys_list_is_read_only() {
    let mut s = server_with("EdDSA");
    let t = s.admin_token();
    let kid = header_of(&t)["kid"].as_str().unwrap().to_owned();
    s.stop();
    let data = s.data.to_str().unwrap().to_owned();
    for _ in 0..2 {
        // Even with another algorithm configured, listing changes nothing.
        let out = s.cli(&["keys", "list", "--data-dir", &data, "--jwt-algorithm", "ES256"], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&kid) && text.contains("signing") && !text.contains("es256"),
            "{text}"
        );
    }
    let missing = s.dir.path().join("nowhere");
    let out = s.cli(&["keys", "list", "--data-dir", missing.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(!missing.exists(), "listing must not create a database");
    s.spawn();
    assert_eq!(s.get("/resources/notes", &t).status, 200);
}

/// JWKS entries carry only the members of their key type (no `null`s), and a key file that is
/// not a key fails the start with a plain message, before anything is written.
#[test]
fn jwks_members_and_bad_key_file() {
    let s = server_with("ES256");
    let jwks = s.raw("GET", "/.well-known/jwks.json", &[], None).json();
    let key = jwks["keys"][0].as_object().unwrap();
    assert!(key.values().all(|v| !v.is_null()), "{jwks}");
    assert!(!key.contains_key("n") && !key.contains_key("e"), "{jwks}");

    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("key.pem");
    std::fs::write(&not_a_key, "hello").unwrap();
    let data = dir.path().join("data");
    let out = cli(
        &[],
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--policies",
            shipped_policies().to_str().unwrap(),
            "--jwt-algorithm",
            "EdDSA",
            "--jwt-private-key",
            not_a_key.to_str().unwrap(),
        ],
        None,
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jwt_private_key") && !err.contains("internal error") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!data.exists(), "a failed start must not create the database");
}
