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

/// Starts watching `engine.dir()` (non-recursively) and reloading on changes; it also reloads
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
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(watch_err)?;
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
