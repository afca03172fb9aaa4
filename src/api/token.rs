//! `POST /token`: the OAuth2 password grant (RFC 6749 §4.3), in the shape Swagger UI sends it.
//!
//! Errors here follow RFC 6749 §5.2 (`{"error", "error_description"}`), not problem+json, and
//! every answer carries `Cache-Control: no-store`. A wrong password, an unknown user and a
//! disabled user get the same answer after the same hashing work.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

use super::{ApiTags, AppState};
use crate::{config::Secret, model::Username};

/// Form fields of a token request. Swagger UI also sends `scope`, `client_id` and
/// `client_secret` (possibly empty); they are accepted and ignored.
#[derive(Debug, Object, serde::Deserialize)]
pub struct TokenRequest {
    /// Must be `password`.
    pub grant_type: Option<String>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// Requested scopes (ignored: access is decided by policies).
    pub scope: Option<String>,
    /// Client id (ignored: gatehouse has no client registry).
    pub client_id: Option<String>,
    /// Client secret (ignored).
    pub client_secret: Option<String>,
}

/// A successful token response.
#[derive(Debug, Object)]
#[oai(example)]
pub struct TokenBody {
    /// The signed JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl poem_openapi::types::Example for TokenBody {
    fn example() -> Self {
        Self {
            access_token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
        }
    }
}

/// An RFC 6749 §5.2 error.
#[derive(Debug, Object)]
#[oai(example)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_grant` or `unsupported_grant_type`.
    pub error: String,
    /// Human-readable explanation.
    pub error_description: String,
}

impl poem_openapi::types::Example for OAuthError {
    fn example() -> Self {
        Self {
            error: "invalid_grant".into(),
            error_description: "invalid username or password".into(),
        }
    }
}

/// Answers of `POST /token`.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "token_bad_request")]
pub enum TokenResponse {
    /// A new access token.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// The request is malformed (`invalid_request`), the credentials are wrong (`invalid_grant`)
    /// or the grant type is not `password` (`unsupported_grant_type`).
    #[oai(status = 400)]
    BadRequest(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
    /// The request body is larger than `max_body_bytes` (`invalid_request`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
    /// The server failed; the log has the details.
    #[oai(status = 500)]
    Internal(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
}

const NO_STORE: &str = "no-store";

impl TokenResponse {
    /// A 400 with an RFC 6749 error code.
    pub fn error(code: &str, description: impl Into<String>) -> Self {
        Self::BadRequest(
            Json(OAuthError {
                error: code.into(),
                error_description: description.into(),
            }),
            NO_STORE.into(),
        )
    }

    /// A 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::PayloadTooLarge(
            Json(OAuthError {
                error: "invalid_request".into(),
                error_description: format!("the request body is larger than the limit of {limit} bytes"),
            }),
            NO_STORE.into(),
        )
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "token endpoint failed");
        Self::Internal(
            Json(OAuthError {
                error: "server_error".into(),
                error_description: "the server failed to issue a token; see its log".into(),
            }),
            NO_STORE.into(),
        )
    }
}

fn token_bad_request(err: poem::Error) -> TokenResponse {
    TokenResponse::error(
        "invalid_request",
        format!("the token request must be an application/x-www-form-urlencoded form: {err}"),
    )
}

/// The token endpoint.
pub struct TokenApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl TokenApi {
    /// Log in: exchange a username and password for an access token
    ///
    /// OAuth2 password grant (RFC 6749 §4.3): send the form
    /// `grant_type=password&username=...&password=...`. Swagger UI's Authorize dialog does this
    /// for you. Wrong credentials, unknown and disabled users all get `invalid_grant`.
    #[oai(path = "/token", method = "post", operation_id = "issue_token")]
    async fn token(
        &self,
        state: Data<&Arc<AppState>>,
        form: poem_openapi::payload::Form<TokenRequest>,
    ) -> TokenResponse {
        let form = form.0;
        match form.grant_type.as_deref() {
            Some("password") => {}
            None | Some("") => {
                return TokenResponse::error("invalid_request", "`grant_type` is required; use `password`")
            }
            Some(other) => {
                let shown: String = other.chars().take(40).collect();
                return TokenResponse::error(
                    "unsupported_grant_type",
                    format!("grant type `{shown}` is not supported; use `password`"),
                );
            }
        }
        let (Some(username), Some(password)) = (form.username, form.password) else {
            return TokenResponse::error("invalid_request", "`username` and `password` are required");
        };
        let password = Secret::new(password);
        let user = match Username::parse(&username) {
            Ok(name) => match state.store.get_user(&name).await {
                Ok(user) => user,
                Err(e) => return TokenResponse::internal(&e),
            },
            Err(_) => None,
        };
        let verified = match state
            .hasher
            .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
        {
            Ok(ok) => ok,
            Err(e) => return TokenResponse::internal(&e),
        };
        let user = match user {
            Some(user) if verified && !user.disabled => user,
            _ => {
                tracing::info!(target: "gatehouse::auth", "login failed");
                return TokenResponse::error("invalid_grant", "invalid username or password");
            }
        };
        match state.auth.tokens().issue(&user) {
            Ok((access_token, expires_in)) => {
                tracing::info!(target: "gatehouse::auth", user = %user.username, "token issued");
                TokenResponse::Ok(
                    Json(TokenBody {
                        access_token,
                        token_type: "Bearer".into(),
                        expires_in,
                    }),
                    NO_STORE.into(),
                    "no-cache".into(),
                )
            }
            Err(e) => TokenResponse::internal(&e),
        }
    }
}
