//! The OpenAPI document (`gatehouse openapi`, the committed `openapi/openapi.json`, the served
//! `/openapi.json` and `/openapi.yaml`), its conventions (operation ids, error responses, the
//! OAuth2 password-flow scheme), Swagger UI, `/healthz`, and problem+json for unknown routes
//! and wrong methods.

use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

const REGENERATE: &str = "run `cargo run --release -- openapi > openapi/openapi.json` and commit the result";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn committed() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}); {REGENERATE}", path.display()))
}

fn generated() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&[], &["openapi"], None, dir.path());
    assert!(
        out.status.success(),
        "`gatehouse openapi` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`gatehouse openapi` does not print JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every (path, method, operation) of a spec.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let paths = spec["paths"].as_object().unwrap_or_else(|| panic!("spec has no paths"));
    let mut out = Vec::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m.to_owned(), op.clone()));
            }
        }
    }
    out
}

/// Whether an operation requires a token (its own `security`, or the document's).
fn is_protected(spec: &Value, op: &Value) -> bool {
    let sec = op.get("security").or_else(|| spec.get("security"));
    sec.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// `gatehouse openapi` prints JSON equal to the committed `openapi/openapi.json`.
#[test]
fn committed_spec_matches_the_generated_one() {
    let gen = generated();
    let com = committed();
    if gen != com {
        let gen_ops: Vec<String> = operations(&gen)
            .into_iter()
            .map(|(p, m, _)| format!("{m} {p}"))
            .collect();
        let com_ops: Vec<String> = operations(&com)
            .into_iter()
            .map(|(p, m, _)| format!("{m} {p}"))
            .collect();
        panic!(
            "openapi/openapi.json differs from what the code generates; {REGENERATE}.\n\
             generated operations: {gen_ops:?}\ncommitted operations: {com_ops:?}"
        );
    }
    assert_eq!(
        gen["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true),
        "OpenAPI 3"
    );
}

/// The server serves the same spec at `/openapi.json`, a YAML one at `/openapi.yaml`, Swagger
/// UI at `/docs` and `{"status":"ok"}` at `/healthz`, all without a token.
#[test]
fn served_spec_docs_and_health() {
    let s = TestServer::start();
    let r = s.raw("GET", "/openapi.json", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.content_type().contains("json"), "{r:?}");
    assert!(
        r.json() == committed(),
        "GET /openapi.json differs from openapi/openapi.json; {REGENERATE}"
    );

    let r = s.raw("GET", "/openapi.yaml", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("openapi:") && r.body.contains("/token"), "{r:?}");

    let r = s.raw("GET", "/docs", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.content_type().starts_with("text/html"), "{r:?}");
    assert!(r.body.contains("swagger"), "{r:?}");

    let r = s.raw("GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.content_type().starts_with("application/json"), "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}), "{r:?}");
}

/// An unknown route is 404 problem+json and a wrong method 405 problem+json.
#[test]
fn unknown_routes_and_wrong_methods_are_problems() {
    let s = TestServer::start();
    for path in ["/nope", "/resources", "/users/a/b", "/healthz/x", "/docs.json"] {
        s.raw("GET", path, &[], None).assert_problem(404);
    }
    s.raw("DELETE", "/healthz", &[], None).assert_problem(405);
    s.raw("POST", "/healthz", &[], Some(("application/json", b"{}")))
        .assert_problem(405);
    s.raw("GET", "/token", &[], None).assert_problem(405);
    s.raw("PATCH", "/resources/notes", &[], Some(("application/json", b"{}")))
        .assert_problem(405);
}

/// Every operation has an operationId, unique and snake_case.
#[test]
fn operation_ids_are_unique_snake_case() {
    let spec = generated();
    let ops = operations(&spec);
    assert!(ops.len() >= 10, "too few operations: {}", ops.len());
    let mut seen = std::collections::BTreeMap::new();
    for (path, method, op) in &ops {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        let snake = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !id.contains("__")
            && !id.ends_with('_');
        assert!(snake, "{method} {path}: operationId `{id}` is not snake_case");
        if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
            panic!("operationId `{id}` is used by both {other} and {method} {path}");
        }
    }
}

/// Every protected operation declares 401 and 403 as `application/problem+json`; everything
/// under `/resources`, `/users` and `/policies` is protected, `/token` and `/healthz` are not.
#[test]
fn protected_operations_declare_401_and_403_problems() {
    let spec = generated();
    let mut protected = 0;
    for (path, method, op) in operations(&spec) {
        let must_be_protected = ["/resources", "/users", "/policies"]
            .iter()
            .any(|p| path.starts_with(p));
        let is_public = path == "/token" || path == "/healthz";
        let prot = is_protected(&spec, &op);
        if must_be_protected {
            assert!(prot, "{method} {path} must require a token");
        }
        if is_public {
            assert!(!prot, "{method} {path} must not require a token");
        }
        if !prot {
            continue;
        }
        protected += 1;
        for status in ["401", "403"] {
            let content = &op["responses"][status]["content"];
            assert!(
                content.get("application/problem+json").is_some(),
                "{method} {path} does not declare {status} application/problem+json: {}",
                op["responses"]
            );
        }
    }
    assert!(protected >= 8, "only {protected} protected operations");
}

/// The security scheme is OAuth2 password flow with token URL `/token`, and protected
/// operations use it.
#[test]
fn security_scheme_is_oauth2_password_flow() {
    let spec = generated();
    let schemes = spec["components"]["securitySchemes"]
        .as_object()
        .unwrap_or_else(|| panic!("no components.securitySchemes"));
    let oauth: Vec<&String> = schemes
        .iter()
        .filter(|(_, s)| s["type"] == "oauth2" && s["flows"]["password"]["tokenUrl"] == "/token")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        oauth.len(),
        1,
        "one oauth2 password-flow scheme with tokenUrl /token: {schemes:?}"
    );
    let name = oauth[0];
    // OpenAPI 3.0 requires `scopes` on every OAuth flow, even when empty (poem-openapi drops it).
    assert_eq!(
        schemes[name.as_str()]["flows"]["password"]["scopes"],
        serde_json::json!({}),
        "{schemes:?}"
    );
    for (path, method, op) in operations(&spec) {
        if !is_protected(&spec, &op) {
            continue;
        }
        let sec = op.get("security").or_else(|| spec.get("security")).unwrap();
        let uses = sec
            .as_array()
            .unwrap()
            .iter()
            .any(|req| req.get(name.as_str()).is_some());
        assert!(uses, "{method} {path} does not use the `{name}` scheme: {sec}");
    }
    // /token itself takes the form Swagger UI sends.
    let token = &spec["paths"]["/token"]["post"];
    assert!(
        token["requestBody"]["content"]
            .get("application/x-www-form-urlencoded")
            .is_some(),
        "POST /token must take a form: {token}"
    );
}

/// Every response declares `X-Request-Id`, and every response of a guarded operation
/// `X-Decision-Id`, as the server sends them.
#[test]
fn id_headers_are_declared_and_sent() {
    let spec = committed();
    for (path, method, op) in operations(&spec) {
        let guarded = is_protected(&spec, &op);
        for (status, resp) in op["responses"].as_object().unwrap() {
            let headers = &resp["headers"];
            assert!(headers["X-Request-Id"].is_object(), "{method} {path} {status}");
            assert_eq!(
                headers["X-Decision-Id"].is_object(),
                guarded,
                "{method} {path} {status}"
            );
        }
    }
    let s = TestServer::start();
    let admin = s.admin_token();
    let r = s.get("/resources/notes", &admin);
    assert!(
        r.header("x-request-id").is_some() && r.header("x-decision-id").is_some(),
        "{r:?}"
    );
    let r = s.raw("GET", "/resources/notes", &[], None);
    assert_eq!(r.status, 401);
    assert!(
        r.header("x-request-id").is_some() && r.header("x-decision-id").is_none(),
        "{r:?}"
    );
}

/// What SDK generators choke on, as found by generating Python and TypeScript clients
/// (e2e/): no `allOf` wrapper around a reference (a copy of the type, or for an enum no type
/// at all), every optional property of an answer (the server sends `null`) is `nullable`, response
/// header names in their usual spelling, and the policy source sent as text that every
/// generator can send.
#[test]
fn spec_has_nothing_generators_mistype() {
    let spec = committed();
    let text = spec.to_string();
    assert!(!text.contains("\"allOf\""), "an allOf wrapper is back in the spec");
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    // The answers whose optional fields the server sends as `null` (Schemathesis and both SDKs
    // found each of them undeclared).
    let answered = [
        "DocumentPage",
        "UserPage",
        "PolicyView",
        "PolicyChange",
        "EvalResult",
        "ReloadView",
        "ReplayChange",
    ];
    for name in answered {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // A request-only schema stays plain (clients leave such fields out).
    assert!(schemas["EvalInput"]["properties"]["source"].get("nullable").is_none());
    for (name, schema) in schemas.iter().filter(|(n, _)| answered.contains(&n.as_str())) {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (prop, s) in schema["properties"].as_object().into_iter().flatten() {
            let optional = !required.contains(&prop.as_str()) && s.get("default").is_none() && s.get("$ref").is_none();
            if optional {
                assert_eq!(s["nullable"], true, "{name}.{prop} may be null but is not nullable");
            }
        }
    }
    for (path, method, op) in operations(&spec) {
        for (status, resp) in op["responses"].as_object().unwrap() {
            for header in resp["headers"].as_object().into_iter().flatten().map(|(h, _)| h) {
                assert!(
                    header.chars().any(|c| c.is_ascii_lowercase()),
                    "{method} {path} {status}: header `{header}` in capitals"
                );
            }
        }
    }
    let put = &spec["paths"]["/policies/{name}"]["put"]["requestBody"]["content"];
    assert_eq!(put.as_object().unwrap().keys().collect::<Vec<_>>(), ["text/plain"]);
    assert_eq!(
        put["text/plain"]["schema"],
        serde_json::json!({"type": "string", "format": "binary"})
    );
}

/// The policy source is accepted as `text/plain` with or without a charset, and must be UTF-8.
#[test]
fn policy_source_body_is_utf8_text() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let auth = format!("Bearer {admin}");
    let src = "claims.sub == \"admin\"\n";
    for ctype in ["text/plain", "text/plain; charset=utf-8"] {
        let r = s.raw(
            "PUT",
            "/policies/widgets",
            &[("Authorization", &auth)],
            Some((ctype, src.as_bytes())),
        );
        assert!(r.status == 200 || r.status == 201, "{ctype}: {r:?}");
    }
    let r = s.raw(
        "PUT",
        "/policies/widgets",
        &[("Authorization", &auth)],
        Some(("text/plain", b"\"caf\xe9\"")),
    );
    let p = r.assert_problem(400);
    assert!(p["detail"].as_str().unwrap().contains("UTF-8"), "{p}");
    let r = s.raw(
        "PUT",
        "/policies/widgets",
        &[("Authorization", &auth)],
        Some(("application/json", b"\"true\"")),
    );
    r.assert_problem(415);
}

/// `reload` and `evaluate` are reserved: `/policies/reload` and `/policies/evaluate` are
/// operations of their own. Such a file is reported as failing (never a kind), `PUT` refuses the
/// name (also as `/policies/reload`: 400, as `/policies/{name}` declares), and a wrong method
/// is a 405 that names the allowed methods.
#[test]
fn reserved_policy_names_and_allow_on_405() {
    let s = TestServer::start();
    let admin = s.admin_token();
    s.write_policy("reload", "true");
    let failing = wait_until(std::time::Duration::from_secs(10), || {
        s.get("/policies", &admin).json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "reload" && p["error"].as_str().is_some_and(|e| e.contains("reserved")))
    });
    assert!(failing.is_some(), "{:?}", s.get("/policies", &admin));
    s.get("/resources/reload", &admin).assert_problem(404);
    let auth = format!("Bearer {admin}");
    for name in ["reload", "evaluate"] {
        let path = format!("/policies/{name}");
        // What `/policies/{name}` declares: 400 for the reserved name, 401 without a token.
        let r = s.raw("PUT", &path, &[("Authorization", &auth)], Some(("text/plain", b"true")));
        let p = r.assert_problem(400);
        assert!(p["detail"].as_str().unwrap().contains("reserved"), "{p}");
        s.raw("GET", &path, &[("Authorization", &auth)], None)
            .assert_problem(400);
        s.raw("DELETE", &path, &[("Authorization", &auth)], None)
            .assert_problem(400);
        s.raw("GET", &path, &[], None).assert_problem(401);
        let r = s.raw("PATCH", &path, &[("Authorization", &auth)], None);
        r.assert_problem(405);
        assert_eq!(r.header("allow"), Some("POST"), "{r:?}");
    }
    // The operations at those paths are untouched.
    assert_eq!(
        s.raw("POST", "/policies/reload", &[("Authorization", &auth)], None)
            .status,
        200
    );
    let r = s.raw("DELETE", "/resources/notes", &[("Authorization", &auth)], None);
    r.assert_problem(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"), "{r:?}");
    let r = s.raw("PATCH", "/policies/notes", &[("Authorization", &auth)], None);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"), "{r:?}");
}
