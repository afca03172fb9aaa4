//! `GET /metrics`: counters and histograms in the Prometheus text format (0.0.4).
//!
//! One [`Metrics`] per server (no global registry, so tests run many servers in one process).
//! Every label value comes from a bounded set: routes are the spec's path templates (never the
//! raw path), methods are the standard ones, policy names are files the operator wrote. No label
//! holds a user name, a document id or anything else a client chooses.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `gatehouse_http_requests_total` | `method`, `route`, `status` | answered requests |
//! | `gatehouse_http_request_duration_seconds` | `method`, `route` | time to the response head |
//! | `gatehouse_http_requests_in_flight` | | requests being handled |
//! | `gatehouse_policy_decisions_total` | `policy`, `outcome` | `allow`, `deny`, `error` |
//! | `gatehouse_policy_evaluation_duration_seconds` | `policy` | one script run |
//! | `gatehouse_policy_reloads_total` | `policy`, `result` | `loaded`, `failed`, `removed` |
//! | `gatehouse_policies` | `state` | policies `loaded` and `failing` now |
//! | `gatehouse_tokens_issued_total` | `grant` | `password`, `refresh_token` |
//! | `gatehouse_token_failures_total` | `grant`, `error` | RFC 6749 error codes |
//! | `gatehouse_build_info` | `version` | always 1 |

use std::{collections::HashMap, time::Duration};

use poem::http::{Method, StatusCode};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::policy::{Outcome, ReloadReport};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Route label of requests that matched no operation (unknown path or method).
pub const UNMATCHED: &str = "unmatched";

/// Buckets of request latency, in seconds: 100 µs to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of one policy evaluation, in seconds: 1 µs to 1 s (the default budget is 250 ms).
const POLICY_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.01, 0.1, 0.25, 1.0,
];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    in_flight: IntGauge,
    decisions: IntCounterVec,
    evaluation: HistogramVec,
    reloads: IntCounterVec,
    policies: IntGaugeVec,
    tokens_issued: IntCounterVec,
    token_failures: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the metrics could not be set up (a programming error: names clash or are invalid).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// The standard methods by name; anything else is `other`, so a client cannot mint label values.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The label of a decision outcome.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::Error => "error",
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("gatehouse".into()), None)?;
        let r = &registry;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "The running gatehouse version (always 1)."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        let in_flight = IntGauge::new("http_requests_in_flight", "Requests being handled now.")?;
        registry.register(Box::new(in_flight.clone()))?;
        let policies = IntGaugeVec::new(
            Opts::new(
                "policies",
                "Policy files by state: `loaded` (a version serves) and `failing` (the newest edit did not load).",
            ),
            &["state"],
        )?;
        registry.register(Box::new(policies.clone()))?;
        Ok(Self {
            http_requests: counter(
                r,
                "http_requests_total",
                "HTTP requests answered, by route (the path template) and status.",
                &["method", "route", "status"],
            )?,
            http_duration: histogram(
                r,
                "http_request_duration_seconds",
                "Time from the request to the response head, by route.",
                &["method", "route"],
                HTTP_BUCKETS,
            )?,
            in_flight,
            decisions: counter(
                r,
                "policy_decisions_total",
                "Policy decisions by policy and outcome (allow, deny, error).",
                &["policy", "outcome"],
            )?,
            evaluation: histogram(
                r,
                "policy_evaluation_duration_seconds",
                "Time of one policy evaluation, by policy.",
                &["policy"],
                POLICY_BUCKETS,
            )?,
            reloads: counter(
                r,
                "policy_reloads_total",
                "Policy and library files (re)loaded, failed to load (the last good version stays) or removed.",
                &["policy", "result"],
            )?,
            policies,
            tokens_issued: counter(
                r,
                "tokens_issued_total",
                "Access tokens issued, by grant type.",
                &["grant"],
            )?,
            token_failures: counter(
                r,
                "token_failures_total",
                "Refused token requests, by grant type and RFC 6749 error code.",
                &["grant", "error"],
            )?,
            registry,
        })
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Requests being handled now.
    pub fn requests_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Records one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: StatusCode, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one policy decision (`duration` is `None` when no policy was loaded).
    pub fn observe_decision(&self, policy: &str, outcome: Outcome, duration: Option<Duration>) {
        self.decisions
            .with_label_values(&[policy, outcome_label(outcome)])
            .inc();
        if let Some(d) = duration {
            self.evaluation.with_label_values(&[policy]).observe(d.as_secs_f64());
        }
    }

    /// Records what a policy reload did.
    pub fn observe_reload(&self, report: &ReloadReport) {
        for name in &report.loaded {
            self.reloads.with_label_values(&[name, "loaded"]).inc();
        }
        for d in &report.failed {
            let file = d.file.to_string_lossy();
            let name = file.strip_suffix(".rhai").unwrap_or(&file);
            self.reloads.with_label_values(&[name, "failed"]).inc();
        }
        for name in &report.removed {
            self.reloads.with_label_values(&[name, "removed"]).inc();
        }
        if report.error.is_some() {
            self.reloads.with_label_values(&["", "failed"]).inc();
        }
    }

    /// Records an issued token (`grant`: `password` or `refresh_token`).
    pub fn token_issued(&self, grant: &str) {
        self.tokens_issued.with_label_values(&[grant]).inc();
    }

    /// Records a refused token request (`error`: the RFC 6749 code answered).
    pub fn token_failed(&self, grant: &str, error: &str) {
        self.token_failures.with_label_values(&[grant, error]).inc();
    }

    /// Sets the policy gauges (call before [`render`](Self::render)).
    pub fn set_policies(&self, loaded: usize, failing: usize) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.policies.with_label_values(&["loaded"]).set(n(loaded));
        self.policies.with_label_values(&["failing"]).set(n(failing));
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Decrements the in-flight gauge when dropped (also when the request future is cancelled).
#[derive(Debug)]
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route labels of a server, read from its OpenAPI document: every operation's method and
/// path template, and the operation ids that name them.
#[derive(Debug, Default)]
pub struct RouteNames {
    routes: Vec<(Method, String)>,
    by_id: HashMap<String, usize>,
}

impl RouteNames {
    /// The operations of `spec` (with or without an operation id).
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let mut out = Self::default();
        for (path, item) in spec.get("paths").and_then(|p| p.as_object()).into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(m) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                    out.by_id.insert(id.to_owned(), out.routes.len());
                }
                out.routes.push((m, path.clone()));
            }
        }
        out
    }

    /// The operations whose path template is the one `path` names, as the router picks it: a
    /// template matches when its segments are the path's, `{param}` standing for any non-empty
    /// segment; of those, the router prefers a literal segment to a parameter, segment by
    /// segment, so only the most literal ones count.
    fn matching(&self, path: &str) -> Vec<&(Method, String)> {
        let segments: Vec<&str> = path.split('/').collect();
        let matches = |template: &str| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty()))
        };
        let literal = |template: &str| -> Vec<bool> { template.split('/').map(|t| !t.starts_with('{')).collect() };
        let candidates: Vec<&(Method, String)> = self.routes.iter().filter(|(_, t)| matches(t)).collect();
        let best = candidates.iter().map(|(_, t)| literal(t)).max();
        candidates
            .into_iter()
            .filter(|(_, t)| Some(literal(t)) == best)
            .collect()
    }

    /// The methods of the operations at `path` (for `Allow` on a 405), in a fixed order; `HEAD`
    /// with `GET`, which poem answers for every `GET` route.
    pub fn allowed(&self, path: &str) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self.matching(path).into_iter().map(|(m, _)| method_label(m)).collect();
        if out.contains(&"GET") {
            out.push("HEAD");
        }
        out.sort_by_key(|m| {
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .iter()
                .position(|x| x == m)
        });
        out.dedup();
        out
    }

    /// The route label of a request that no operation names, from its path alone: the
    /// documents and Swagger UI by name, anything else [`UNMATCHED`].
    pub fn path_route(path: &str) -> &'static str {
        match path {
            "/openapi.json" => "/openapi.json",
            "/openapi.yaml" => "/openapi.yaml",
            p if p == "/docs" || p.starts_with("/docs/") => "/docs",
            _ => UNMATCHED,
        }
    }

    /// The `(method, route)` labels of a request: the operation's path template when poem-openapi
    /// named the operation (`operation`); else the template the path matches (an answer given
    /// before the operation ran: a 413, an unreadable body, a 405); else
    /// [`RouteNames::path_route`].
    pub fn label<'a>(&'a self, operation: Option<&str>, method: &Method, path: &str) -> (&'static str, &'a str) {
        if let Some((m, route)) = operation
            .and_then(|op| self.by_id.get(op))
            .and_then(|&i| self.routes.get(i))
        {
            return (method_label(m), route.as_str());
        }
        let route = match self.matching(path).first() {
            Some((_, template)) => template.as_str(),
            None => Self::path_route(path),
        };
        (method_label(method), route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> RouteNames {
        RouteNames::from_spec(&serde_json::json!({"paths": {
            "/policies/reload": {"post": {"operationId": "reload_policies"}},
            "/policies/{name}": {
                "get": {"operationId": "get_policy_source"},
                "put": {"operationId": "put_policy"},
                "delete": {"operationId": "delete_policy"}
            },
            "/resources/{kind}": {"get": {"operationId": "list_documents"}, "post": {"operationId": "create_document"}},
            "/resources/summary": {"get": {"summary": "a plugin's operation without an id"}}
        }}))
    }

    #[test]
    fn routes_come_from_operation_ids_and_never_from_raw_paths() {
        let r = names();
        assert_eq!(
            r.label(Some("get_policy_source"), &Method::GET, "/policies/notes"),
            ("GET", "/policies/{name}")
        );
        let custom = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(r.label(None, &custom, "/no/such"), ("other", UNMATCHED));
        // Answered before any operation ran (413, 405): the template of the path.
        assert_eq!(
            r.label(None, &Method::POST, "/resources/notes"),
            ("POST", "/resources/{kind}")
        );
        assert_eq!(
            r.label(None, &Method::PATCH, "/policies/reload"),
            ("PATCH", "/policies/reload")
        );
        assert_eq!(r.label(None, &Method::GET, "/docs/"), ("GET", "/docs"));
        // An operation without an id is still a route of its own.
        assert_eq!(
            r.label(None, &Method::GET, "/resources/summary"),
            ("GET", "/resources/summary")
        );
        assert_eq!(r.allowed("/resources/summary"), ["GET", "HEAD"]);
        assert_eq!(RouteNames::path_route("/docs/index.css"), "/docs");
        assert_eq!(RouteNames::path_route("/openapi.yaml"), "/openapi.yaml");
        assert_eq!(RouteNames::path_route("/users/ann"), UNMATCHED);
    }

    #[test]
    fn allowed_methods_follow_the_router() {
        let r = names();
        assert_eq!(r.allowed("/policies/reload"), ["POST"]);
        assert_eq!(r.allowed("/policies/notes"), ["GET", "HEAD", "PUT", "DELETE"]);
        assert_eq!(r.allowed("/resources/notes"), ["GET", "HEAD", "POST"]);
        assert!(r.allowed("/nothing/here").is_empty());
        assert!(r.allowed("/policies/").is_empty());
    }

    #[test]
    fn metrics_render_in_the_text_format() {
        let m = Metrics::new().unwrap();
        m.observe_request("GET", "/x", StatusCode::OK, Duration::from_millis(3));
        m.observe_decision("notes", Outcome::Deny, Some(Duration::from_micros(4)));
        m.observe_decision("_users", Outcome::Error, None);
        m.token_failed("password", "invalid_grant");
        let text = m.render();
        assert!(
            text.contains("gatehouse_http_requests_total{method=\"GET\",route=\"/x\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_policy_decisions_total{outcome=\"deny\",policy=\"notes\"} 1"));
        assert!(text.contains("gatehouse_policy_evaluation_duration_seconds_count{policy=\"notes\"} 1"));
        assert!(!text.contains("policy_evaluation_duration_seconds_count{policy=\"_users\"}"));
        assert!(text.contains("gatehouse_token_failures_total{error=\"invalid_grant\",grant=\"password\"} 1"));
        let _guard = m.in_flight();
        assert_eq!(m.requests_in_flight(), 1);
        drop(_guard);
        assert_eq!(m.requests_in_flight(), 0);
    }
}
