//! Signing keys: generation, storage, the key ring used to sign and verify, and JWKS.
//!
//! Every key has a `kid`; tokens carry it and verification looks the key up by it, then checks
//! with *that key's* algorithm only (the token header's `alg` must match, never chooses). Keys are
//! generated on first start and kept in the store's metadata (so every node of a shared store
//! signs alike), read from a PEM file (`jwt_private_key`), or, for HS256, taken from `jwt_secret`.
//!
//! Rotation adds a new key that signs from then on; the previous one is *retired*: it keeps
//! verifying until every token it signed has expired (retired time + access-token lifetime +
//! leeway), then it is dropped, and it leaves the JWKS.

use std::path::Path;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use jsonwebtoken::{
    jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, EncodingKey,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::store::Store;

/// Store metadata key of the generated keys.
const META_KEY: &str = "signing_keys";

fn internal(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(e.to_string())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Parses a `jwt_algorithm` setting.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "HS256" => Some(Algorithm::HS256),
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        _ => None,
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        _ => "unsupported",
    }
}

/// An HS256 key from a configured secret; its `kid` is derived from the secret's hash.
pub fn hmac_key(secret: &[u8]) -> Result<RingKey, AuthError> {
    if secret.len() < 32 {
        return Err(AuthError::Internal("the signing key must be at least 32 bytes".into()));
    }
    let digest = Sha256::digest(secret);
    let kid = format!("hs256-{}", &format!("{digest:x}")[..12]);
    RingKey::new(kid, Algorithm::HS256, secret, None)
}

/// A key as kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// `HS256`, `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    /// Base64 of the HMAC secret, or of the private key: PKCS#8 DER (EdDSA, ES256) or PKCS#1
    /// DER (RS256).
    pub material: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds when a newer key took over signing.
    pub retired_at: Option<i64>,
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// PKCS#8 prefix of a P-256 private key (RFC 5915 ECPrivateKey without the optional public
/// key), followed by the 32-byte scalar.
const P256_PKCS8_PREFIX: [u8; 35] = [
    0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20,
];

/// Generates a new key (RS256: 2048-bit RSA).
pub fn generate(alg: Algorithm) -> Result<StoredKey, AuthError> {
    let mut random = [0u8; 48];
    rand::rng().fill_bytes(&mut random);
    let material = match alg {
        Algorithm::HS256 => random.to_vec(),
        Algorithm::EdDSA => [&ED25519_PKCS8_PREFIX[..], &random[..32]].concat(),
        Algorithm::ES256 => {
            // 32 random bytes are a valid P-256 scalar unless zero or >= n (odds ~2^-32);
            // the round trip below rejects such a key and the caller may retry.
            [&P256_PKCS8_PREFIX[..], &random[..32]].concat()
        }
        Algorithm::RS256 => {
            // jsonwebtoken's `from_rsa_der` takes PKCS#1 (RSAPrivateKey), not PKCS#8.
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).map_err(internal)?;
            key.to_pkcs1_der().map_err(internal)?.as_bytes().to_vec()
        }
        other => return Err(AuthError::Internal(format!("cannot generate {other:?} keys"))),
    };
    let digest = Sha256::digest(&material);
    let kid = format!("{}-{}", alg_name(alg).to_lowercase(), &format!("{digest:x}")[..12]);
    Ok(StoredKey {
        kid,
        alg: alg_name(alg).to_owned(),
        material: STANDARD.encode(material),
        created_at: now(),
        retired_at: None,
    })
}

/// One usable key.
pub struct RingKey {
    /// Key id.
    pub kid: String,
    /// Its one algorithm.
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// For verification.
    pub decoding: DecodingKey,
    /// The public JWK (`None` for HMAC keys, which are never published).
    pub jwk: Option<Jwk>,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl RingKey {
    /// Builds a key from its algorithm and private material (HMAC secret or PKCS#8 DER).
    pub fn new(kid: String, alg: Algorithm, material: &[u8], retired_at: Option<i64>) -> Result<Self, AuthError> {
        let encoding = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(material).map_err(internal)?,
            Algorithm::EdDSA => EncodingKey::from_ed_der(material),
            Algorithm::ES256 => EncodingKey::from_ec_der(material),
            Algorithm::RS256 => EncodingKey::from_rsa_der(material),
            other => return Err(AuthError::Internal(format!("unsupported algorithm {other:?}"))),
        };
        Self::from_encoding(kid, alg, encoding, material, retired_at)
    }

    /// Builds a key from a PKCS#8 PEM private key file.
    pub fn from_pem_file(path: &Path, alg: Algorithm) -> Result<Self, AuthError> {
        let pem = std::fs::read(path).map_err(|e| {
            AuthError::Config(format!(
                "invalid setting `jwt_private_key`: cannot read `{}`: {e}",
                path.display()
            ))
        })?;
        let bad = |_: jsonwebtoken::errors::Error| {
            AuthError::Config(format!(
                "invalid setting `jwt_private_key`: `{}` is not a PKCS#8 PEM {} private key",
                path.display(),
                alg_name(alg)
            ))
        };
        let encoding = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).map_err(bad)?,
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).map_err(bad)?,
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).map_err(bad)?,
            _ => {
                return Err(AuthError::Config(
                    "jwt_private_key needs jwt_algorithm EdDSA, ES256 or RS256".into(),
                ))
            }
        };
        let digest = Sha256::digest(&pem);
        let kid = format!("{}-{}", alg_name(alg).to_lowercase(), &format!("{digest:x}")[..12]);
        Self::from_encoding(kid, alg, encoding, &pem, None)
    }

    fn from_encoding(
        kid: String,
        alg: Algorithm,
        encoding: EncodingKey,
        secret: &[u8],
        retired_at: Option<i64>,
    ) -> Result<Self, AuthError> {
        let (decoding, jwk) = if alg == Algorithm::HS256 {
            (DecodingKey::from_secret(secret).map_err(internal)?, None)
        } else {
            let mut jwk = Jwk::from_encoding_key(&encoding, alg).map_err(internal)?;
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(match alg {
                Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                Algorithm::ES256 => KeyAlgorithm::ES256,
                _ => KeyAlgorithm::RS256,
            });
            (DecodingKey::from_jwk(&jwk).map_err(internal)?, Some(jwk))
        };
        let key = Self {
            kid,
            alg,
            encoding,
            decoding,
            jwk,
            retired_at,
        };
        // `*_der` constructors check nothing until first use: prove the key signs and verifies.
        let probe = jsonwebtoken::crypto::sign(b"probe", &key.encoding, alg).map_err(internal)?;
        let ok = jsonwebtoken::crypto::verify(&probe, b"probe", &key.decoding, alg).map_err(internal)?;
        if !ok {
            return Err(AuthError::Internal(format!(
                "key `{}` does not verify its own signature",
                key.kid
            )));
        }
        Ok(key)
    }

    /// The key that signs.
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The keys in force: one active (signing) key and any retired ones still verifying.
#[derive(Debug)]
pub struct KeyRing {
    /// Older keys that still verify, oldest first.
    retired: Vec<RingKey>,
    /// The key that signs.
    active: RingKey,
}

impl KeyRing {
    /// A ring from keys, oldest first; the last non-retired one signs.
    pub fn new(mut keys: Vec<RingKey>) -> Result<Self, AuthError> {
        let pos = keys
            .iter()
            .rposition(|k| k.retired_at.is_none())
            .ok_or_else(|| AuthError::Internal("no active signing key".into()))?;
        let active = keys.remove(pos);
        Ok(Self { retired: keys, active })
    }

    /// The signing key.
    pub fn active(&self) -> &RingKey {
        &self.active
    }

    fn iter(&self) -> impl Iterator<Item = &RingKey> {
        self.retired.iter().chain(std::iter::once(&self.active))
    }

    /// The key with this id, if it still verifies.
    pub fn find(&self, kid: &str) -> Option<&RingKey> {
        self.iter().find(|k| k.kid == kid)
    }

    /// Public keys (JWKS, RFC 7517); HMAC keys are never published.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.iter().filter_map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Key ids, newest last.
    pub fn kids(&self) -> Vec<String> {
        self.iter().map(|k| k.kid.clone()).collect()
    }
}

/// Loads the stored keys, drops those retired longer than `keep` seconds ago, and makes sure
/// the active key has algorithm `alg` (generating one and retiring the old when not).
/// Returns the keys to use (and stores any change).
pub async fn load_or_generate(store: &dyn Store, alg: Algorithm, keep: i64) -> Result<Vec<StoredKey>, AuthError> {
    let mut keys = load(store).await?;
    let before = keys.len();
    prune(&mut keys, keep);
    let mut changed = keys.len() != before;
    let active_alg_ok = keys
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none())
        .is_some_and(|k| k.alg == alg_name(alg));
    if !active_alg_ok {
        rotate_in(&mut keys, alg)?;
        changed = true;
    }
    if changed {
        let bytes = serde_json::to_vec(&keys).map_err(internal)?;
        store.put_meta(META_KEY, &bytes).await?;
    }
    Ok(keys)
}

/// The stored keys as they are (nothing generated, pruned or written).
pub async fn load(store: &dyn Store) -> Result<Vec<StoredKey>, AuthError> {
    match store.get_meta(META_KEY).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| internal(format!("stored keys are corrupt: {e}"))),
        None => Ok(vec![]),
    }
}

/// Drops retired keys whose tokens have all expired (`keep` seconds after retirement).
fn prune(keys: &mut Vec<StoredKey>, keep: i64) {
    let now = now();
    keys.retain(|k| k.retired_at.is_none_or(|t| t.saturating_add(keep) > now));
}

/// Retires the active key and appends a new one of `alg`.
fn rotate_in(keys: &mut Vec<StoredKey>, alg: Algorithm) -> Result<(), AuthError> {
    let mut fresh = generate(alg)?;
    // A P-256 scalar out of range fails the round trip: draw again (a handful of tries).
    for _ in 0..8 {
        if ring_key(&fresh).is_ok() {
            break;
        }
        fresh = generate(alg)?;
    }
    ring_key(&fresh)?;
    let now = now();
    for k in keys.iter_mut().filter(|k| k.retired_at.is_none()) {
        k.retired_at = Some(now);
    }
    keys.push(fresh);
    Ok(())
}

/// Rotates the stored keys: a new key of `alg` signs from now on. Returns the new key list.
pub async fn rotate(store: &dyn Store, alg: Algorithm, keep: i64) -> Result<Vec<StoredKey>, AuthError> {
    let mut keys = load(store).await?;
    prune(&mut keys, keep);
    rotate_in(&mut keys, alg)?;
    let bytes = serde_json::to_vec(&keys).map_err(internal)?;
    store.put_meta(META_KEY, &bytes).await?;
    Ok(keys)
}

/// A usable key from its stored form.
pub fn ring_key(k: &StoredKey) -> Result<RingKey, AuthError> {
    let alg = parse_algorithm(&k.alg).ok_or_else(|| internal(format!("stored key has unknown alg `{}`", k.alg)))?;
    let material = STANDARD.decode(&k.material).map_err(internal)?;
    RingKey::new(k.kid.clone(), alg, &material, k.retired_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_publish() {
        for alg in [Algorithm::HS256, Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let mut key = generate(alg).unwrap();
            let mut ring = ring_key(&key);
            for _ in 0..8 {
                if ring.is_ok() {
                    break;
                }
                key = generate(alg).unwrap();
                ring = ring_key(&key);
            }
            let ring = ring.unwrap();
            assert_eq!(ring.alg, alg);
            let jwks = KeyRing::new(vec![ring]).unwrap().jwks();
            if alg == Algorithm::HS256 {
                assert!(jwks.keys.is_empty(), "secrets are never published");
            } else {
                assert_eq!(jwks.keys.len(), 1);
                let json = serde_json::to_string(&jwks).unwrap();
                assert!(json.contains(&key.kid), "{json}");
                assert!(!json.contains("\"d\""), "no private part: {json}");
            }
        }
    }

    #[test]
    fn rs256_is_generated() {
        let key = ring_key(&generate(Algorithm::RS256).unwrap()).unwrap();
        let jwks = KeyRing::new(vec![key]).unwrap().jwks();
        let json = serde_json::to_string(&jwks).unwrap();
        assert!(json.contains("\"kty\":\"RSA\""), "{json}");
    }
}
