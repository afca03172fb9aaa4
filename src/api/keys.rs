//! Keys and discovery: `GET /.well-known/jwks.json` (public keys, RFC 7517),
//! `GET /.well-known/openid-configuration` (endpoints, so gateways and client libraries can
//! configure themselves) and `POST /keys/rotate` (governed by `policies/_keys.rhai`).

use std::sync::Arc;

use poem::{web::Data, Request};
use poem_openapi::{payload::Json, Object, OpenApi};
use serde_json::{json, Value};

use super::{authorize, problem::ApiError, security::BearerAuth, ApiTags, AppState, Target};
use crate::{
    app::{self, KeySource},
    auth::keys,
    model::Action,
};

/// The policy that governs `/keys`.
pub const KEYS_POLICY: &str = "_keys";

/// One public key (RFC 7517). Which members are present depends on `kty`.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JwkView {
    /// Key type: `OKP` (Ed25519), `EC` (P-256) or `RSA`.
    pub kty: String,
    /// Key id, as in the `kid` header of the tokens it signed.
    pub kid: Option<String>,
    /// Algorithm: `EdDSA`, `ES256` or `RS256`.
    pub alg: Option<String>,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: Option<String>,
    /// Curve (`Ed25519`, `P-256`).
    pub crv: Option<String>,
    /// Public key (OKP), or x coordinate (EC).
    pub x: Option<String>,
    /// y coordinate (EC).
    pub y: Option<String>,
    /// Modulus (RSA).
    pub n: Option<String>,
    /// Exponent (RSA).
    pub e: Option<String>,
}

/// A JWK set.
#[derive(Debug, Object)]
pub struct JwkSetView {
    /// The public keys that verify current tokens (empty with HS256: a secret is never published).
    pub keys: Vec<JwkView>,
}

/// Where the endpoints are (RFC 8414 field names).
#[derive(Debug, Object)]
pub struct DiscoveryView {
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// `POST /token`.
    pub token_endpoint: String,
    /// `POST /token/revoke`.
    pub revocation_endpoint: String,
    /// `GET /.well-known/jwks.json`.
    pub jwks_uri: String,
    /// `password` and `refresh_token`.
    pub grant_types_supported: Vec<String>,
    /// `none`: gatehouse has no client registry.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `none`.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithm of the signing key.
    pub token_signing_alg_values_supported: Vec<String>,
}

/// Answer of a rotation.
#[derive(Debug, Object)]
pub struct RotatedKeys {
    /// The new signing key.
    pub kid: String,
    /// Its algorithm.
    pub alg: String,
    /// Every key that still verifies, newest last (retired keys leave once every token they
    /// signed has expired).
    pub kids: Vec<String>,
}

/// Key and discovery endpoints.
pub struct KeysApi;

fn base_url(state: &AppState, req: &Request) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.clone();
    }
    let host = req
        .header("host")
        .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn jwk_view(v: &Value) -> Option<JwkView> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(JwkView {
        kty: s("kty")?,
        kid: s("kid"),
        alg: s("alg"),
        use_: s("use"),
        crv: s("crv"),
        x: s("x"),
        y: s("y"),
        n: s("n"),
        e: s("e"),
    })
}

#[OpenApi(tag = "ApiTags::Auth")]
impl KeysApi {
    /// Public keys that verify access tokens (JWKS)
    ///
    /// RFC 7517. Empty with HS256. A retired key stays here until every token it signed has
    /// expired.
    #[oai(path = "/.well-known/jwks.json", method = "get", operation_id = "get_jwks")]
    async fn jwks(&self, state: Data<&Arc<AppState>>) -> Json<JwkSetView> {
        let set = state.auth.tokens().ring().jwks();
        let keys = set
            .keys
            .iter()
            .filter_map(|k| serde_json::to_value(k).ok())
            .filter_map(|v| jwk_view(&v))
            .collect();
        Json(JwkSetView { keys })
    }

    /// Discovery document
    ///
    /// The issuer and the token, revocation and JWKS endpoints (RFC 8414 field names). URLs use
    /// `public_url` when set, else the request's `Host`.
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        operation_id = "get_openid_configuration"
    )]
    async fn discovery(&self, state: Data<&Arc<AppState>>, req: &Request) -> Json<DiscoveryView> {
        let base = base_url(&state, req);
        let alg = state.auth.tokens().ring().active().alg;
        Json(DiscoveryView {
            issuer: state.settings.issuer.clone(),
            token_endpoint: format!("{base}/token"),
            revocation_endpoint: format!("{base}/token/revoke"),
            jwks_uri: format!("{base}/.well-known/jwks.json"),
            grant_types_supported: vec!["password".into(), "refresh_token".into()],
            token_endpoint_auth_methods_supported: vec!["none".into()],
            revocation_endpoint_auth_methods_supported: vec!["none".into()],
            token_signing_alg_values_supported: vec![format!("{alg:?}")],
        })
    }

    /// Rotate the signing key
    ///
    /// A new key signs from now on; the previous one keeps verifying until every token it signed
    /// has expired. Only for generated keys (409 when keys come from `jwt_secret` or
    /// `jwt_private_key`). Decided by `_keys.rhai` with `action == "update"` (shipped: admins
    /// only).
    #[oai(
        path = "/keys/rotate",
        method = "post",
        operation_id = "rotate_keys",
        tag = "ApiTags::Policies"
    )]
    async fn rotate(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<RotatedKeys>, ApiError> {
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let ring = state.auth.tokens().ring();
        let active = ring.active();
        let data = json!({"kid": active.kid, "alg": format!("{:?}", active.alg), "kids": ring.kids()});
        authorize(
            &set,
            KEYS_POLICY,
            claims,
            Action::Update,
            Target::new(KEYS_POLICY, Some(active.kid.as_str()), None, &data),
            req,
        )?;
        if state.key_source == KeySource::Configured {
            return Err(ApiError::conflict(
                "the signing key comes from `jwt_secret` or `jwt_private_key`; rotate it there and restart",
            ));
        }
        let _guard = state.key_lock.lock().await;
        let alg = app::algorithm(&state.settings)?;
        let stored = keys::rotate(state.store.as_ref(), alg, app::key_keep_seconds(&state.settings)).await?;
        state.auth.tokens().set_ring(app::stored_ring(&stored)?)?;
        let ring = state.auth.tokens().ring();
        let active = ring.active();
        tracing::info!(target: "gatehouse::keys", kid = %active.kid, by = %auth.0.username, "signing key rotated");
        Ok(Json(RotatedKeys {
            kid: active.kid.clone(),
            alg: format!("{:?}", active.alg),
            kids: ring.kids(),
        }))
    }
}
