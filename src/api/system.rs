//! `GET /healthz`: liveness, no authentication.

use poem_openapi::{payload::Json, Object, OpenApi};

use super::ApiTags;

/// Health answer.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// Health endpoint.
pub struct SystemApi;

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Liveness check
    #[oai(path = "/healthz", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }
}
