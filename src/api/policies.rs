//! `GET /policies`: what the server has loaded from the policy directory, decided by
//! `policies/_policies.rhai` (fail closed without it).

use std::sync::Arc;

use poem::{web::Data, Request};
use poem_openapi::{payload::Json, Object, OpenApi};
use serde_json::Value;

use super::{authorize, problem::ApiError, security::BearerAuth, ApiTags, AppState, Target};
use crate::model::Action;

/// The policy that governs `/policies`.
pub const POLICIES_POLICY: &str = "_policies";

/// The state of one policy file.
#[derive(Debug, Object)]
#[oai(example)]
pub struct PolicyView {
    /// File stem: a resource kind (`notes`) or a system policy (`_users`, `_policies`).
    pub name: String,
    /// Whether this file defines a resource kind (names without a leading `_`).
    pub is_kind: bool,
    /// The file's path.
    pub file: String,
    /// Content hash of the version in force, or `null` if no version ever compiled.
    pub version: Option<String>,
    /// RFC 3339 time the version in force was loaded.
    pub loaded_at: Option<String>,
    /// The last compile error as `file:line:col: message`, when the file on disk does not
    /// compile (the previous good version, if any, stays in force).
    pub error: Option<String>,
}

impl poem_openapi::types::Example for PolicyView {
    fn example() -> Self {
        Self {
            name: "notes".into(),
            is_kind: true,
            file: "policies/notes.rhai".into(),
            version: Some("3f2a9c0d1b7e4a55".into()),
            loaded_at: Some("2026-12-03T17:00:00Z".into()),
            error: None,
        }
    }
}

/// All policy files.
#[derive(Debug, Object)]
pub struct PolicyList {
    /// One entry per `.rhai` file, sorted by name.
    pub items: Vec<PolicyView>,
}

/// The policy status endpoint.
pub struct PolicyApi;

#[OpenApi(tag = "ApiTags::Policies")]
impl PolicyApi {
    /// List policy files and their state
    ///
    /// Shows each file's loaded version, when it was loaded, and its last compile error.
    /// Decided by `_policies.rhai` with `action == "list"`.
    #[oai(path = "/policies", method = "get", operation_id = "list_policies")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<PolicyList>, ApiError> {
        let set = state.policies.snapshot();
        let claims = auth.0.claims.to_json();
        let empty = Value::Object(Default::default());
        authorize(
            &set,
            POLICIES_POLICY,
            &claims,
            Action::List,
            Target::new(POLICIES_POLICY, None, None, &empty),
            req,
        )?;
        let items = state
            .policies
            .status()
            .into_iter()
            .map(|s| PolicyView {
                is_kind: !s.name.starts_with('_'),
                name: s.name,
                file: s.file.display().to_string(),
                version: s.version,
                loaded_at: s.loaded_at,
                error: s.error,
            })
            .collect();
        Ok(Json(PolicyList { items }))
    }
}
