//! Storage: users, documents and server metadata behind one interface, [`Store`].
//!
//! The API, auth and CLI code talk only to `Arc<dyn Store>`; [`SledStore`] is the embedded
//! backend and the only place that names sled. A shared-database backend for multi-node
//! deployments implements the same trait. Every write that returns `Ok` has been flushed to
//! disk, so an acknowledged write survives `kill -9`.

mod sled_store;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
pub use sled_store::SledStore;

use crate::model::{DocId, Kind, Role, Username};

/// A user as stored. The password hash never leaves the server.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name, also the `sub` of the user's tokens.
    pub username: Username,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Roles, copied into the `roles` claim of tokens.
    pub roles: Vec<Role>,
    /// A disabled user cannot log in, and their tokens stop working.
    pub disabled: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
    /// Random value copied into the `uver` claim of every token issued to the user. A new one
    /// is drawn at creation and whenever the password, roles or status change or the user's
    /// tokens are revoked, so every earlier token (access or refresh) stops working at once, and
    /// a user re-created under an old name never inherits the old user's tokens. Records
    /// written before this field existed read as `""` (their tokens stay valid until the next
    /// change) instead of failing to decode.
    #[serde(default)]
    pub token_version: String,
}

impl UserRecord {
    /// A new, enabled user created now.
    pub fn new(username: Username, password_hash: String, roles: Vec<Role>, now: String) -> Self {
        Self {
            username,
            password_hash,
            roles,
            disabled: false,
            created_at: now.clone(),
            updated_at: now,
            token_version: new_token_version(),
        }
    }
}

/// A fresh random token version (see [`UserRecord::token_version`]).
pub fn new_token_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A refresh token as stored. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// All refresh tokens descending from one login share a family; reuse of a used token
    /// revokes the whole family.
    pub family: String,
    /// Whose token it is.
    pub username: Username,
    /// The user's token version when it was issued.
    pub token_version: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the family's absolute end (rotation does not extend it).
    pub expires_at: i64,
    /// Set once the token has been exchanged.
    pub used: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A document of the built-in document store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Time-ordered id, unique within its kind.
    pub id: DocId,
    /// The kind (policy file) it belongs to.
    pub kind: Kind,
    /// The `sub` of the creator.
    pub owner: Username,
    /// The document's JSON object.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a running server) holds the data directory.
    #[error("the data directory `{0}` is in use by another gatehouse process (is the server running?); stop it first or use the HTTP API")]
    Locked(String),
    /// The record already exists, or changed since it was read.
    #[error("conflict: the record already exists or was changed concurrently")]
    Conflict,
    /// A stored record could not be decoded.
    #[error("stored record `{0}` is corrupt")]
    Corrupt(String),
    /// The backend failed.
    #[error("storage error: {0}")]
    Backend(String),
}

/// Everything gatehouse keeps. Implementations must be durable on `Ok` and safe to share
/// between threads.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One user, if present.
    async fn get_user(&self, name: &Username) -> Result<Option<UserRecord>, StoreError>;
    /// As [`get_user`](Self::get_user), shared: what authentication reads on every request.
    /// The default decodes through `get_user`; a backend may keep decoded records, as long as
    /// its own user writes are seen at once.
    async fn get_user_shared(&self, name: &Username) -> Result<Option<std::sync::Arc<UserRecord>>, StoreError> {
        Ok(self.get_user(name).await?.map(std::sync::Arc::new))
    }
    /// Users in name order, after the given name, at most `limit`.
    async fn list_users(&self, after: Option<&Username>, limit: usize) -> Result<Vec<UserRecord>, StoreError>;
    /// Whether any user exists.
    async fn has_users(&self) -> Result<bool, StoreError>;
    /// Adds a user; [`StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Replaces `old` by `new`; [`StoreError::Conflict`] when the stored record is no longer `old`.
    async fn update_user(&self, old: &UserRecord, new: &UserRecord) -> Result<(), StoreError>;
    /// Removes a user; `false` when there was none.
    async fn delete_user(&self, name: &Username) -> Result<bool, StoreError>;

    /// One document, if present.
    async fn get_doc(&self, kind: &Kind, id: &DocId) -> Result<Option<Document>, StoreError>;
    /// Documents of a kind in id (creation) order, after the given id, at most `limit`.
    async fn list_docs(&self, kind: &Kind, after: Option<&DocId>, limit: usize) -> Result<Vec<Document>, StoreError>;
    /// Adds a document; [`StoreError::Conflict`] when the id is taken.
    async fn insert_doc(&self, doc: &Document) -> Result<(), StoreError>;
    /// Adds many new documents, durable together on `Ok` (imports and load-test data; the
    /// default inserts them one by one). [`StoreError::Conflict`] when an id is taken; then
    /// none of them is added by the sled store.
    async fn insert_docs(&self, docs: &[Document]) -> Result<(), StoreError> {
        for doc in docs {
            self.insert_doc(doc).await?;
        }
        Ok(())
    }
    /// Replaces `old` by `new`; [`StoreError::Conflict`] when the stored document is no longer `old`.
    async fn update_doc(&self, old: &Document, new: &Document) -> Result<(), StoreError>;
    /// Removes `old`; [`StoreError::Conflict`] when it changed since it was read, `false` when gone.
    async fn delete_doc(&self, old: &Document) -> Result<bool, StoreError>;

    /// Stores a new refresh token under the hash of its value.
    async fn insert_refresh(&self, hash: &str, rec: &RefreshRecord) -> Result<(), StoreError>;
    /// Atomically marks a refresh token used and returns its record as it was before (so a
    /// second use sees `used == true`); `None` when unknown.
    async fn use_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError>;
    /// A refresh token's record without changing it.
    async fn get_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError>;
    /// Revokes a refresh-token family until `expires_at` (unix seconds).
    async fn revoke_family(&self, family: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Whether a family was revoked.
    async fn is_family_revoked(&self, family: &str) -> Result<bool, StoreError>;
    /// Puts an access token's `jti` on the deny-list until `expires_at` (unix seconds).
    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Whether a `jti` is on the deny-list.
    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    /// Drops deny-list entries, revoked families and refresh tokens that expired before `now`;
    /// returns how many entries went.
    async fn prune_expired(&self, now: i64) -> Result<usize, StoreError>;

    /// A server metadata value (e.g. the generated signing key).
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`, replacing any value.
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Stores `value` under `key` unless a value is there; returns the value in force.
    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Writes everything to disk.
    async fn flush(&self) -> Result<(), StoreError>;
}
