//! Password hashing with argon2id (OWASP parameters: m=19456 KiB, t=2, p=1).
//!
//! Hashing costs tens of milliseconds of CPU and ~19 MiB, so the async API runs it on a small
//! fixed pool of threads (the server uses half the cores): a login flood queues instead of
//! starving the async workers or exhausting memory. Unknown users are verified against a dummy
//! hash so that their answer takes as long as a wrong password.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use super::AuthError;
use crate::config::Secret;

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (bytes); longer input is refused before hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Checks the password rules.
pub fn check_password_rules(pw: &str) -> Result<(), AuthError> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::WeakPassword(format!(
            "password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(AuthError::WeakPassword(format!(
            "password must have at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// Hashes on the calling thread (CLI, tests). Servers use [`Hasher::hash`].
pub fn hash_blocking(pw: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("password hashing failed: {e}")))
}

/// Verifies on the calling thread; a malformed stored hash verifies nothing.
pub fn verify_blocking(pw: &str, phc: &str) -> bool {
    Argon2::default().verify_password(pw.as_bytes(), phc).is_ok()
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs hashing off the async workers on a small pool of dedicated threads.
///
/// Dedicated threads, not tokio's blocking pool: each argon2 run allocates ~19 MiB, and glibc
/// keeps freed memory in per-thread arenas, so hashing spread over hundreds of blocking-pool
/// threads left hundreds of MiB resident after a login burst. A fixed pool bounds both the
/// concurrency and the memory; extra requests queue.
#[derive(Clone)]
pub struct Hasher {
    jobs: std::sync::mpsc::Sender<Job>,
    dummy: Arc<str>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher with `concurrency` worker threads (at least one). The threads end when the last
    /// clone of the hasher is dropped.
    pub fn new(concurrency: usize) -> Result<Self, AuthError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("gatehouse-argon2-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|e| AuthError::Internal(format!("cannot start hashing threads: {e}")))?;
        }
        Ok(Self {
            jobs: tx,
            dummy: hash_blocking("gatehouse-timing-equaliser")?.into(),
        })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(job)
            .map_err(|_| AuthError::Internal("hashing pool stopped".into()))?;
        rx.await.map_err(|_| AuthError::Internal("hashing job lost".into()))
    }

    /// Hashes a new password.
    pub async fn hash(&self, pw: &Secret) -> Result<String, AuthError> {
        let pw = pw.clone();
        self.run(move || hash_blocking(pw.expose())).await?
    }

    /// Verifies `pw` against `stored`, or against a dummy hash when there is no user, so both
    /// cases cost the same.
    pub async fn verify(&self, pw: &Secret, stored: Option<&str>) -> Result<bool, AuthError> {
        let pw = pw.clone();
        let known = stored.is_some();
        let phc: Arc<str> = stored.map(Arc::from).unwrap_or_else(|| self.dummy.clone());
        let ok = self.run(move || verify_blocking(pw.expose(), &phc)).await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_owasp_parameters() {
        let h = hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse", &h));
        assert!(!verify_blocking("wrong horse", &h));
        assert!(!verify_blocking("x", "not a hash"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_user_never_verifies() {
        let hasher = Hasher::new(2).unwrap();
        let pw = Secret::new("gatehouse-timing-equaliser");
        assert!(!hasher.verify(&pw, None).await.unwrap());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hashing_does_not_block_the_async_runtime() {
        // On a single-threaded runtime, a timer must keep firing while hashes run.
        let hasher = Hasher::new(1).unwrap();
        let pw = Secret::new("some password");
        let hashing = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                for _ in 0..3 {
                    hasher.hash(&pw).await.unwrap();
                }
            }
        });
        let mut ticks = 0;
        while !hashing.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            ticks += 1;
        }
        assert!(ticks >= 3, "the runtime was blocked: {ticks} ticks");
    }

    #[test]
    fn password_rules() {
        assert!(check_password_rules("short").is_err());
        assert!(check_password_rules("long enough").is_ok());
        assert!(check_password_rules(&"x".repeat(2000)).is_err());
    }
}
