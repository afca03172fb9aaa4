//! The HTTP API: poem-openapi endpoints, the OpenAPI document, Swagger UI and error mapping.
//!
//! [`openapi_service_with`] is the single builder of the spec: the server, `gatehouse openapi` and
//! the drift test all use it ([`openapi_service`] is the `gatehouse` binary's, whose only plugin
//! is the document store). [`routes`] assembles the full endpoint around an [`AppState`].

pub mod keys;
pub mod payload;
pub mod policies;
pub mod problem;
pub mod resources;
pub mod security;
pub mod system;
pub mod token;
pub mod users;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use poem::{
    http::{HeaderValue, Method},
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route,
};
use poem_openapi::{OpenApi, OpenApiService, Tags};
use serde_json::Value;

use tracing::Instrument as _;

use crate::{
    auth::{Authenticator, Hasher},
    config::Settings,
    metrics::{Metrics, RouteNames},
    policy::{ClaimSet, Input, Outcome, PolicyEngine, PolicySet, RequestInput, ResourceInput},
    store::Store,
};
use problem::ApiError;

/// Everything a request handler needs, shared by all requests.
pub struct AppState {
    /// Resolved settings.
    pub settings: Settings,
    /// Users and documents.
    pub store: Arc<dyn Store>,
    /// Bearer-token checks and token issue.
    pub auth: Authenticator,
    /// Password hashing off the async workers.
    pub hasher: Hasher,
    /// The plugins' token-issue hooks (see [`crate::plugin`]).
    pub plugins: Arc<dyn crate::plugin::PluginHooks>,
    /// Where the signing keys come from (rotation works only for generated keys).
    pub key_source: crate::app::KeySource,
    /// Serialises key rotations within this process.
    pub key_lock: tokio::sync::Mutex<()>,
    /// Failed-login counters (429 beyond the limit).
    pub throttle: crate::auth::throttle::LoginThrottle,
    /// Loaded policies, swapped atomically on reload.
    pub policies: Arc<PolicyEngine>,
    /// Where each decision is recorded.
    pub decisions: Arc<crate::decisions::DecisionLog>,
    /// Serialises remote policy edits (check `If-Match`, vet, write, reload) within this process.
    pub policy_edit_lock: tokio::sync::Mutex<()>,
    /// Counters and histograms served at `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Operation groups in the spec and Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Log in: get an access token.
    Auth,
    /// Documents of the resource kinds defined by policy files.
    Resources,
    /// User administration (governed by `_users.rhai`).
    Users,
    /// Policy status (governed by `_policies.rhai`).
    Policies,
    /// Health.
    System,
}

/// Every operation of a server whose plugins' endpoints are `P` (see [`crate::plugin`]): the
/// built-in APIs with the plugins' in the middle, where the document store has always been.
pub type FullApi<P> = (
    token::TokenApi,
    keys::KeysApi,
    P,
    users::UserApi,
    policies::PolicyApi,
    system::SystemApi,
);

/// The OpenAPI service of the `gatehouse` binary: every operation of the server.
pub type ApiService = OpenApiService<FullApi<resources::ResourceApi>, ()>;

const API_DESCRIPTION: &str = "JWT-secured resources whose access rules are hot-reloaded Rhai scripts.\n\n\
Log in with **Authorize** (OAuth2 password flow against `POST /token`), then call any endpoint. \
A resource kind exists while `policies/<kind>.rhai` exists; that script decides every request to it. \
Errors are `application/problem+json` (RFC 9457), except the token endpoint's, which follow RFC 6749 §5.2.";

/// Builds the OpenAPI service of the `gatehouse` binary (the document store is its only
/// plugin). No state needed: the spec is a function of the types.
pub fn openapi_service() -> ApiService {
    openapi_service_with(resources::ResourceApi)
}

/// Builds the OpenAPI service with the plugins' endpoints `plugins`.
pub fn openapi_service_with<P: OpenApi>(plugins: P) -> OpenApiService<FullApi<P>, ()> {
    OpenApiService::new(
        (
            token::TokenApi,
            keys::KeysApi,
            plugins,
            users::UserApi,
            policies::PolicyApi,
            system::SystemApi,
        ),
        "gatehouse",
        env!("CARGO_PKG_VERSION"),
    )
    .description(API_DESCRIPTION)
}

/// The spec as pretty JSON, exactly what `gatehouse openapi` prints and
/// `openapi/openapi.json` holds.
pub fn spec_json() -> String {
    spec_json_of(&openapi_service())
}

/// The spec of any service as pretty JSON, completed (see [`complete_spec`]).
pub fn spec_json_of<T: OpenApi>(svc: &OpenApiService<T, ()>) -> String {
    json_of(svc, spec_doc_of(svc).as_ref())
}

/// The spec in YAML, with the same completions as [`spec_json`].
pub fn spec_yaml() -> String {
    spec_yaml_of(&openapi_service())
}

/// The spec of any service in YAML: the completed JSON document, written as YAML.
pub fn spec_yaml_of<T: OpenApi>(svc: &OpenApiService<T, ()>) -> String {
    yaml_of(svc, spec_doc_of(svc).as_ref())
}

/// The spec of a service as a JSON tree, completed (see [`complete_spec`]).
fn spec_doc_of<T: OpenApi>(svc: &OpenApiService<T, ()>) -> Option<Value> {
    let mut doc = serde_json::from_str::<Value>(&svc.spec()).ok()?;
    complete_spec(&mut doc);
    Some(doc)
}

/// `doc` as pretty JSON; poem-openapi's own document when there is none.
fn json_of<T: OpenApi>(svc: &OpenApiService<T, ()>, doc: Option<&Value>) -> String {
    doc.and_then(|d| serde_json::to_string_pretty(d).ok())
        .unwrap_or_else(|| svc.spec())
}

/// `doc` as YAML; poem-openapi's own document when there is none.
fn yaml_of<T: OpenApi>(svc: &OpenApiService<T, ()>, doc: Option<&Value>) -> String {
    doc.and_then(|d| serde_yaml::to_string(d).ok())
        .unwrap_or_else(|| svc.spec_yaml())
}

/// The names of the component schemas that some response uses, directly or through other
/// schemas.
fn answered_schemas(doc: &Value) -> std::collections::BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        out.push(name.to_owned());
                    }
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for item in doc["paths"].as_object().into_iter().flatten().map(|(_, v)| v) {
        for op in item.as_object().into_iter().flatten().map(|(_, v)| v) {
            refs(&op["responses"], &mut todo);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut todo);
        }
    }
    seen
}

/// A header name in its usual spelling: `ETAG` → `ETag`, `WWW-AUTHENTICATE` →
/// `WWW-Authenticate`, `CACHE-CONTROL` → `Cache-Control`.
fn header_case(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "etag" => "ETag".to_owned(),
        "www-authenticate" => "WWW-Authenticate".to_owned(),
        lower => lower
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// The schema fixes of [`complete_spec`], for one object schema's properties:
/// - a property whose type is a named schema is `{"$ref": ...}`; poem-openapi wraps it in a
///   one-element `allOf` when the field has a doc comment, which generators turn into a copy of
///   the schema (or, for a non-object such as an enum, drop the whole type);
/// - an optional property (not `required`, no `default`) of a schema that answers carry
///   (`answered`) is `nullable`: poem-openapi writes `None` as `null`, so the document must say
///   so. Request-only schemas are left alone: clients leave such fields out, and a nullable
///   property only makes their generated types clumsier. (A reference
///   cannot be nullable in OpenAPI 3.0: an optional field of a named type in an answer must
///   be `skip_serializing_if_is_none`; the spec-conformance checks of the e2e parts catch it.)
fn fix_properties(schema: &mut Value, answered: bool) {
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        // `allOf: [{$ref}, {description, ...}]`: a reference with annotations only.
        let annotation = |v: &Value| {
            v.as_object().is_some_and(|o| {
                o.keys().all(|k| {
                    matches!(
                        k.as_str(),
                        "description" | "title" | "readOnly" | "writeOnly" | "deprecated"
                    )
                })
            })
        };
        let single_ref = prop
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|all| !all.is_empty() && all[1..].iter().all(annotation))
            .and_then(|all| all[0].get("$ref"))
            .cloned();
        if let Some(reference) = single_ref {
            *prop = serde_json::json!({ "$ref": reference });
            continue;
        }
        let Some(obj) = prop.as_object_mut() else { continue };
        if answered && !required.contains(name) && !obj.contains_key("$ref") && !obj.contains_key("default") {
            obj.insert("nullable".into(), Value::Bool(true));
        }
    }
}

/// What poem-openapi cannot express, added to its document:
/// - the property fixes of [`fix_properties`], on every component schema;
/// - response header names in their usual spelling ([`header_case`]);
/// - the empty `scopes` map of the OAuth2 flow, which OpenAPI 3.0 requires (validators and spec
///   fuzzers reject the document without it) but poem-openapi leaves out;
/// - the `X-Request-Id` header on every response, and `X-Decision-Id` on every response of an
///   operation that needs a token (those are decided by a policy).
fn complete_spec(doc: &mut Value) {
    let answered = answered_schemas(doc);
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schemas.iter_mut() {
            fix_properties(schema, answered.contains(name));
        }
    }
    if let Some(schemes) = doc
        .pointer_mut("/components/securitySchemes")
        .and_then(Value::as_object_mut)
    {
        for scheme in schemes.values_mut() {
            if let Some(flows) = scheme.get_mut("flows").and_then(Value::as_object_mut) {
                for flow in flows.values_mut() {
                    if let Some(flow) = flow.as_object_mut() {
                        flow.entry("scopes")
                            .or_insert_with(|| Value::Object(Default::default()));
                    }
                }
            }
        }
    }
    let header = |description: &str| serde_json::json!({"description": description, "schema": {"type": "string"}});
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        let headers = components
            .entry("headers")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(headers) = headers.as_object_mut() {
            headers.insert(
                "RequestId".into(),
                header("The request's id: the client's `X-Request-Id` when it sent a sane one, else a new UUIDv7."),
            );
            headers.insert(
                "DecisionId".into(),
                header("The id of the policy decision that decided this answer, as recorded in the decision log."),
            );
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            let guarded = op.get("security").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for resp in responses.values_mut() {
                let Some(resp) = resp.as_object_mut() else { continue };
                let headers = resp
                    .entry("headers")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(headers) = headers.as_object_mut() {
                    // poem-openapi writes response header names in capitals (`LOCATION`);
                    // generated clients show them as written.
                    *headers = std::mem::take(headers)
                        .into_iter()
                        .map(|(name, v)| (header_case(&name), v))
                        .collect();
                    headers.insert(
                        "X-Request-Id".into(),
                        serde_json::json!({"$ref": "#/components/headers/RequestId"}),
                    );
                    if guarded {
                        headers.insert(
                            "X-Decision-Id".into(),
                            serde_json::json!({"$ref": "#/components/headers/DecisionId"}),
                        );
                    }
                }
            }
        }
    }
}

/// The whole HTTP endpoint: API, `/openapi.json`, `/openapi.yaml`, `/docs`, body limit and
/// problem+json for every error.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    routes_with(state, resources::ResourceApi)
}

/// As [`routes`], with the plugins' endpoints `plugins` (check them first with
/// [`crate::plugin::check_api`]: clashing operation ids make poem-openapi panic).
pub fn routes_with<P: OpenApi + 'static>(state: Arc<AppState>, plugins: P) -> impl Endpoint {
    let svc = openapi_service_with(plugins);
    let max_body = state.settings.max_body_bytes;
    // One completed document gives the served JSON and YAML and the metrics' route names.
    let doc = spec_doc_of(&svc);
    let json = json_of(&svc, doc.as_ref());
    let yaml = yaml_of(&svc, doc.as_ref());
    let observer = Arc::new(Observer {
        routes: doc.as_ref().map(RouteNames::from_spec).unwrap_or_default(),
        metrics: state.metrics.clone(),
    });
    Route::new()
        .nest("/docs", svc.swagger_ui())
        .at("/openapi.json", spec_endpoint(json, "application/json"))
        .at("/openapi.yaml", spec_endpoint(yaml, "application/x-yaml"))
        .nest("/", svc)
        .around(move |ep, req| guard_request(ep, req, max_body))
        .data(state)
        .catch_all_error(problem::catch_all)
        .around(move |ep, req| request_context(ep, req, observer.clone()))
}

/// What the outermost layer needs to label and count each request.
struct Observer {
    routes: RouteNames,
    metrics: Arc<Metrics>,
}

/// Header carrying the request id: taken from the client when it is a sane token, else made.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header carrying the id of the policy decision that decided the response (see the decision
/// log).
pub const DECISION_ID_HEADER: &str = "x-decision-id";

/// Per-request facts shared between the outermost middleware and the handlers.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id (`X-Request-Id`).
    pub id: String,
    /// The decision that decided the response: the first one, unless a later one denied.
    decision: Mutex<Option<(String, bool)>>,
}

impl RequestContext {
    fn note_decision(&self, id: &str, allowed: bool) {
        let mut slot = self.decision.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((_, false)) => {}
            Some(_) if allowed => {}
            _ => *slot = Some((id.to_owned(), allowed)),
        }
    }
}

/// A client-sent request id is kept when it is 1–128 visible ASCII characters of a safe set.
fn client_request_id(req: &Request) -> Option<String> {
    let id = req.header(REQUEST_ID_HEADER)?;
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='));
    ok.then(|| id.to_owned())
}

/// Outermost layer: gives every request an id and a tracing span that carries it, every answer
/// `X-Request-Id` and (when a policy decided it) `X-Decision-Id`, and counts the request in the
/// metrics by route and status.
async fn request_context<E: Endpoint>(ep: Arc<E>, mut req: Request, obs: Arc<Observer>) -> poem::Result<Response> {
    let started = Instant::now();
    let _in_flight = obs.metrics.in_flight();
    let id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.uri().path());
    let ctx = Arc::new(RequestContext {
        id,
        decision: Mutex::new(None),
    });
    req.extensions_mut().insert(Arc::clone(&ctx));
    let mut resp = match ep.call(req).instrument(span.clone()).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key("allow") {
        // RFC 9110 §15.5.6: a 405 names the methods the resource has.
        let allowed = obs.routes.allowed(uri.path()).join(", ");
        match HeaderValue::from_str(&allowed) {
            Ok(v) if !allowed.is_empty() => {
                resp.headers_mut().insert(poem::http::header::ALLOW, v);
            }
            _ => {}
        }
    }
    let operation = resp.data::<poem_openapi::OperationId>().map(|op| op.0);
    let (method_label, route) = obs.routes.label(operation, &method, uri.path());
    let elapsed = started.elapsed();
    obs.metrics.observe_request(method_label, route, resp.status(), elapsed);
    span.in_scope(|| {
        tracing::debug!(
            target: "gatehouse::access",
            status = resp.status().as_u16(),
            route,
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let decision = ctx.decision.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(v) = decision.and_then(|(id, _)| HeaderValue::from_str(&id).ok()) {
        resp.headers_mut().insert(DECISION_ID_HEADER, v);
    }
    Ok(resp)
}

/// The client's IP address as the TCP peer (gatehouse does not trust forwarding headers).
pub fn client_ip(req: &Request) -> Option<String> {
    req.remote_addr().as_socket_addr().map(|a| a.ip().to_string())
}

fn spec_endpoint(body: String, content_type: &'static str) -> impl Endpoint {
    poem::endpoint::make_sync(move |_| Response::builder().content_type(content_type).body(body.clone()))
}

/// `GET`, `PUT` and `DELETE` of `/policies/reload` and `/policies/evaluate` (the
/// [reserved names](crate::policy::RESERVED_NAMES)) mean the policies of those names, but the
/// router would send them to the `POST` operations at those paths and answer 405, which
/// `/policies/{name}` does not declare. They are sent to `/policies/{name}` instead (the name's
/// first letter percent-encoded, which the router matches as a parameter and the handler
/// decodes), whose handlers authenticate, authorize, and refuse the name (400).
fn reserved_policy_paths(req: &mut Request) {
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::PUT | Method::DELETE) {
        return;
    }
    let uri = req.uri();
    let Some(name) = uri
        .path()
        .strip_prefix("/policies/")
        .filter(|n| crate::policy::is_reserved(n))
    else {
        return;
    };
    // Reserved names are lowercase ASCII words.
    let (first, rest) = name.split_at(1);
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let encoded = format!("/policies/%{:02X}{rest}{query}", first.as_bytes()[0]);
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = encoded.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = poem::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Checks every request before routing: refuses two `Authorization` headers (400) and bodies
/// over the limit (413, before any handler reads them, whether or not a `Content-Length` was
/// sent).
async fn guard_request<E: Endpoint>(ep: Arc<E>, mut req: Request, max: usize) -> poem::Result<Response> {
    // Two `Authorization` headers are ambiguous: refuse rather than pick one (fail closed).
    if req.headers().get_all(poem::http::header::AUTHORIZATION).iter().count() > 1 {
        return Ok(ApiError::bad_request("send at most one `Authorization` header").into_response());
    }
    reserved_policy_paths(&mut req);
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.header("content-length").is_none()
        && req.header("transfer-encoding").is_none()
    {
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    let declared = req.header("content-length").and_then(|v| v.parse::<u64>().ok());
    let is_token = req.uri().path().starts_with("/token");
    let refuse = move || -> Response {
        if is_token {
            token::TokenResponse::too_large(max).into_response()
        } else {
            ApiError::payload_too_large(max).into_response()
        }
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(refuse());
    }
    let body = req.take_body();
    match body.into_bytes_limit(max).await {
        Ok(bytes) => {
            req.set_body(bytes);
            ep.call(req).await.map(IntoResponse::into_response)
        }
        Err(poem::error::ReadBodyError::PayloadTooLarge) => Ok(refuse()),
        Err(e) => Ok(ApiError::bad_request(format!("cannot read the request body: {e}")).into_response()),
    }
}

/// The resource a policy decides about (see the policy script reference in README).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `resource.kind`.
    pub kind: &'a str,
    /// `resource.id` (`()` for create and list).
    pub id: Option<&'a str>,
    /// `resource.owner` (`()` when none yet).
    pub owner: Option<&'a str>,
    /// `resource.data`.
    pub data: &'a Value,
    /// `resource.old` (stored data on update).
    pub old: Option<&'a Value>,
    /// Extra `resource` entries (e.g. `changes` for users).
    pub extra: Option<&'a Value>,
}

impl<'a> Target<'a> {
    /// A target without `old` or extra entries.
    pub fn new(kind: &'a str, id: Option<&'a str>, owner: Option<&'a str>, data: &'a Value) -> Self {
        Self {
            kind,
            id,
            owner,
            data,
            old: None,
            extra: None,
        }
    }
}

/// Runs policy `name` from `set` and turns anything but an allow into 403. A missing policy
/// also denies (fail closed); callers that want 404 for unknown kinds check first.
///
/// Every decision is recorded in the decision log, and its id is sent in `X-Decision-Id`.
pub fn authorize(
    set: &PolicySet,
    name: &str,
    claims: &ClaimSet,
    action: impl AsRef<str>,
    target: Target<'_>,
    req: &Request,
) -> Result<(), ApiError> {
    let action = action.as_ref();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let ip = client_ip(req);
    let input = Input {
        claims,
        action,
        resource: ResourceInput {
            kind: target.kind,
            id: target.id,
            owner: target.owner,
            data: target.data,
            old: target.old,
            extra: target.extra,
        },
        request: RequestInput {
            method: req.method().as_str(),
            // As the client sent it (a reserved `/policies/...` path is rewritten for routing).
            path: req.original_uri().path(),
            time: time::OffsetDateTime::now_utc().unix_timestamp(),
            ip: ip.as_deref(),
            headers: &headers,
        },
    };
    let started = Instant::now();
    let decision = set.evaluate(name, &input);
    let elapsed = started.elapsed();
    let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let missing = decision.is_none().then(|| format!("no policy `{name}.rhai` is loaded"));
    let (outcome, reason, error, version) = match &decision {
        Some(d) => (
            d.outcome,
            d.reason.as_deref(),
            d.error.as_deref(),
            Some(d.policy_version.as_str()),
        ),
        None => (Outcome::Error, None, missing.as_deref(), None),
    };
    let decision_id = uuid::Uuid::now_v7().to_string();
    let ctx = req.extensions().get::<Arc<RequestContext>>();
    if let Some(ctx) = ctx {
        ctx.note_decision(&decision_id, outcome == Outcome::Allow);
    }
    let state = req.data::<Arc<AppState>>();
    if let Some(state) = state {
        // A loaded policy's name is a file the operator wrote; a missing one may come from a
        // plugin's caller, so it is not a label of its own (no client-made label values).
        let system = [users::USERS_POLICY, policies::POLICIES_POLICY, keys::KEYS_POLICY];
        let label = if decision.is_some() || system.contains(&name) {
            name
        } else {
            "(missing)"
        };
        state
            .metrics
            .observe_decision(label, outcome, decision.is_some().then_some(elapsed));
    }
    if let Some(log) = state.map(|s| &s.decisions).filter(|l| l.enabled()) {
        let time = now_rfc3339_millis();
        log.record(&crate::decisions::DecisionEvent {
            time: &time,
            decision_id: &decision_id,
            request_id: ctx.map_or("", |c| c.id.as_str()),
            sub: claims.json().get("sub").and_then(Value::as_str),
            policy: name,
            action,
            resource_id: target.id,
            outcome,
            reason,
            error,
            policy_version: version,
            duration_us,
            input: crate::decisions::EventInput {
                claims: claims.encoded(),
                resource: &input.resource,
                request: &input.request,
                with_data: log.with_data(),
            },
        });
    }
    let Some(decision) = &decision else {
        tracing::warn!(target: "gatehouse::policy", policy = name, "denied: no policy file `{name}.rhai`");
        return Err(ApiError::forbidden(format!(
            "denied: no policy `{name}.rhai` is loaded, so nothing is allowed here"
        )));
    };
    match decision.outcome {
        Outcome::Allow => Ok(()),
        Outcome::Deny => {
            tracing::debug!(target: "gatehouse::policy", policy = name, action, reason = ?reason, "denied");
            Err(ApiError::forbidden(match reason {
                Some(reason) => reason.to_owned(),
                None => format!("denied by policy `{name}`"),
            }))
        }
        Outcome::Error => Err(ApiError::forbidden(format!(
            "denied: policy `{name}` failed to decide (the server log says why)"
        ))),
    }
}

/// Now, as RFC 3339 UTC with milliseconds (decision records).
pub fn now_rfc3339_millis() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format).unwrap_or_default()
}

/// Validates a `limit` query parameter.
pub fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and 1000, not {n}"
        ))),
    }
}

/// Now, as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
