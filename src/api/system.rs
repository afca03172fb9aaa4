//! `GET /healthz` (liveness) and `GET /metrics` (Prometheus), no authentication.

use std::sync::Arc;

use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    payload::{Json, PlainText},
    ApiResponse, Object, OpenApi,
};

use super::{problem::Problem, ApiTags, AppState};

/// Health answer.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// The answers of `GET /metrics`.
#[derive(Debug, ApiResponse)]
pub enum MetricsResponse {
    /// Every metric, in the Prometheus text exposition format 0.0.4.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Ok(PlainText<String>),
    /// Metrics are turned off (`metrics = false`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
}

/// Health and metrics endpoints.
pub struct SystemApi;

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Liveness check
    #[oai(path = "/healthz", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }

    /// Metrics for Prometheus
    ///
    /// Requests by route and status, request latency, policy decisions by policy and outcome,
    /// policy evaluation time, policy reloads and reload failures, tokens issued and refused.
    /// No authentication (as with Prometheus exporters): the labels hold routes, policy names
    /// and status codes, never user names, document ids or tokens. Turn it off with
    /// `metrics = false`.
    #[oai(path = "/metrics", method = "get", operation_id = "get_metrics")]
    async fn metrics(&self, state: Data<&Arc<AppState>>) -> MetricsResponse {
        if !state.settings.metrics {
            return MetricsResponse::NotFound(Json(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "metrics are turned off on this server (`metrics = false`)",
            )));
        }
        let status = state.policies.status();
        let loaded = status.iter().filter(|s| s.version.is_some()).count();
        let failing = status.iter().filter(|s| s.error.is_some()).count();
        state.metrics.set_policies(loaded, failing);
        MetricsResponse::Ok(PlainText(state.metrics.render()))
    }
}
