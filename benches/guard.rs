//! Criterion benchmarks of what every guarded request pays for: token verification, policy
//! evaluation (four policies of rising size, and the shipped `policies/notes.rhai`, `benches/policies/`), and the whole guarded
//! `GET /resources/notes/{id}` in process (routing, middleware, token, user lookup, revocation
//! check, policy, decision log, store read, JSON answer), without the network.
//!
//! `cargo bench --bench guard` runs them; README has the figures.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // benchmark set-up: failing loudly is right

use std::{hint::black_box, path::Path};

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::{
    auth::token::{TokenOptions, TokenService},
    model::{DocId, Kind, Role, Username},
    policy::{Input, Limits, PolicyEngine, RequestInput, ResourceInput},
    store::{Document, UserRecord},
    Application, Settings,
};
use poem::{http::Method, Endpoint, Request};

/// The allocator of the `gatehouse` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn user(name: &str, roles: &[&str]) -> UserRecord {
    UserRecord::new(
        Username::parse(name).expect("user name"),
        String::new(),
        roles.iter().map(|r| Role::parse(r).expect("role")).collect(),
        "2026-12-04T00:00:00Z".into(),
    )
}

fn token_service() -> TokenService {
    TokenService::new(
        b"gatehouse-bench-secret-0123456789abcdef",
        TokenOptions {
            issuer: "gatehouse".into(),
            audience: None,
            ttl: 900,
            leeway: 30,
        },
    )
    .expect("token service")
}

fn token_verification(c: &mut Criterion) {
    let tokens = token_service();
    let (token, _) = tokens.issue(&user("alice", &["user"])).expect("issue");
    c.bench_function("token/verify_hs256", |b| {
        b.iter(|| tokens.verify(black_box(&token)).expect("valid"))
    });
}

/// Every policy in `dir`, loaded (and tested) as the server loads them.
fn loaded(dir: &str) -> std::sync::Arc<gatehouse::policy::PolicySet> {
    let engine = PolicyEngine::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), Limits::default());
    let report = engine.reload();
    assert!(report.failed.is_empty(), "{dir} must load: {:?}", report.failed);
    engine.snapshot()
}

fn policy_evaluation(c: &mut Criterion) {
    let bench = loaded("benches/policies");
    // The shipped notes policy is what the guarded request of `bench/load.sh` runs.
    let shipped = loaded("policies");
    // What the server passes for alice reading her own document: her token's claims as JSON.
    let tokens = token_service();
    let (token, _) = tokens.issue(&user("alice", &["user", "staff"])).expect("issue");
    let claims = tokens.verify_cached(&token).expect("valid").policy_claims.clone();
    let data = serde_json::json!({"title": "groceries", "items": ["milk", "eggs"], "tenant": "example.org"});
    let headers = [("host", "127.0.0.1:8080"), ("user-agent", "bench"), ("accept", "*/*")];
    let mut group = c.benchmark_group("policy");
    let cases = [
        ("trivial", &bench, "trivial"),
        ("role_check", &bench, "role_check"),
        ("owner_check", &bench, "owner_check"),
        ("realistic", &bench, "realistic"),
        ("shipped_notes", &shipped, "notes"),
    ];
    for (label, set, name) in cases {
        group.bench_function(label, |b| {
            b.iter(|| {
                // Per request: the evaluation, which builds the script's scope (the claims are
                // converted once per token, as the server does).
                let input = Input {
                    claims: &claims,
                    action: "read",
                    resource: ResourceInput {
                        kind: name,
                        id: Some("019a7c2e-3b1f-7cc0-9a51-2f0c6b7d8e90"),
                        owner: Some("alice"),
                        data: &data,
                        old: None,
                        extra: None,
                    },
                    request: RequestInput {
                        method: "GET",
                        path: "/resources/notes/019a7c2e-3b1f-7cc0-9a51-2f0c6b7d8e90",
                        time: 1_796_371_200,
                        ip: Some("127.0.0.1"),
                        headers: &headers,
                    },
                };
                let d = set.evaluate(name, black_box(&input)).expect("loaded");
                assert!(d.allow, "{label}: {d:?}");
                d
            })
        });
    }
    group.finish();
}

fn guarded_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("temp dir");
    let policies = tmp.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/notes.rhai");
    std::fs::copy(shipped, policies.join("notes.rhai")).expect("copy notes.rhai");
    let settings = Settings {
        bind: "127.0.0.1:0".parse().expect("addr"),
        data_dir: tmp.path().join("data"),
        policies,
        admin_password: Some(gatehouse::config::Secret::new("bench-admin-password")),
        ..Settings::default()
    };
    let (app, path, auth) = rt.block_on(async {
        let app = Application::build(settings).await.expect("server");
        let state = app.state().clone();
        let alice = user("alice", &["user"]);
        state.store.create_user(&alice).await.expect("user");
        let doc = Document {
            id: DocId::generate(),
            kind: Kind::parse("notes").expect("kind"),
            owner: alice.username.clone(),
            data: serde_json::json!({"title": "groceries", "items": ["milk"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            created_at: "2026-12-04T00:00:00Z".into(),
            updated_at: "2026-12-04T00:00:00Z".into(),
        };
        state.store.insert_doc(&doc).await.expect("doc");
        let (token, _) = state.auth.tokens().issue(&alice).expect("token");
        (app, format!("/resources/notes/{}", doc.id), format!("Bearer {token}"))
    });
    let endpoint = app.endpoint();
    c.bench_function("request/healthz", |b| {
        b.to_async(&rt).iter(|| {
            let req = Request::builder().method(Method::GET).uri_str("/healthz").finish();
            async move { endpoint.call(req).await.expect("answer") }
        })
    });
    c.bench_function("request/guarded_get", |b| {
        b.to_async(&rt).iter(|| {
            let req = Request::builder()
                .method(Method::GET)
                .uri(path.parse().expect("uri"))
                .header("authorization", auth.as_str())
                .finish();
            async move {
                let resp = endpoint.call(req).await.expect("answer");
                assert_eq!(resp.status(), 200);
                resp
            }
        })
    });
}

criterion_group!(benches, token_verification, policy_evaluation, guarded_request);
criterion_main!(benches);
