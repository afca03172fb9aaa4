//! Login throttling: too many failed password grants for one user name, or from one client
//! address, within a window get 429 with `Retry-After` until the window ends, before any
//! password hashing is spent on them.
//!
//! Counters live in memory (per server process) and are bounded: when the table is full, expired
//! windows are dropped first and, failing that, the oldest entries.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most this many counters are kept.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
}

/// Failure counters per user name and per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    user_limit: u32,
    ip_limit: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

/// The counters a login attempt touches.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    user: String,
    ip: Option<String>,
}

impl LoginKeys {
    /// Keys for `username` from `ip`.
    pub fn new(username: &str, ip: Option<IpAddr>) -> Self {
        Self {
            user: format!("u:{}", username.to_lowercase()),
            ip: ip.map(|ip| format!("ip:{ip}")),
        }
    }
}

impl LoginThrottle {
    /// `user_limit` failures per user name (and five times as many per address) within `window`.
    pub fn new(user_limit: u32, window: Duration) -> Self {
        Self {
            user_limit: user_limit.max(1),
            ip_limit: user_limit.max(1).saturating_mul(5),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means another thread panicked mid-update of plain counters.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds to wait when either counter is at its limit, `None` when the attempt may go on.
    pub fn retry_after(&self, keys: &LoginKeys) -> Option<u64> {
        let now = Instant::now();
        let entries = self.lock();
        let blocked = |key: &str, limit: u32| {
            let e = entries.get(key)?;
            let ends = e.window_start + self.window;
            (e.failures >= limit && ends > now).then(|| (ends - now).as_secs().max(1))
        };
        let user = blocked(&keys.user, self.user_limit);
        let ip = keys.ip.as_deref().and_then(|k| blocked(k, self.ip_limit));
        user.max(ip)
    }

    /// Counts a failed attempt.
    pub fn failed(&self, keys: &LoginKeys) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let window = self.window;
            entries.retain(|_, e| now.duration_since(e.window_start) < window);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        for key in std::iter::once(&keys.user).chain(keys.ip.as_ref()) {
            let e = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                window_start: now,
            });
            if now.duration_since(e.window_start) >= self.window {
                *e = Entry {
                    failures: 0,
                    window_start: now,
                };
            }
            e.failures = e.failures.saturating_add(1);
        }
    }

    /// A successful login clears the user name's counter (not the address's).
    pub fn succeeded(&self, keys: &LoginKeys) {
        self.lock().remove(&keys.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_limit_then_window_end() {
        let t = LoginThrottle::new(3, Duration::from_millis(200));
        let k = LoginKeys::new("ann", Some([127, 0, 0, 1].into()));
        for _ in 0..3 {
            assert_eq!(t.retry_after(&k), None);
            t.failed(&k);
        }
        assert!(t.retry_after(&k).is_some());
        // Another user from the same address is not blocked yet (address limit is 15).
        assert_eq!(t.retry_after(&LoginKeys::new("bob", Some([127, 0, 0, 1].into()))), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.retry_after(&k), None);
    }

    #[test]
    fn address_limit_covers_many_user_names() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        for i in 0..10 {
            t.failed(&LoginKeys::new(&format!("u{i}"), Some([10, 0, 0, 1].into())));
        }
        assert!(t
            .retry_after(&LoginKeys::new("fresh", Some([10, 0, 0, 1].into())))
            .is_some());
        assert_eq!(
            t.retry_after(&LoginKeys::new("fresh", Some([10, 0, 0, 2].into()))),
            None
        );
    }

    #[test]
    fn success_resets_the_user() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let k = LoginKeys::new("Ann", None);
        t.failed(&k);
        t.succeeded(&k);
        t.failed(&k);
        assert_eq!(t.retry_after(&k), None);
        t.failed(&LoginKeys::new("ann", None));
        assert!(t.retry_after(&k).is_some(), "names are counted case-insensitively");
    }
}
