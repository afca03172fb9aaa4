//! `POST /token`: the OAuth2 password grant (RFC 6749 §4.3), in the shape Swagger UI sends it.
//!
//! Errors here follow RFC 6749 §5.2 (`{"error", "error_description"}`), not problem+json, and
//! every answer carries `Cache-Control: no-store`. A wrong password, an unknown user and a
//! disabled user get the same answer after the same hashing work.

use std::{net::IpAddr, sync::Arc};

use poem::{web::Data, Request};
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

use super::{ApiTags, AppState};
use crate::{
    auth::{refresh, throttle::LoginKeys, AuthError},
    config::Secret,
    model::Username,
    store::UserRecord,
};

/// Form fields of a token request. Swagger UI also sends `scope`, `client_id` and
/// `client_secret` (possibly empty); they are accepted and ignored.
#[derive(Debug, Object, serde::Deserialize)]
pub struct TokenRequest {
    /// `password` or `refresh_token`.
    pub grant_type: Option<String>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// The refresh token (refresh grant).
    pub refresh_token: Option<String>,
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
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque token for `grant_type=refresh_token`; single use, valid for `refresh_token_ttl`
    /// seconds (default 14 days).
    pub refresh_token: String,
}

impl poem_openapi::types::Example for TokenBody {
    fn example() -> Self {
        Self {
            access_token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: "kV3m0zGq1y8cTq0bJx2u3w5PzM1mYk7fQe9sXo0aR4c".into(),
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
    /// Too many failed logins for this user name or from this address
    /// (`temporarily_unavailable`); retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<OAuthError>,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
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

/// Form fields of a revocation request (RFC 7009 §2.1).
#[derive(Debug, Object, serde::Deserialize)]
pub struct RevokeRequest {
    /// The access or refresh token to revoke.
    pub token: Option<String>,
    /// `access_token` or `refresh_token` (a hint; both kinds are tried).
    pub token_type_hint: Option<String>,
    /// Client id (ignored).
    pub client_id: Option<String>,
    /// Client secret (ignored).
    pub client_secret: Option<String>,
}

/// Answers of `POST /token/revoke`.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "revoke_bad_request")]
pub enum RevokeResponse {
    /// Revoked, or the token was unknown, invalid or expired already (RFC 7009 §2.2).
    #[oai(status = 200)]
    Ok(#[oai(header = "Cache-Control")] String),
    /// No `token` in the form (`invalid_request`).
    #[oai(status = 400)]
    BadRequest(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
    /// The request body is larger than `max_body_bytes` (`invalid_request`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
    /// The server failed; the log has the details.
    #[oai(status = 500)]
    Internal(Json<OAuthError>, #[oai(header = "Cache-Control")] String),
}

fn oauth_error(code: &str, description: impl Into<String>) -> Json<OAuthError> {
    Json(OAuthError {
        error: code.into(),
        error_description: description.into(),
    })
}

fn revoke_bad_request(err: poem::Error) -> RevokeResponse {
    RevokeResponse::BadRequest(
        oauth_error(
            "invalid_request",
            format!("the revocation request must be an application/x-www-form-urlencoded form: {err}"),
        ),
        NO_STORE.into(),
    )
}

/// The token endpoints.
pub struct TokenApi;

/// Checks a password grant; the same answer for every kind of failure.
async fn password_grant(state: &AppState, form: TokenRequest, ip: Option<IpAddr>) -> Result<UserRecord, TokenResponse> {
    let (Some(username), Some(password)) = (form.username, form.password) else {
        return Err(TokenResponse::error(
            "invalid_request",
            "`username` and `password` are required",
        ));
    };
    let keys = LoginKeys::new(&username, ip);
    if let Some(secs) = state.throttle.retry_after(&keys) {
        tracing::warn!(target: "gatehouse::auth", ip = ?ip, "login throttled after repeated failures");
        return Err(TokenResponse::TooManyRequests(
            oauth_error(
                "temporarily_unavailable",
                format!("too many failed logins; retry in {secs} seconds"),
            ),
            secs.to_string(),
            NO_STORE.into(),
        ));
    }
    let password = Secret::new(password);
    let user = match Username::parse(&username) {
        Ok(name) => state
            .store
            .get_user(&name)
            .await
            .map_err(|e| TokenResponse::internal(&e))?,
        Err(_) => None,
    };
    let verified = state
        .hasher
        .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(|e| TokenResponse::internal(&e))?;
    match user {
        Some(user) if verified && !user.disabled => {
            state.throttle.succeeded(&keys);
            Ok(user)
        }
        _ => {
            state.throttle.failed(&keys);
            tracing::info!(target: "gatehouse::auth", "login failed");
            Err(TokenResponse::error("invalid_grant", "invalid username or password"))
        }
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl TokenApi {
    /// Log in, or refresh: get an access token and a refresh token
    ///
    /// Password grant (RFC 6749 §4.3): `grant_type=password&username=...&password=...`.
    /// Swagger UI's Authorize dialog does this for you. Wrong credentials, unknown and disabled
    /// users all get `invalid_grant`.
    ///
    /// Refresh grant (RFC 6749 §6): `grant_type=refresh_token&refresh_token=...` returns a new
    /// access token and a new refresh token; the old refresh token is used up. Presenting a used
    /// refresh token again revokes every token of that login (`invalid_grant`).
    #[oai(path = "/token", method = "post", operation_id = "issue_token")]
    async fn token(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        form: poem_openapi::payload::Form<TokenRequest>,
    ) -> TokenResponse {
        let grant = match form.0.grant_type.as_deref() {
            Some("password") => "password",
            Some("refresh_token") => "refresh_token",
            None | Some("") => "none",
            Some(_) => "other",
        };
        let answer = grant_token(&state, req, form.0).await;
        let metrics = &state.metrics;
        match &answer {
            TokenResponse::Ok(..) => metrics.token_issued(grant),
            TokenResponse::BadRequest(Json(e), _) => metrics.token_failed(grant, &e.error),
            TokenResponse::PayloadTooLarge(..) => metrics.token_failed(grant, "invalid_request"),
            TokenResponse::TooManyRequests(..) => metrics.token_failed(grant, "temporarily_unavailable"),
            TokenResponse::Internal(..) => metrics.token_failed(grant, "server_error"),
        }
        answer
    }

    /// Revoke an access or refresh token (log out)
    ///
    /// RFC 7009. Form: `token=...` and optionally `token_type_hint=access_token|refresh_token`.
    /// A revoked access token is refused on every endpoint from now until it would have expired;
    /// revoking a refresh token ends every token descending from the same login. Answers 200 for
    /// unknown, invalid and expired tokens too, so the answer tells nothing about the token.
    #[oai(path = "/token/revoke", method = "post", operation_id = "revoke_token")]
    async fn revoke(
        &self,
        state: Data<&Arc<AppState>>,
        form: poem_openapi::payload::Form<RevokeRequest>,
    ) -> RevokeResponse {
        let Some(token) = form.0.token.filter(|t| !t.is_empty()) else {
            return RevokeResponse::BadRequest(oauth_error("invalid_request", "`token` is required"), NO_STORE.into());
        };
        let hint = match form.0.token_type_hint.as_deref() {
            Some("access_token") => refresh::TokenHint::Access,
            Some("refresh_token") => refresh::TokenHint::Refresh,
            _ => refresh::TokenHint::None,
        };
        match refresh::revoke(state.store.as_ref(), state.auth.tokens(), &token, hint).await {
            Ok(()) => RevokeResponse::Ok(NO_STORE.into()),
            Err(e) => {
                tracing::error!(error = %e, "token revocation failed");
                RevokeResponse::Internal(
                    oauth_error("server_error", "the server failed to revoke the token; see its log"),
                    NO_STORE.into(),
                )
            }
        }
    }
}

/// The grants of `POST /token`: password and refresh.
async fn grant_token(state: &AppState, req: &Request, form: TokenRequest) -> TokenResponse {
    let ip = req.remote_addr().as_socket_addr().map(|a| a.ip());
    let granted = match form.grant_type.as_deref() {
        Some("password") => password_grant(state, form, ip).await.map(|user| (user, None)),
        Some("refresh_token") => match form.refresh_token.as_deref() {
            None | Some("") => Err(TokenResponse::error("invalid_request", "`refresh_token` is required")),
            Some(token) => match refresh::redeem_refresh(state.store.as_ref(), token).await {
                Ok((user, family)) => Ok((user, Some(family))),
                Err(AuthError::InvalidGrant(msg)) => Err(TokenResponse::error("invalid_grant", msg)),
                Err(e) => Err(TokenResponse::internal(&e)),
            },
        },
        None | Some("") => Err(TokenResponse::error(
            "invalid_request",
            "`grant_type` is required; use `password` or `refresh_token`",
        )),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            Err(TokenResponse::error(
                "unsupported_grant_type",
                format!("grant type `{shown}` is not supported; use `password` or `refresh_token`"),
            ))
        }
    };
    let (user, family) = match granted {
        Ok(g) => g,
        Err(answer) => return answer,
    };
    let issued = async {
        // Plugin claims come from the user record as it is now (also on refresh).
        let extra = state.plugins.extra_claims(&user);
        let (access_token, expires_in) = state.auth.tokens().issue_with(&user, extra)?;
        let ttl = state.settings.refresh_token_ttl;
        let refresh_token = refresh::issue_refresh(state.store.as_ref(), &user, family, ttl).await?;
        Ok::<_, AuthError>((access_token, expires_in, refresh_token))
    };
    match issued.await {
        Ok((access_token, expires_in, refresh_token)) => {
            tracing::info!(target: "gatehouse::auth", user = %user.username, "token issued");
            TokenResponse::Ok(
                Json(TokenBody {
                    access_token,
                    token_type: "Bearer".into(),
                    expires_in,
                    refresh_token,
                }),
                NO_STORE.into(),
                "no-cache".into(),
            )
        }
        Err(e) => TokenResponse::internal(&e),
    }
}
