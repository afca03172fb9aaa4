//! Refresh tokens (RFC 6749 §6) with rotation and reuse detection (OAuth 2.0 Security BCP,
//! RFC 9700 §4.14), and token revocation (RFC 7009).
//!
//! A refresh token is 32 random bytes, base64url; only its SHA-256 is stored. Each exchange uses
//! the token up and issues a new one in the same *family*. Presenting a used token again means
//! it leaked: the whole family is revoked, so neither the thief nor the victim can go on
//! refreshing. A refresh token also dies when its user is deleted or disabled, or their token
//! version changes (password, roles, revocation).

use sha2::{Digest, Sha256};

use super::{AuthError, TokenService};
use crate::store::{RefreshRecord, Store, UserRecord};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// SHA-256 of a refresh token, hex: the key it is stored under.
pub fn hash_refresh(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

fn invalid(msg: &str) -> AuthError {
    AuthError::InvalidGrant(msg.to_owned())
}

/// Issues a refresh token for `user`, in `family` (a new family when `None`), valid for `ttl`
/// seconds from now.
pub async fn issue_refresh(
    store: &dyn Store,
    user: &UserRecord,
    family: Option<String>,
    ttl: u64,
) -> Result<String, AuthError> {
    let token = crate::app::random_token(32);
    let issued_at = now();
    let rec = RefreshRecord {
        family: family.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        username: user.username.clone(),
        token_version: user.token_version.clone(),
        issued_at,
        expires_at: issued_at.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        used: false,
    };
    store.insert_refresh(&hash_refresh(&token), &rec).await?;
    Ok(token)
}

/// Uses up a refresh token and returns its user and family, or why it cannot be used.
/// A second use of the same token revokes its family.
pub async fn redeem_refresh(store: &dyn Store, token: &str) -> Result<(UserRecord, String), AuthError> {
    if token.is_empty() || token.len() > 512 {
        return Err(invalid("invalid refresh token"));
    }
    let Some(rec) = store.use_refresh(&hash_refresh(token)).await? else {
        return Err(invalid("invalid refresh token"));
    };
    if rec.used {
        store.revoke_family(&rec.family, rec.expires_at).await?;
        tracing::warn!(target: "gatehouse::auth", user = %rec.username, "refresh token reused: its family is revoked");
        return Err(invalid(
            "refresh token already used; every refresh token of this login is now revoked",
        ));
    }
    if store.is_family_revoked(&rec.family).await? {
        return Err(invalid("refresh token revoked"));
    }
    if rec.expires_at < now() {
        return Err(invalid("refresh token expired"));
    }
    match store.get_user(&rec.username).await? {
        Some(user) if !user.disabled && user.token_version == rec.token_version => Ok((user, rec.family)),
        _ => Err(invalid("refresh token no longer valid for this user")),
    }
}

/// What `token_type_hint` said (RFC 7009 §2.1); only a hint, both kinds are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHint {
    /// `access_token`
    Access,
    /// `refresh_token`
    Refresh,
    /// none or unknown
    None,
}

/// Revokes an access token (its `jti` until it expires) or a refresh token (its whole family).
/// Unknown, invalid and expired tokens are not an error (RFC 7009 §2.2).
pub async fn revoke(store: &dyn Store, tokens: &TokenService, token: &str, hint: TokenHint) -> Result<(), AuthError> {
    let try_refresh = || async {
        match store.get_refresh(&hash_refresh(token)).await? {
            Some(rec) => {
                store.revoke_family(&rec.family, rec.expires_at).await?;
                tracing::info!(target: "gatehouse::auth", user = %rec.username, "refresh token family revoked");
                Ok::<bool, AuthError>(true)
            }
            None => Ok(false),
        }
    };
    let try_access = || async {
        match tokens.verify(token) {
            Ok(claims) => {
                store.revoke_jti(&claims.jti, claims.exp).await?;
                tracing::info!(target: "gatehouse::auth", user = %claims.sub, "access token revoked");
                Ok::<bool, AuthError>(true)
            }
            Err(_) => Ok(false),
        }
    };
    if hint == TokenHint::Refresh {
        if !try_refresh().await? {
            try_access().await?;
        }
    } else if !try_access().await? {
        try_refresh().await?;
    }
    Ok(())
}
