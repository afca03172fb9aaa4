//! Authentication: password hashing ([`password`]), signed access tokens ([`token`]), and the
//! per-request check that turns a bearer token into a [`Caller`] ([`Authenticator`]).
//!
//! Nothing here knows HTTP; the API maps [`AuthError`] to responses.

pub mod keys;
pub mod password;
pub mod refresh;
pub mod throttle;
pub mod token;

use std::sync::Arc;

use crate::{
    model::Username,
    policy::ClaimSet,
    store::{Store, StoreError},
};
pub use password::Hasher;
pub use token::{Claims, TokenService};

/// Who is calling: the verified claims of their access token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The `sub` claim, a user name.
    pub username: Username,
    /// The verified claims, all of them, as policies see them.
    pub claims: Arc<Claims>,
    policy_claims: Arc<ClaimSet>,
}

impl Caller {
    /// A caller with these claims (for tests and tools; the server builds callers from tokens).
    pub fn new(username: Username, claims: Claims) -> Self {
        let policy_claims = Arc::new(ClaimSet::new(claims.to_json()));
        Self {
            username,
            claims: Arc::new(claims),
            policy_claims,
        }
    }

    /// The claims as policies get them (`claims` in scripts).
    pub fn policy_claims(&self) -> &ClaimSet {
        &self.policy_claims
    }
}

/// Why a request could not be authenticated, or a login failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was sent.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed, forged, expired, revoked, or its user is gone or disabled.
    #[error("{0}")]
    InvalidToken(String),
    /// Username or password wrong, user unknown or disabled (one answer for all, on purpose).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A refresh token cannot be used (unknown, used, revoked, expired, user changed).
    #[error("{0}")]
    InvalidGrant(String),
    /// A password does not meet the rules.
    #[error("{0}")]
    WeakPassword(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configured key cannot be used.
    #[error("{0}")]
    Config(String),
    /// Hashing or signing failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Checks bearer tokens on every request: signature and claims, then that the user still
/// exists, is enabled and has not invalidated tokens issued before some time.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the checker over a token service and the user store.
    pub fn new(tokens: Arc<TokenService>, store: Arc<dyn Store>) -> Self {
        Self { tokens, store }
    }

    /// The token service (for issuing).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Verifies `token` and the state of its user.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let verified = self.tokens.verify_cached(token)?;
        let claims = &verified.claims;
        let username =
            Username::parse(&claims.sub).map_err(|_| AuthError::InvalidToken("token subject is not a user".into()))?;
        let user = self
            .store
            .get_user_shared(&username)
            .await?
            .ok_or_else(|| AuthError::InvalidToken("the token's user no longer exists".into()))?;
        if user.disabled {
            return Err(AuthError::InvalidToken("the token's user is disabled".into()));
        }
        if claims.uver != user.token_version {
            return Err(AuthError::InvalidToken(
                "the token was issued before the user's password, roles or status changed, or their tokens were revoked"
                    .into(),
            ));
        }
        if self.store.is_jti_revoked(&claims.jti).await? {
            return Err(AuthError::InvalidToken("the token was revoked".into()));
        }
        Ok(Caller {
            username,
            claims: Arc::clone(&verified.claims),
            policy_claims: Arc::clone(&verified.policy_claims),
        })
    }
}
