//! Access tokens: issue and verify HS256 JWTs.
//!
//! Verification pins the algorithm (the header's `alg` is never trusted), requires `exp`,
//! `iat`, `iss` and `sub`, checks `nbf` when present, checks `iss` (and `aud` when configured)
//! and allows `leeway` seconds of clock skew. Each token carries a `kid` derived from the key,
//! so a token signed by another key is refused before its signature is even checked.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use arc_swap::ArcSwap;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    keys::{hmac_key, KeyRing},
    AuthError,
};
use crate::{policy::ClaimSet, store::UserRecord};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Claim names that only gatehouse sets. Extra claims (from plugins) with these names are
/// dropped, so they can never override who the token is for, its roles, lifetime, issuer,
/// audience, id or token version.
pub const RESERVED_CLAIMS: [&str; 10] = ["sub", "roles", "iat", "exp", "nbf", "iss", "aud", "jti", "uver", "typ"];

/// Whether `name` is one of [`RESERVED_CLAIMS`].
pub fn is_reserved_claim(name: &str) -> bool {
    RESERVED_CLAIMS.contains(&name)
}

/// The claims of a gatehouse access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    /// The user's roles at issue time.
    pub roles: Vec<String>,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Unique token id (the key of the revocation deny-list).
    pub jti: String,
    /// The user's token version at issue ([`UserRecord::token_version`]); a token whose
    /// version is no longer the user's is refused.
    #[serde(default)]
    pub uver: String,
    /// Any other claims (e.g. `aud`, `nbf`), passed to policies as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// The claims as one JSON object, as policies see them.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Signs access tokens with the active key of a [`KeyRing`] and verifies them with the key
/// their `kid` names (the ring can be swapped at runtime, for rotation).
pub struct TokenService {
    ring: ArcSwap<KeyRing>,
    cache: RwLock<VerifiedCache>,
    validations: Vec<(Algorithm, Validation)>,
    issuer: String,
    audience: Option<String>,
    ttl: u64,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("kids", &self.ring.load().kids())
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Options for [`TokenService::new`].
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// `iss` to issue and require.
    pub issuer: String,
    /// `aud` to issue and require, when set.
    pub audience: Option<String>,
    /// Access-token lifetime in seconds.
    pub ttl: u64,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A token that passed [`TokenService::verify`]: its claims, and the claims as policies see
/// them (converted once per token, not per request).
#[derive(Debug)]
pub struct Verified {
    /// The verified claims.
    pub claims: Arc<Claims>,
    /// The same claims for policy scripts.
    pub policy_claims: Arc<ClaimSet>,
}

/// Most verified tokens remembered. Only tokens that verified get in, so filling it takes
/// valid logins; when full, expired entries go, and if that is not enough, all of them.
const MAX_CACHED_TOKENS: usize = 4096;

#[derive(Default)]
struct VerifiedCache {
    tokens: HashMap<Box<str>, Arc<Verified>>,
    /// Bumped by every key-ring change: a verification that started before it is not kept.
    generation: u64,
}

impl VerifiedCache {
    fn get(&self, token: &str) -> Option<Arc<Verified>> {
        self.tokens.get(token).cloned()
    }

    fn insert(&mut self, token: &str, verified: Arc<Verified>, generation: u64, expired_before: i64) {
        if generation != self.generation {
            return;
        }
        if self.tokens.len() >= MAX_CACHED_TOKENS {
            self.tokens.retain(|_, v| v.claims.exp >= expired_before);
            if self.tokens.len() >= MAX_CACHED_TOKENS {
                self.tokens.clear();
            }
        }
        self.tokens.insert(token.into(), verified);
    }

    fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.tokens.clear();
    }
}

impl TokenService {
    /// An HS256 service over `secret` (at least 32 bytes).
    pub fn new(secret: &[u8], opts: TokenOptions) -> Result<Self, AuthError> {
        Self::with_ring(KeyRing::new(vec![hmac_key(secret)?])?, opts)
    }

    /// A service over a key ring. Does a sign-and-verify round trip, so a broken crypto backend
    /// fails here, at startup, and not on the first request.
    pub fn with_ring(ring: KeyRing, opts: TokenOptions) -> Result<Self, AuthError> {
        let validations = [Algorithm::HS256, Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256]
            .into_iter()
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.leeway = opts.leeway;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_issuer(&[&opts.issuer]);
                let mut required = vec!["exp", "iss", "sub"];
                match &opts.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        required.push("aud");
                    }
                    None => v.validate_aud = false,
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
        let service = Self {
            ring: ArcSwap::from_pointee(ring),
            cache: RwLock::new(VerifiedCache::default()),
            validations,
            issuer: opts.issuer,
            audience: opts.audience,
            ttl: opts.ttl,
        };
        service.self_test()?;
        Ok(service)
    }

    fn self_test(&self) -> Result<(), AuthError> {
        let probe = UserRecord::new(
            crate::model::Username::parse("selftest").map_err(|e| AuthError::Internal(e.to_string()))?,
            String::new(),
            vec![],
            String::new(),
        );
        let (token, _) = self.issue(&probe)?;
        self.verify(&token)?;
        Ok(())
    }

    /// Replaces the key ring (after a rotation); tokens of keys still in the new ring keep working.
    pub fn set_ring(&self, ring: KeyRing) -> Result<(), AuthError> {
        let old = self.ring.swap(std::sync::Arc::new(ring));
        // Tokens verified with the old ring must be checked again (their key may be gone).
        self.cache.write().unwrap_or_else(PoisonError::into_inner).invalidate();
        if let Err(e) = self.self_test() {
            self.ring.store(old);
            // Nothing verified with the refused ring may stay.
            self.cache.write().unwrap_or_else(PoisonError::into_inner).invalidate();
            return Err(e);
        }
        Ok(())
    }

    /// The key ring in force.
    pub fn ring(&self) -> std::sync::Arc<KeyRing> {
        self.ring.load_full()
    }

    /// The key id of the signing key.
    pub fn kid(&self) -> String {
        self.ring.load().active().kid.clone()
    }

    /// Access-token lifetime in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// Issues an access token for `user`; returns the token and its lifetime in seconds.
    pub fn issue(&self, user: &UserRecord) -> Result<(String, u64), AuthError> {
        self.issue_with(user, serde_json::Map::new())
    }

    /// As [`TokenService::issue`], with extra claims (e.g. from plugins). Extra claims named in
    /// [`RESERVED_CLAIMS`] are dropped (callers warn about them first). A token that would be
    /// larger than [`MAX_TOKEN_BYTES`], and so refused on every request, is an error.
    pub fn issue_with(
        &self,
        user: &UserRecord,
        extra_claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(String, u64), AuthError> {
        let iat = now();
        let mut extra: serde_json::Map<String, serde_json::Value> = extra_claims
            .into_iter()
            .filter(|(name, _)| !is_reserved_claim(name))
            .collect();
        if let Some(aud) = &self.audience {
            extra.insert("aud".into(), aud.clone().into());
        }
        let claims = Claims {
            sub: user.username.to_string(),
            roles: user.roles.iter().map(|r| r.to_string()).collect(),
            iat,
            exp: iat.saturating_add(i64::try_from(self.ttl).unwrap_or(i64::MAX)),
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            uver: user.token_version.clone(),
            extra,
        };
        let ring = self.ring.load();
        let key = ring.active();
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        let token = encode(&header, &claims, key.encoding())
            .map_err(|e| AuthError::Internal(format!("signing failed: {e}")))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Internal(format!(
                "the access token would be {} bytes, over the limit of {MAX_TOKEN_BYTES}: extra claims are too large",
                token.len()
            )));
        }
        Ok((token, self.ttl))
    }

    /// [`verify`](Self::verify), remembering each token that passed, so that the next request
    /// with the same token only checks that it has not expired since. Any key-ring change forgets
    /// them all. Does not look at the user (revocation and user state are checked per request by
    /// [`Authenticator`](super::Authenticator)).
    pub fn verify_cached(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            // Refused unread, as `verify` does, and without hashing it for the cache.
            return Err(AuthError::InvalidToken("token is too large".into()));
        }
        let now = now();
        let leeway = self.leeway();
        let hit = {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            cache.get(token)
        };
        match hit {
            // As jsonwebtoken decides: expired when `exp < now - leeway`. `nbf` and `iat` were
            // in the past (within the leeway) when it was verified, and stay so.
            Some(v) if v.claims.exp >= now.saturating_sub(leeway) => return Ok(v),
            Some(_) | None => {}
        }
        let generation = self.cache.read().unwrap_or_else(PoisonError::into_inner).generation;
        let claims = self.verify(token)?;
        let verified = Arc::new(Verified {
            policy_claims: Arc::new(ClaimSet::new(claims.to_json())),
            claims: Arc::new(claims),
        });
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.insert(token, Arc::clone(&verified), generation, now.saturating_sub(leeway));
        Ok(verified)
    }

    fn leeway(&self) -> i64 {
        let leeway = self.validations.first().map_or(0, |(_, v)| v.leeway);
        i64::try_from(leeway).unwrap_or(i64::MAX)
    }

    /// Verifies a token's form, key, signature and claims. Does not look at the user.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let invalid = |msg: &str| AuthError::InvalidToken(msg.to_owned());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token is too large"));
        }
        let header = decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
            return Err(invalid("token header names a key source; not accepted"));
        }
        let ring = self.ring.load();
        // `kid` is only ever a lookup key. A token without one is checked against the signing key.
        let key = match header.kid.as_deref() {
            Some(kid) => ring
                .find(kid)
                .ok_or_else(|| invalid("token signed by an unknown key"))?,
            None => ring.active(),
        };
        // The key's algorithm decides; the header must agree, never choose.
        if header.alg != key.alg {
            return Err(invalid("token algorithm not accepted"));
        }
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == key.alg)
            .map(|(_, v)| v)
            .ok_or_else(|| invalid("token algorithm not accepted"))?;
        match decode::<Claims>(token, &key.decoding, validation) {
            Ok(data) => {
                // A token "issued" in the future was not issued by us (or our clock is off).
                let skew = i64::try_from(validation.leeway).unwrap_or(i64::MAX);
                if data.claims.iat > now().saturating_add(skew) {
                    return Err(invalid("token issued in the future"));
                }
                Ok(data.claims)
            }
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => invalid("token expired"),
                ErrorKind::ImmatureSignature => invalid("token not yet valid"),
                ErrorKind::InvalidSignature => invalid("invalid token signature"),
                ErrorKind::InvalidIssuer => invalid("token issuer not accepted"),
                ErrorKind::InvalidAudience => invalid("token audience not accepted"),
                ErrorKind::InvalidAlgorithm => invalid("token algorithm not accepted"),
                ErrorKind::MissingRequiredClaim(c) => AuthError::InvalidToken(format!("token lacks the `{c}` claim")),
                _ => invalid("malformed token"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::model::{Role, Username};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn service(leeway: u64) -> TokenService {
        TokenService::new(
            SECRET,
            TokenOptions {
                issuer: "gatehouse".into(),
                audience: None,
                ttl: 900,
                leeway,
            },
        )
        .unwrap()
    }

    fn user() -> UserRecord {
        UserRecord::new(
            Username::parse("ann").unwrap(),
            String::new(),
            vec![Role::parse("user").unwrap()],
            String::new(),
        )
    }

    fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
        let sig = jsonwebtoken::crypto::sign(signing.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signing}.{sig}")
    }

    #[test]
    fn round_trip_has_the_contract_claims() {
        let s = service(30);
        let (t, ttl) = s.issue(&user()).unwrap();
        assert_eq!(ttl, 900);
        let c = s.verify(&t).unwrap();
        assert_eq!(c.sub, "ann");
        assert_eq!(c.roles, ["user"]);
        assert_eq!(c.iss, "gatehouse");
        assert_eq!(c.exp - c.iat, 900);
        assert!(!c.jti.is_empty());
    }

    #[test]
    fn extra_claims_never_override_reserved_ones() {
        let s = service(30);
        let mut extra = serde_json::Map::new();
        for name in RESERVED_CLAIMS {
            extra.insert(name.into(), "evil".into());
        }
        extra.insert("department".into(), "finance".into());
        let (t, _) = s.issue_with(&user(), extra).unwrap();
        let c = s.verify(&t).unwrap();
        assert_eq!(c.sub, "ann");
        assert_eq!(c.roles, ["user"]);
        assert_eq!(c.iss, "gatehouse");
        assert_ne!(c.jti, "evil");
        assert_eq!(c.extra.get("department"), Some(&serde_json::Value::from("finance")));
        for name in ["nbf", "aud", "typ"] {
            assert!(!c.extra.contains_key(name), "{name}");
        }
    }

    #[test]
    fn oversized_extra_claims_fail_at_issue() {
        let s = service(30);
        let mut extra = serde_json::Map::new();
        extra.insert("blob".into(), "x".repeat(MAX_TOKEN_BYTES).into());
        assert!(s
            .issue_with(&user(), extra)
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn not_yet_valid_is_refused() {
        // jsonwebtoken does not check `nbf` by default; we turn it on.
        let s = service(0);
        let now = now();
        let t = forge(
            serde_json::json!({"alg":"HS256","typ":"JWT"}),
            serde_json::json!({"sub":"ann","roles":[],"iat":now,"exp":now+600,"nbf":now+300,"iss":"gatehouse","jti":"x"}),
            SECRET,
        );
        let err = s.verify(&t).unwrap_err().to_string();
        assert!(err.contains("not yet valid"), "{err}");
    }

    #[test]
    fn issued_in_the_future_is_refused() {
        let s = service(30);
        let now = now();
        let t = forge(
            serde_json::json!({"alg":"HS256","typ":"JWT"}),
            serde_json::json!({"sub":"ann","roles":[],"iat":now+3600,"exp":now+7200,"iss":"gatehouse","jti":"x"}),
            SECRET,
        );
        assert!(s.verify(&t).unwrap_err().to_string().contains("future"));
    }

    #[test]
    fn expired_beyond_leeway_is_refused() {
        let s = service(30);
        let now = now();
        let claims =
            |exp: i64| serde_json::json!({"sub":"ann","roles":[],"iat":now-1000,"exp":exp,"iss":"gatehouse","jti":"x"});
        let hdr = serde_json::json!({"alg":"HS256","typ":"JWT"});
        assert!(s.verify(&forge(hdr.clone(), claims(now - 10), SECRET)).is_ok());
        assert!(s
            .verify(&forge(hdr, claims(now - 100), SECRET))
            .unwrap_err()
            .to_string()
            .contains("expired"));
    }

    #[test]
    fn forgeries_are_refused() {
        let s = service(30);
        let now = now();
        let claims =
            serde_json::json!({"sub":"ann","roles":["admin"],"iat":now,"exp":now+600,"iss":"gatehouse","jti":"x"});
        let hdr = serde_json::json!({"alg":"HS256","typ":"JWT"});
        // wrong key
        assert!(s
            .verify(&forge(hdr.clone(), claims.clone(), b"another-secret-another-secret-xx"))
            .is_err());
        // wrong issuer
        let mut other = claims.clone();
        other["iss"] = "evil".into();
        assert!(s.verify(&forge(hdr.clone(), other, SECRET)).is_err());
        // missing exp
        let mut no_exp = claims.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(s.verify(&forge(hdr.clone(), no_exp, SECRET)).is_err());
        // alg none and other algorithms
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims.to_string())
        );
        assert!(s.verify(&none).is_err());
        let hs512 = format!(
            "{}.{}.AAAA",
            b64.encode(r#"{"alg":"HS512","typ":"JWT"}"#),
            b64.encode(claims.to_string())
        );
        assert!(s.verify(&hs512).is_err());
        // unknown kid
        assert!(s
            .verify(&forge(
                serde_json::json!({"alg":"HS256","kid":"other"}),
                claims.clone(),
                SECRET
            ))
            .is_err());
        // tampered payload
        let (good, _) = s.issue(&user()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert!(s.verify(&tampered).is_err());
        // garbage and oversize
        for bad in ["", "a.b.c", "....", "not a token", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(s.verify(bad).is_err(), "{bad}");
        }
    }
}
