//! The embedded sled backend of [`Store`](super::Store).
//!
//! Trees: `users` (key: user name), `docs` (key: `kind 0x00 id`), `meta`. Values are JSON.
//! sled allows one open handle per directory, even within one process, so the handle is opened
//! once and shared; a second process gets [`StoreError::Locked`].

use std::{
    collections::HashMap,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};

use super::{Document, RefreshRecord, Store, StoreError, UserRecord};
use crate::model::{DocId, Kind, Username};

/// sled-backed store; cheap to clone (the handles are reference-counted).
#[derive(Clone, Debug)]
pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    docs: sled::Tree,
    meta: sled::Tree,
    /// sha256(refresh token) -> RefreshRecord
    refresh: sled::Tree,
    /// family -> expires_at (i64 big-endian)
    revoked_families: sled::Tree,
    /// jti -> expires_at (i64 big-endian)
    revoked_jti: sled::Tree,
    /// Decoded users, for [`Store::get_user_shared`] (every authenticated request reads one).
    user_cache: Arc<RwLock<UserCache>>,
}

/// Most users kept decoded; when full, the cache starts over.
const MAX_CACHED_USERS: usize = 16 * 1024;

/// Users as last read, kept right by this handle's own writes: sled lets one process open the
/// database, and every user write goes through [`SledStore`]. A read that started before a write
/// to the same user is not cached (the generation moved on).
#[derive(Debug, Default)]
struct UserCache {
    users: HashMap<Box<str>, Arc<UserRecord>>,
    generation: u64,
}

impl SledStore {
    fn cached_user(&self, name: &Username) -> (Option<Arc<UserRecord>>, u64) {
        let cache = self.user_cache.read().unwrap_or_else(PoisonError::into_inner);
        (cache.users.get(name.as_str()).cloned(), cache.generation)
    }

    fn cache_user(&self, user: &Arc<UserRecord>, generation: u64) {
        let mut cache = self.user_cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.generation != generation {
            return;
        }
        if cache.users.len() >= MAX_CACHED_USERS {
            cache.users.clear();
        }
        cache.users.insert(user.username.as_str().into(), Arc::clone(user));
    }

    /// Called right after every write to a user, whether or not it succeeded, before anything
    /// is awaited.
    fn forget_user(&self, name: &Username) {
        let mut cache = self.user_cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.generation = cache.generation.wrapping_add(1);
        cache.users.remove(name.as_str());
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt(String::from_utf8_lossy(key).into_owned()))
}

fn doc_key(kind: &Kind, id: &DocId) -> Vec<u8> {
    let mut key = Vec::with_capacity(kind.as_str().len() + id.as_str().len() + 1);
    key.extend_from_slice(kind.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

impl SledStore {
    /// Opens (creating if needed) the database in `<data_dir>/db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Backend(format!("cannot create data directory `{}`: {e}", data_dir.display())))?;
        let path: PathBuf = data_dir.join("db");
        let db = sled::Config::new().path(&path).open().map_err(|e| match &e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
                StoreError::Locked(data_dir.display().to_string())
            }
            _ => StoreError::Backend(format!("cannot open database `{}`: {e}", path.display())),
        })?;
        let users = db.open_tree("users").map_err(backend)?;
        let docs = db.open_tree("docs").map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let refresh = db.open_tree("refresh").map_err(backend)?;
        let revoked_families = db.open_tree("revoked_families").map_err(backend)?;
        let revoked_jti = db.open_tree("revoked_jti").map_err(backend)?;
        Ok(Self {
            db,
            users,
            docs,
            meta,
            refresh,
            revoked_families,
            revoked_jti,
            user_cache: Arc::default(),
        })
    }

    /// Flushes to disk before a write is acknowledged. sled's `flush_async` can stall for good
    /// when many writers flush at once (seen with 20 concurrent 1 MB writes), so the blocking
    /// `flush` runs on tokio's blocking pool instead; concurrent callers share sled's own flush
    /// serialisation.
    async fn durable(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(result) => result.map(|_| ()).map_err(backend),
            Err(e) => Err(StoreError::Backend(format!("flush task failed: {e}"))),
        }
    }

    /// Compare-and-swap `old` for `new` (either may be absent) and flush.
    async fn cas(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        swap(tree, key, old, new)?;
        self.durable().await
    }

    /// A compare-and-swap on the users tree. The cached user is dropped at once, before the
    /// flush is awaited: a request dropped during the flush must not leave it stale.
    async fn cas_user(&self, name: &Username, old: Option<Vec<u8>>, new: Option<Vec<u8>>) -> Result<(), StoreError> {
        let swapped = swap(&self.users, name.as_str().as_bytes(), old, new);
        self.forget_user(name);
        swapped?;
        self.durable().await
    }
}

/// Compare-and-swap `old` for `new` in memory; [`StoreError::Conflict`] when `old` is stale.
fn swap(tree: &sled::Tree, key: &[u8], old: Option<Vec<u8>>, new: Option<Vec<u8>>) -> Result<(), StoreError> {
    match tree.compare_and_swap(key, old, new).map_err(backend)? {
        Ok(()) => Ok(()),
        Err(_) => Err(StoreError::Conflict),
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get_user(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let key = name.as_str().as_bytes();
        self.users
            .get(key)
            .map_err(backend)?
            .map(|v| decode(key, &v))
            .transpose()
    }

    async fn get_user_shared(&self, name: &Username) -> Result<Option<Arc<UserRecord>>, StoreError> {
        let (hit, generation) = self.cached_user(name);
        if hit.is_some() {
            return Ok(hit);
        }
        let Some(user) = self.get_user(name).await? else {
            return Ok(None);
        };
        let user = Arc::new(user);
        self.cache_user(&user, generation);
        Ok(Some(user))
    }

    async fn list_users(&self, after: Option<&Username>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_str().as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.users.range((start, Bound::Unbounded)).take(limit) {
            let (k, v) = item.map_err(backend)?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    async fn has_users(&self) -> Result<bool, StoreError> {
        Ok(self.users.first().map_err(backend)?.is_some())
    }

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let bytes = encode(user)?;
        self.cas_user(&user.username, None, Some(bytes)).await
    }

    async fn update_user(&self, old: &UserRecord, new: &UserRecord) -> Result<(), StoreError> {
        let key = old.username.as_str().as_bytes();
        let current = self.users.get(key).map_err(backend)?.ok_or(StoreError::Conflict)?;
        let stored: UserRecord = decode(key, &current)?;
        if encode(&stored)? != encode(old)? {
            return Err(StoreError::Conflict);
        }
        self.cas_user(&old.username, Some(current.to_vec()), Some(encode(new)?))
            .await
    }

    async fn delete_user(&self, name: &Username) -> Result<bool, StoreError> {
        let removed = self.users.remove(name.as_str().as_bytes()).map_err(backend);
        self.forget_user(name);
        let removed = removed?.is_some();
        self.durable().await?;
        Ok(removed)
    }

    async fn get_doc(&self, kind: &Kind, id: &DocId) -> Result<Option<Document>, StoreError> {
        let key = doc_key(kind, id);
        self.docs
            .get(&key)
            .map_err(backend)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    async fn list_docs(&self, kind: &Kind, after: Option<&DocId>, limit: usize) -> Result<Vec<Document>, StoreError> {
        let mut prefix = kind.as_str().as_bytes().to_vec();
        prefix.push(0);
        let start = match after {
            Some(id) => Bound::Excluded(doc_key(kind, id)),
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for item in self.docs.range((start, Bound::Unbounded)).take(limit) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    async fn insert_doc(&self, doc: &Document) -> Result<(), StoreError> {
        self.cas(&self.docs, &doc_key(&doc.kind, &doc.id), None, Some(encode(doc)?))
            .await
    }

    async fn insert_docs(&self, docs: &[Document]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for doc in docs {
            let key = doc_key(&doc.kind, &doc.id);
            if self.docs.contains_key(&key).map_err(backend)? {
                return Err(StoreError::Conflict);
            }
            batch.insert(key, encode(doc)?);
        }
        self.docs.apply_batch(batch).map_err(backend)?;
        self.durable().await
    }

    async fn update_doc(&self, old: &Document, new: &Document) -> Result<(), StoreError> {
        let key = doc_key(&old.kind, &old.id);
        let current = self.docs.get(&key).map_err(backend)?.ok_or(StoreError::Conflict)?;
        if decode::<Document>(&key, &current)? != *old {
            return Err(StoreError::Conflict);
        }
        self.cas(&self.docs, &key, Some(current.to_vec()), Some(encode(new)?))
            .await
    }

    async fn delete_doc(&self, old: &Document) -> Result<bool, StoreError> {
        let key = doc_key(&old.kind, &old.id);
        let Some(current) = self.docs.get(&key).map_err(backend)? else {
            return Ok(false);
        };
        if decode::<Document>(&key, &current)? != *old {
            return Err(StoreError::Conflict);
        }
        self.cas(&self.docs, &key, Some(current.to_vec()), None).await?;
        Ok(true)
    }

    async fn insert_refresh(&self, hash: &str, rec: &RefreshRecord) -> Result<(), StoreError> {
        self.cas(&self.refresh, hash.as_bytes(), None, Some(encode(rec)?)).await
    }

    async fn use_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        let key = hash.as_bytes();
        loop {
            let Some(current) = self.refresh.get(key).map_err(backend)? else {
                return Ok(None);
            };
            let rec: RefreshRecord = decode(key, &current)?;
            if rec.used {
                return Ok(Some(rec));
            }
            let used = RefreshRecord {
                used: true,
                ..rec.clone()
            };
            match self
                .cas(&self.refresh, key, Some(current.to_vec()), Some(encode(&used)?))
                .await
            {
                Ok(()) => return Ok(Some(rec)),
                // Someone else used it between our read and our swap: read again, and see it used.
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        let key = hash.as_bytes();
        self.refresh
            .get(key)
            .map_err(backend)?
            .map(|v| decode(key, &v))
            .transpose()
    }

    async fn revoke_family(&self, family: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoked_families
            .insert(family.as_bytes(), &expires_at.to_be_bytes())
            .map_err(backend)?;
        self.durable().await
    }

    async fn is_family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        self.revoked_families.contains_key(family.as_bytes()).map_err(backend)
    }

    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.revoked_jti
            .insert(jti.as_bytes(), &expires_at.to_be_bytes())
            .map_err(backend)?;
        self.durable().await
    }

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.revoked_jti.contains_key(jti.as_bytes()).map_err(backend)
    }

    async fn prune_expired(&self, now: i64) -> Result<usize, StoreError> {
        let expired = |v: &[u8]| {
            <[u8; 8]>::try_from(v)
                .map(i64::from_be_bytes)
                .map_or(true, |exp| exp < now)
        };
        let mut gone = 0;
        for tree in [&self.revoked_jti, &self.revoked_families] {
            for item in tree.iter() {
                let (k, v) = item.map_err(backend)?;
                if expired(&v) {
                    tree.remove(k).map_err(backend)?;
                    gone += 1;
                }
            }
        }
        for item in self.refresh.iter() {
            let (k, v) = item.map_err(backend)?;
            let done = decode::<RefreshRecord>(&k, &v).map_or(true, |r| r.expires_at < now);
            if done {
                self.refresh.remove(k).map_err(backend)?;
                gone += 1;
            }
        }
        if gone > 0 {
            self.durable().await?;
        }
        Ok(gone)
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key.as_bytes()).map_err(backend)?.map(|v| v.to_vec()))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value).map_err(backend)?;
        self.durable().await
    }

    async fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self
            .meta
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(backend)?
        {
            Ok(()) => {
                self.durable().await?;
                Ok(value.to_vec())
            }
            Err(existing) => Ok(existing.current.map(|v| v.to_vec()).unwrap_or_default()),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: &str, id: &str) -> Document {
        Document {
            id: DocId::parse(id).unwrap(),
            kind: Kind::parse(kind).unwrap(),
            owner: Username::parse("ann").unwrap(),
            data: serde_json::Map::new(),
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    #[tokio::test]
    async fn shared_users_see_every_write_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let ann = Username::parse("ann").unwrap();
        assert!(s.get_user_shared(&ann).await.unwrap().is_none());
        let v1 = UserRecord::new(ann.clone(), "h".into(), vec![], "t".into());
        s.create_user(&v1).await.unwrap();
        assert_eq!(
            s.get_user_shared(&ann).await.unwrap().unwrap().token_version,
            v1.token_version,
            "absence is not cached"
        );
        // A clone of the handle shares the cache and sees the other's writes.
        let other = s.clone();
        let v2 = UserRecord {
            disabled: true,
            token_version: crate::store::new_token_version(),
            ..v1.clone()
        };
        other.update_user(&v1, &v2).await.unwrap();
        assert_eq!(
            s.get_user_shared(&ann).await.unwrap().unwrap().token_version,
            v2.token_version
        );
        // A failed write (stale `old`) changes nothing.
        assert!(matches!(other.update_user(&v1, &v1).await, Err(StoreError::Conflict)));
        assert_eq!(
            s.get_user_shared(&ann).await.unwrap().unwrap().token_version,
            v2.token_version
        );
        assert!(other.delete_user(&ann).await.unwrap());
        assert!(s.get_user_shared(&ann).await.unwrap().is_none());
        let v3 = UserRecord::new(ann.clone(), "h3".into(), vec![], "t".into());
        other.create_user(&v3).await.unwrap();
        assert_eq!(
            s.get_user_shared(&ann).await.unwrap().unwrap().token_version,
            v3.token_version
        );
    }

    #[tokio::test]
    async fn a_user_write_dropped_during_its_flush_leaves_no_stale_user() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let ann = Username::parse("ann").unwrap();
        let v1 = UserRecord::new(ann.clone(), "h".into(), vec![], "t".into());
        s.create_user(&v1).await.unwrap();
        assert!(s.get_user_shared(&ann).await.unwrap().is_some(), "now cached");
        let v2 = UserRecord {
            disabled: true,
            token_version: crate::store::new_token_version(),
            ..v1.clone()
        };
        // Polled once, then dropped while it waits for the flush (as when a client goes away).
        let mut update = s.update_user(&v1, &v2);
        let polled = update
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        assert!(polled.is_pending(), "the update waits for its flush");
        drop(update);
        let seen = s.get_user_shared(&ann).await.unwrap().unwrap();
        assert!(
            seen.disabled,
            "the write is in sled, so the cache must not hold the old user"
        );
    }

    #[tokio::test]
    async fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        assert!(matches!(SledStore::open(dir.path()), Err(StoreError::Locked(_))));
    }

    #[tokio::test]
    async fn listing_stays_within_a_kind_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        for id in ["a1", "a2", "a3"] {
            s.insert_doc(&doc("notes", id)).await.unwrap();
        }
        s.insert_doc(&doc("notes-x", "b1")).await.unwrap();
        s.insert_doc(&doc("note", "c1")).await.unwrap();
        let kind = Kind::parse("notes").unwrap();
        let all = s.list_docs(&kind, None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a1", "a2", "a3"]
        );
        let after = DocId::parse("a1").unwrap();
        let page = s.list_docs(&kind, Some(&after), 1).await.unwrap();
        assert_eq!(page[0].id.as_str(), "a2");
        assert!(matches!(
            s.insert_doc(&doc("notes", "a1")).await,
            Err(StoreError::Conflict)
        ));
    }

    #[tokio::test]
    async fn bulk_inserts_are_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.insert_docs(&[doc("notes", "a1"), doc("notes", "a2")]).await.unwrap();
        assert!(matches!(
            s.insert_docs(&[doc("notes", "a3"), doc("notes", "a2")]).await,
            Err(StoreError::Conflict)
        ));
        let kind = Kind::parse("notes").unwrap();
        let ids: Vec<String> = s
            .list_docs(&kind, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(ids, ["a1", "a2"], "a3 must not be added when a2 conflicts");
    }

    #[tokio::test]
    async fn stale_update_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let d = doc("notes", "a1");
        s.insert_doc(&d).await.unwrap();
        let mut newer = d.clone();
        newer.updated_at = "u".into();
        s.update_doc(&d, &newer).await.unwrap();
        assert!(matches!(s.update_doc(&d, &newer).await, Err(StoreError::Conflict)));
        assert!(matches!(s.delete_doc(&d).await, Err(StoreError::Conflict)));
        assert!(s.delete_doc(&newer).await.unwrap());
    }

    /// Many concurrent large writers all finish. (This does not reproduce the `flush_async`
    /// stall, which needed concurrent conflicting updates over HTTP; the black-box test
    /// `resources::concurrent_writes_never_hang` does.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_large_writes_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
        let big = "x".repeat(1_000_000);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = s.clone();
            let mut d = doc("notes", &format!("d{i}"));
            d.data.insert("body".into(), big.clone().into());
            tasks.push(tokio::spawn(async move { s.insert_doc(&d).await }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .expect("writes stalled");
    }

    #[tokio::test]
    async fn init_meta_keeps_the_first_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.init_meta("k", b"one").await.unwrap(), b"one");
        assert_eq!(s.init_meta("k", b"two").await.unwrap(), b"one");
    }
}
