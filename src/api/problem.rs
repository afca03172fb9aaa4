//! Errors as RFC 9457 `application/problem+json`, and the one place that decides which status
//! each failure gets.
//!
//! Handlers return [`ApiError`]. Errors raised by poem or poem-openapi themselves (no token,
//! unparsable body, unknown route, wrong method) reach [`catch_all`], which gives them the same
//! shape. Internal details are logged, never sent.

use poem::{http::StatusCode, IntoResponse, Response};
use poem_openapi::{payload::Json, ApiResponse, Object};

use crate::{auth::AuthError, store::StoreError};

/// `WWW-Authenticate` value for a request without a token (RFC 6750 §3).
pub const WWW_AUTH_MISSING: &str = r#"Bearer realm="gatehouse""#;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:gatehouse:problem:forbidden`.
    #[oai(rename = "type")]
    pub type_: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
}

impl Problem {
    /// Builds a problem; `slug` names its type.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("urn:gatehouse:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "denied by policy `notes`: only the owner may change a note",
        )
    }
}

/// Every error answer of the API (except the token endpoint's, which follow RFC 6749 §5.2).
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a body that is not an object, an invalid name or value.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No bearer token, or an invalid, expired or revoked one, or its user is gone or disabled.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The policy denied the request; `detail` carries the policy's reason when it gave one.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such kind (no policy file), document or user.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The record already exists, or changed while this request was being decided; retry.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The body is larger than `max_body_bytes`.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body's content type is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The server failed; the log has the details.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)))
    }

    /// 401 for a missing token.
    pub fn missing_token() -> Self {
        Self::Unauthorized(
            Json(Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing-token",
                "this endpoint needs `Authorization: Bearer <token>`; get a token from POST /token",
            )),
            WWW_AUTH_MISSING.to_owned(),
        )
    }

    /// 401 for an invalid token, with RFC 6750 `error="invalid_token"`.
    pub fn invalid_token(description: &str) -> Self {
        let clean: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        Self::Unauthorized(
            Json(Problem::new(StatusCode::UNAUTHORIZED, "invalid-token", clean.clone())),
            format!(r#"Bearer realm="gatehouse", error="invalid_token", error_description="{clean}""#),
        )
    }

    /// 403 with a message.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden(Json(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)))
    }

    /// 404 with a message.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, "not-found", detail)))
    }

    /// 409 with a message.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(Json(Problem::new(StatusCode::CONFLICT, "conflict", detail)))
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::PayloadTooLarge(Json(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )))
    }

    /// 500; `cause` is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::Internal(Json(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; see its log",
        )))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => {
                Self::conflict("the record already exists or was changed by another request; retry")
            }
            other => Self::internal(&other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Self::missing_token(),
            AuthError::InvalidToken(msg) => Self::invalid_token(&msg),
            AuthError::InvalidCredentials => Self::bad_request(e.to_string()),
            AuthError::InvalidGrant(msg) => Self::bad_request(msg),
            AuthError::WeakPassword(msg) => Self::bad_request(msg),
            AuthError::Store(s) => s.into(),
            AuthError::Internal(msg) | AuthError::Config(msg) => Self::internal(&msg),
        }
    }
}

/// Turns an error raised outside our handlers into problem+json (our own [`ApiError`]s pass
/// through unchanged).
pub async fn catch_all(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    // The operation's id labels the request in the metrics; the new response must keep it.
    let operation = err.data::<poem_openapi::OperationId>().copied();
    let mut resp = problem_for(err);
    if let Some(op) = operation {
        resp.set_data(op);
    }
    resp
}

fn problem_for(err: poem::Error) -> Response {
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return ApiError::missing_token().into_response();
    }
    let status = err.status();
    let mut detail = err.to_string();
    if detail.contains("Expected input type \"map_any\"") {
        detail = if detail.contains("occurred while parsing") {
            // A member of the body (e.g. `claims`, `data`) is not an object; poem-openapi does
            // not name the member, so say what was found.
            format!("a member of the request body must be a JSON object: {detail}")
        } else {
            "the request body must be a JSON object".to_owned()
        };
    }
    let api_error = match status {
        StatusCode::UNAUTHORIZED => ApiError::missing_token(),
        StatusCode::NOT_FOUND => ApiError::not_found("no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => {
            return problem_response(Problem::new(
                status,
                "method-not-allowed",
                "this endpoint does not support that method",
            ));
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(Json(Problem::new(status, "payload-too-large", detail)))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType(Json(Problem::new(status, "unsupported-media-type", detail)))
        }
        s if s.is_server_error() => ApiError::internal(&detail),
        s if s.is_client_error() => {
            return problem_response(Problem::new(s, "bad-request", detail));
        }
        _ => ApiError::internal(&detail),
    };
    api_error.into_response()
}

/// A problem+json response with any status.
pub fn problem_response(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"type": p.type_, "title": p.title, "status": p.status, "detail": p.detail});
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body.to_string())
}
