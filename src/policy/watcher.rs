//! Hot reload: watches the policy directory and runs [`PolicyEngine::reload`] after changes.
//!
//! The directory is watched, not the files: editors that save by writing a temp file and renaming
//! it (and Kubernetes ConfigMap swaps) only show up as events on the directory, often under other
//! names. So any event except `Access` (our own reads cause those) triggers a full rescan; the
//! rescan hashes files and only recompiles what changed. Events are debounced for 50 ms, a full
//! rescan also runs every 30 s because inotify can drop events, and a watcher error triggers one.

use std::{sync::Arc, time::Duration};

use notify::{Config, EventKind, PollWatcher, RecursiveMode, Watcher};
use tokio::{sync::mpsc, task::JoinHandle, time::MissedTickBehavior};

use super::{PolicyEngine, PolicyError};

/// Collects the burst of events of one save (create, write, rename) into one rescan.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Safety net: inotify may overflow or miss events on odd file systems.
const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// Poll interval for [`PollWatcher`] (network file systems); keeps reloads under the 1 s promise
/// in most cases.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the watcher and its reload task alive; dropping it stops both.
pub struct WatchGuard {
    _watcher: Box<dyn Watcher + Send>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `engine.dir()` (with its `lib/` and `tests/`) and reloading on changes; it also reloads
/// once right away. With `poll`, uses a content-comparing [`PollWatcher`] (1 s interval) instead
/// of the native backend, for file systems without change notification.
///
/// Must be called inside a tokio runtime. Fails when the directory cannot be watched (e.g. it
/// does not exist).
pub fn watch(engine: Arc<PolicyEngine>, poll: bool) -> Result<WatchGuard, PolicyError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| PolicyError::NoRuntime)?;
    // One pending signal is enough: every reload is a full rescan.
    let (tx, rx) = mpsc::channel::<()>(1);
    let handler = move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "policy watcher error; rescanning"),
        }
        // Full means a rescan is already pending; closed means the guard was dropped.
        let _ = tx.try_send(());
    };
    let dir = engine.dir().to_path_buf();
    let watch_err = |source| PolicyError::Watch {
        dir: dir.clone(),
        source,
    };
    let mut watcher: Box<dyn Watcher + Send> = if poll {
        let config = Config::default()
            .with_poll_interval(POLL_INTERVAL)
            .with_compare_contents(true);
        Box::new(PollWatcher::new(handler, config).map_err(watch_err)?)
    } else {
        Box::new(notify::recommended_watcher(handler).map_err(watch_err)?)
    };
    watcher.watch(&dir, RecursiveMode::Recursive).map_err(watch_err)?;
    let task = runtime.spawn(reload_loop(engine, rx));
    Ok(WatchGuard {
        _watcher: watcher,
        task,
    })
}

/// Waits for a change signal (debounced) or the periodic tick, then reloads off the runtime.
async fn reload_loop(engine: Arc<PolicyEngine>, mut rx: mpsc::Receiver<()>) {
    let mut rescan = tokio::time::interval(RESCAN_EVERY);
    rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            signal = rx.recv() => {
                if signal.is_none() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            // The first tick is immediate: catches changes made before the watcher started.
            _ = rescan.tick() => {}
        }
        let engine = Arc::clone(&engine);
        match tokio::task::spawn_blocking(move || engine.reload()).await {
            Ok(report) if !report.is_empty() => tracing::info!(
                loaded = ?report.loaded,
                failed = report.failed.len(),
                removed = ?report.removed,
                "policies reloaded"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "policy reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path, time::Instant};

    use super::*;
    use crate::policy::{sample_input, Limits, Outcome};

    /// Polls `cond` until it holds and returns how long that took; fails after 3 s.
    async fn wait_for(what: &str, cond: impl Fn() -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if cond() {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn reason(engine: &PolicyEngine, name: &str) -> Option<Option<String>> {
        engine.evaluate(name, &sample_input()).map(|d| d.reason)
    }

    fn write_atomic(dir: &Path, file: &str, src: &str) {
        let tmp = dir.join(format!("{file}.tmp"));
        fs::write(&tmp, src).unwrap();
        fs::rename(tmp, dir.join(file)).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn picks_up_changes_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let engine = Arc::new(PolicyEngine::new(d, Limits::default()));
        let guard = watch(Arc::clone(&engine), false).unwrap();
        let within_1s = |t: Duration| assert!(t < Duration::from_secs(1), "took {t:?}");
        let with = |r: &str| Some(Some(r.to_owned()));

        fs::write(d.join("notes.rhai"), r#"#{allow: true, reason: "A"}"#).unwrap();
        within_1s(wait_for("create", || reason(&engine, "notes") == with("A")).await);

        fs::write(d.join("notes.rhai"), r#"#{allow: false, reason: "B"}"#).unwrap();
        within_1s(wait_for("in-place edit", || reason(&engine, "notes") == with("B")).await);

        write_atomic(d, "notes.rhai", r#"#{allow: true, reason: "C"}"#);
        within_1s(wait_for("atomic save", || reason(&engine, "notes") == with("C")).await);

        // vim: rename to backup, write a new file, delete the backup.
        fs::rename(d.join("notes.rhai"), d.join("notes.rhai~")).unwrap();
        fs::write(d.join("notes.rhai"), r#"#{allow: true, reason: "D"}"#).unwrap();
        fs::remove_file(d.join("notes.rhai~")).unwrap();
        within_1s(wait_for("vim save", || reason(&engine, "notes") == with("D")).await);

        write_atomic(d, "notes.rhai", "true &&\n  (");
        let broken = || {
            let s = engine.status();
            s.len() == 1 && s[0].error.as_deref().is_some_and(|e| e.starts_with("notes.rhai:2:"))
        };
        within_1s(wait_for("broken save reported", broken).await);
        assert_eq!(reason(&engine, "notes"), with("D"), "last good version keeps running");

        fs::rename(d.join("notes.rhai"), d.join("todo.rhai")).unwrap();
        within_1s(wait_for("rename", || !engine.has("notes") && engine.status()[0].name == "todo").await);

        fs::remove_file(d.join("todo.rhai")).unwrap();
        within_1s(wait_for("delete", || engine.status().is_empty()).await);

        drop(guard);
        fs::write(d.join("late.rhai"), "true").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!engine.has("late"), "dropping the guard stops watching");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poll_watcher_picks_up_atomic_saves() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(PolicyEngine::new(dir.path(), Limits::default()));
        let _guard = watch(Arc::clone(&engine), true).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        write_atomic(dir.path(), "notes.rhai", "false");
        let took = wait_for("poll", || {
            engine.evaluate("notes", &sample_input()).map(|d| d.outcome) == Some(Outcome::Deny)
        })
        .await;
        assert!(took < Duration::from_millis(2500), "took {took:?}");
    }

    #[test]
    fn needs_a_runtime_and_a_directory() {
        let engine = Arc::new(PolicyEngine::new("/nonexistent/gatehouse", Limits::default()));
        assert!(matches!(watch(Arc::clone(&engine), false), Err(PolicyError::NoRuntime)));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt.block_on(async { watch(engine, false) }).unwrap_err();
        assert!(matches!(err, PolicyError::Watch { .. }), "{err}");
    }
}
