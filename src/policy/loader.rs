//! The policy directory: which files are policies, reloading them into an immutable
//! [`PolicySet`] swapped atomically, and [`check`] for compiling without serving.
//!
//! A policy file is `<dir>/<name>.rhai` where `name` is a kind (`^[a-z][a-z0-9_-]{0,63}$`) or a
//! system name (`_` then `[a-z0-9_-]`, e.g. `_users`). Everything else is ignored: other
//! extensions, dotfiles (`.notes.rhai.swp`), editor scratch (`notes.rhai~`, `4913`) and
//! subdirectories. Symlinks are followed (Kubernetes ConfigMaps mount files as symlinks).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use rhai::AST;
use sha2::{Digest, Sha256};

use super::{engine::Sandbox, Decision, Diagnostic, Input, Limits, PolicyStatus, ReloadReport};
use crate::model::Kind;

/// One compiled version of one policy file.
#[derive(Debug)]
struct Loaded {
    file: PathBuf,
    /// Bare file name, used to label diagnostics (`notes.rhai:3:5: ...`).
    label: PathBuf,
    hash: [u8; 32],
    version: String,
    loaded_at: Option<String>,
    ast: AST,
}

/// A file whose current contents failed to compile or read.
#[derive(Debug, Clone)]
struct Failed {
    file: PathBuf,
    /// Hash of the failing contents, so an unchanged broken file is not recompiled (and
    /// re-logged) on every rescan; `None` for read errors, which are retried.
    hash: Option<[u8; 32]>,
    diagnostic: Diagnostic,
}

/// One immutable, consistent set of compiled policies.
///
/// A caller that needs several decisions for one request (a listing: one `list` plus one `read`
/// per item) takes one [`PolicyEngine::snapshot`] and asks it every time, so the whole request is
/// decided by one version even if a reload happens meanwhile.
#[derive(Debug)]
pub struct PolicySet {
    sandbox: Arc<Sandbox>,
    loaded: BTreeMap<String, Arc<Loaded>>,
    failed: BTreeMap<String, Failed>,
}

impl PolicySet {
    /// Evaluates policy `name`: `None` when no version of it is loaded (the kind does not exist),
    /// else a decision that fails closed.
    pub fn evaluate(&self, name: &str, input: &Input) -> Option<Decision> {
        let p = self.loaded.get(name)?;
        Some(self.sandbox.evaluate(&p.ast, &p.label, &p.version, input))
    }

    /// Whether a version of policy `name` is loaded.
    pub fn has(&self, name: &str) -> bool {
        self.loaded.contains_key(name)
    }

    /// The loaded resource kinds (names not starting with `_`), sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.loaded.keys().filter(|n| !n.starts_with('_')).cloned().collect()
    }

    /// The running version of policy `name`.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.loaded.get(name).map(|p| p.version.as_str())
    }

    /// One entry per policy file seen (loaded or failed), sorted by name.
    pub fn status(&self) -> Vec<PolicyStatus> {
        let mut out: BTreeMap<&str, PolicyStatus> = BTreeMap::new();
        for (name, p) in &self.loaded {
            out.insert(
                name,
                PolicyStatus {
                    name: name.clone(),
                    file: p.file.clone(),
                    version: Some(p.version.clone()),
                    loaded_at: p.loaded_at.clone(),
                    error: None,
                },
            );
        }
        for (name, f) in &self.failed {
            let entry = out.entry(name).or_insert_with(|| PolicyStatus {
                name: name.clone(),
                file: f.file.clone(),
                version: None,
                loaded_at: None,
                error: None,
            });
            entry.error = Some(f.diagnostic.to_string());
        }
        out.into_values().collect()
    }
}

/// Owns the policy directory and the current [`PolicySet`]. `Send + Sync`; share it as
/// `Arc<PolicyEngine>`.
#[derive(Debug)]
pub struct PolicyEngine {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    current: ArcSwap<PolicySet>,
    /// Serializes reloads (watcher, periodic rescan, explicit calls) so none loses another's work.
    reload_lock: Mutex<()>,
}

impl PolicyEngine {
    /// An engine for `dir` with an empty set; call [`reload`](Self::reload) to load.
    pub fn new(dir: impl Into<PathBuf>, limits: Limits) -> Self {
        Self::with_setup(dir, limits, |_| {})
    }

    /// Like [`new`](Self::new), with a hook to register script helpers on the Rhai engine.
    /// The sandbox settings are applied after `setup`, so it cannot loosen them.
    pub fn with_setup(dir: impl Into<PathBuf>, limits: Limits, setup: impl FnOnce(&mut rhai::Engine)) -> Self {
        let sandbox = Arc::new(Sandbox::new(&limits, setup));
        let empty = PolicySet {
            sandbox: Arc::clone(&sandbox),
            loaded: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        Self {
            dir: dir.into(),
            sandbox,
            current: ArcSwap::from_pointee(empty),
            reload_lock: Mutex::new(()),
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current set; hold it for all decisions of one request.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Evaluates policy `name` in the current set (see [`PolicySet::evaluate`]).
    pub fn evaluate(&self, name: &str, input: &Input) -> Option<Decision> {
        self.current.load().evaluate(name, input)
    }

    /// Whether a version of policy `name` is loaded.
    pub fn has(&self, name: &str) -> bool {
        self.current.load().has(name)
    }

    /// The loaded resource kinds (names not starting with `_`), sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.current.load().kinds()
    }

    /// One entry per policy file seen (loaded or failed), sorted by name.
    pub fn status(&self) -> Vec<PolicyStatus> {
        self.current.load().status()
    }

    /// Rescans the directory and swaps in a new set: unchanged files keep their compiled version,
    /// changed files are recompiled, a file that fails keeps its last good version (and the
    /// error is reported), and vanished files are dropped.
    pub fn reload(&self) -> ReloadReport {
        let _serial = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let mut report = ReloadReport::default();
        let files = match policy_files(&self.dir) {
            Ok(files) => files,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read policy directory");
                report.error = Some(format!("cannot read `{}`: {e}", self.dir.display()));
                return report;
            }
        };
        let mut loaded = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for (name, file) in files {
            let label = PathBuf::from(format!("{name}.rhai"));
            let prev = old.loaded.get(&name);
            let fail = |hash, line, col, message| Failed {
                file: file.clone(),
                hash,
                diagnostic: Diagnostic {
                    file: label.clone(),
                    line,
                    col,
                    message,
                },
            };
            let outcome = match read_policy(&file) {
                // Vanished mid-scan: treat as removed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(fail(None, 0, 0, format!("cannot read: {e}"))),
                Ok(bytes) => {
                    let hash: [u8; 32] = Sha256::digest(&bytes).into();
                    if let Some(p) = prev.filter(|p| p.hash == hash) {
                        loaded.insert(name, Arc::clone(p));
                        continue;
                    }
                    if let Some(f) = old.failed.get(&name).filter(|f| f.hash == Some(hash)) {
                        failed.insert(name.clone(), f.clone());
                        if let Some(p) = prev {
                            loaded.insert(name, Arc::clone(p));
                        }
                        continue;
                    }
                    match String::from_utf8(bytes) {
                        Err(_) => Err(fail(Some(hash), 0, 0, "not valid UTF-8".into())),
                        Ok(src) => self
                            .sandbox
                            .compile(&label, &src)
                            .map(|ast| (hash, ast))
                            .map_err(|d| fail(Some(hash), d.line, d.col, d.message)),
                    }
                }
            };
            match outcome {
                Ok((hash, ast)) => {
                    let version = hex16(&hash);
                    tracing::info!(policy = %name, %version, "policy loaded");
                    let loaded_at = time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok();
                    let p = Loaded {
                        file,
                        label,
                        hash,
                        version,
                        loaded_at,
                        ast,
                    };
                    loaded.insert(name.clone(), Arc::new(p));
                    report.loaded.push(name);
                }
                Err(f) => {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        kept = prev.map(|p| p.version.as_str()),
                        "policy not loaded: {}", f.diagnostic
                    );
                    report.failed.push(f.diagnostic.clone());
                    if let Some(p) = prev {
                        loaded.insert(name.clone(), Arc::clone(p));
                    }
                    failed.insert(name, f);
                }
            }
        }
        let seen: BTreeSet<&String> = old.loaded.keys().chain(old.failed.keys()).collect();
        report.removed = seen
            .into_iter()
            .filter(|n| !loaded.contains_key(*n) && !failed.contains_key(*n))
            .cloned()
            .collect();
        for name in &report.removed {
            tracing::info!(policy = %name, "policy removed");
        }
        let set = PolicySet {
            sandbox: Arc::clone(&self.sandbox),
            loaded,
            failed,
        };
        self.current.store(Arc::new(set));
        report
    }
}

/// Compiles every policy under `path` (a file, or a directory of `*.rhai`) without serving.
///
/// Diagnostics name files as given (`policies/notes.rhai:3:5: message`). In a directory, a
/// `*.rhai` file whose name is not a valid policy name is reported too, since the server would
/// silently ignore it. An empty result means everything compiles.
pub fn check(path: &Path, limits: &Limits) -> Vec<Diagnostic> {
    let sandbox = Sandbox::new(limits, |_| {});
    let io_diag = |file: &Path, e: io::Error| Diagnostic {
        file: file.to_path_buf(),
        line: 0,
        col: 0,
        message: e.to_string(),
    };
    let compile = |file: &Path| match read_policy(file)
        .and_then(|b| String::from_utf8(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8")))
    {
        Ok(src) => sandbox.compile(file, &src).err(),
        Err(e) => Some(io_diag(file, e)),
    };
    if !path.is_dir() {
        return compile(path).into_iter().collect();
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return vec![io_diag(path, e)],
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rhai") && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let file = path.join(&name);
        if !file.is_file() {
            continue;
        }
        if policy_name(&name).is_none() {
            out.push(Diagnostic {
                file,
                line: 0,
                col: 0,
                message: "not a valid policy name (kinds match ^[a-z][a-z0-9_-]{0,63}$, system \
                          policies start with `_`); the server ignores this file"
                    .into(),
            });
        } else {
            out.extend(compile(&file));
        }
    }
    out
}

/// The policy name of a file name, or `None` when the loader ignores the file.
fn policy_name(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".rhai")?;
    let ok = match stem.strip_prefix('_') {
        Some(rest) => {
            !rest.is_empty()
                && stem.len() <= 64
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        }
        None => Kind::parse(stem).is_ok(),
    };
    ok.then_some(stem)
}

/// `(name, path)` of every policy file in `dir` (regular files, symlinks followed).
fn policy_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().and_then(policy_name).map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if path.is_file() {
            out.push((name, path));
        }
    }
    Ok(out)
}

/// The first 16 hex digits of a SHA-256: the policy `version`.
fn hex16(hash: &[u8; 32]) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        thread,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::policy::{sample_input, Outcome};

    const ALLOW_A: &str = "// version A\ntrue\n";
    const DENY_B: &str = "// version B\n#{allow: false, reason: \"B\"}\n";

    fn setup() -> (tempfile::TempDir, PolicyEngine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = PolicyEngine::new(dir.path(), Limits::default());
        (dir, engine)
    }

    fn write(dir: &Path, file: &str, src: &str) {
        fs::write(dir.join(file), src).unwrap();
    }

    /// Writes a temp file and renames it over the target, as editors do.
    fn write_atomic(dir: &Path, file: &str, src: &str) {
        let tmp = dir.join(format!(".{file}.swp"));
        fs::write(&tmp, src).unwrap();
        fs::rename(tmp, dir.join(file)).unwrap();
    }

    fn decide(engine: &PolicyEngine, name: &str) -> Option<Decision> {
        engine.evaluate(name, &sample_input())
    }

    #[test]
    fn engine_and_sets_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PolicyEngine>();
        send_sync::<Arc<PolicySet>>();
    }

    #[test]
    fn policy_names() {
        for ok in ["notes.rhai", "a-b_c9.rhai", "_users.rhai", "_policies.rhai"] {
            assert!(policy_name(ok).is_some(), "{ok}");
        }
        for ignored in [
            ".notes.rhai.swp",
            ".notes.rhai",
            "notes.rhai~",
            "notes.rhai.tmp",
            "notes.tmp",
            "4913",
            "notes.txt",
            "Notes.rhai",
            "_.rhai",
            "_Users.rhai",
            "9x.rhai",
            ".rhai",
        ] {
            assert!(policy_name(ignored).is_none(), "{ignored}");
        }
    }

    #[test]
    fn reload_lifecycle() {
        let (dir, engine) = setup();
        let d = dir.path();
        assert_eq!(engine.reload(), ReloadReport::default());
        assert!(decide(&engine, "notes").is_none());

        write(d, "notes.rhai", ALLOW_A);
        write(d, "_users.rhai", "false");
        for (file, src) in [
            (".notes.rhai.swp", "x"),
            ("notes.rhai~", "x"),
            ("4913", ""),
            ("Bad.rhai", "x"),
        ] {
            write(d, file, src);
        }
        fs::create_dir(d.join("sub.rhai")).unwrap();
        let report = engine.reload();
        assert_eq!(report.loaded, ["_users", "notes"]);
        assert!(report.failed.is_empty() && report.removed.is_empty());
        assert_eq!(engine.kinds(), ["notes"]);
        assert!(engine.has("_users") && !engine.has("Bad"));
        let a = decide(&engine, "notes").unwrap();
        assert_eq!(a.outcome, Outcome::Allow);
        assert_eq!(a.policy_version.len(), 16);

        // Unchanged files are not recompiled.
        assert!(engine.reload().is_empty());

        // Edit: new version.
        write(d, "notes.rhai", DENY_B);
        assert_eq!(engine.reload().loaded, ["notes"]);
        let b = decide(&engine, "notes").unwrap();
        assert_eq!((b.outcome, b.reason.as_deref()), (Outcome::Deny, Some("B")));
        assert_ne!(a.policy_version, b.policy_version);

        // Broken edit: the last good version keeps running; status shows the error.
        write(d, "notes.rhai", "true &&\n  let x = ;");
        let report = engine.reload();
        assert_eq!(report.failed.len(), 1);
        assert!(
            report.failed[0].to_string().starts_with("notes.rhai:2:"),
            "{:?}",
            report.failed
        );
        assert_eq!(decide(&engine, "notes").unwrap().policy_version, b.policy_version);
        let status = engine.status();
        let notes = status.iter().find(|s| s.name == "notes").unwrap();
        assert_eq!(notes.version.as_deref(), Some(b.policy_version.as_str()));
        assert!(
            notes.error.as_deref().unwrap().starts_with("notes.rhai:2:"),
            "{notes:?}"
        );
        assert!(notes.loaded_at.is_some());
        assert!(engine.reload().is_empty(), "an unchanged broken file is not recompiled");

        // A broken file with no good version is not a kind, but shows in status.
        write(d, "todo.rhai", "(((");
        engine.reload();
        assert!(!engine.has("todo") && decide(&engine, "todo").is_none());
        let todo = engine.status().into_iter().find(|s| s.name == "todo").unwrap();
        assert_eq!((todo.version, todo.loaded_at), (None, None));
        assert!(todo.error.unwrap().starts_with("todo.rhai:1:"));

        // Fixing the file clears the error.
        write_atomic(d, "notes.rhai", ALLOW_A);
        engine.reload();
        assert_eq!(decide(&engine, "notes").unwrap().policy_version, a.policy_version);
        let names: Vec<_> = engine
            .status()
            .into_iter()
            .map(|s| (s.name, s.error.is_some()))
            .collect();
        assert_eq!(
            names,
            [("_users".into(), false), ("notes".into(), false), ("todo".into(), true)]
        );

        // Delete: the kind and its errors are gone.
        fs::remove_file(d.join("notes.rhai")).unwrap();
        fs::remove_file(d.join("todo.rhai")).unwrap();
        assert_eq!(engine.reload().removed, ["notes", "todo"]);
        assert!(decide(&engine, "notes").is_none());
        assert_eq!(engine.status().len(), 1);
    }

    #[test]
    fn snapshot_keeps_one_version() {
        let (dir, engine) = setup();
        write(dir.path(), "notes.rhai", ALLOW_A);
        engine.reload();
        let snap = engine.snapshot();
        write(dir.path(), "notes.rhai", DENY_B);
        fs::remove_file(dir.path().join("notes.rhai")).unwrap();
        engine.reload();
        assert!(!engine.has("notes"));
        assert_eq!(snap.evaluate("notes", &sample_input()).unwrap().outcome, Outcome::Allow);
    }

    #[test]
    fn missing_directory_is_empty() {
        let engine = PolicyEngine::new("/nonexistent/gatehouse-policies", Limits::default());
        assert_eq!(engine.reload(), ReloadReport::default());
        assert!(engine.kinds().is_empty());
    }

    /// Readers racing a writer that rewrites the file (in place, in two chunks, and by rename)
    /// while two threads reload: every decision comes from one whole version, never None, never
    /// Error. Torn reads (empty or half-written files) fail to compile and keep the last version.
    #[test]
    fn concurrent_reloads_are_consistent() {
        let (dir, engine) = setup();
        let d = dir.path().to_path_buf();
        write(&d, "notes.rhai", ALLOW_A);
        engine.reload();
        let engine = Arc::new(engine);
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |f: fn(&PolicyEngine, &mut [usize; 2])| {
            let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
            thread::spawn(move || {
                let mut seen = [0usize; 2];
                while !stop.load(Ordering::Relaxed) {
                    f(&engine, &mut seen);
                }
                seen
            })
        };
        let reader = |engine: &PolicyEngine, seen: &mut [usize; 2]| {
            let d = decide(engine, "notes").expect("never None");
            match (d.outcome, d.reason.as_deref()) {
                (Outcome::Allow, None) => seen[0] += 1,
                (Outcome::Deny, Some("B")) => seen[1] += 1,
                other => panic!("torn or failed decision: {other:?} {d:?}"),
            }
        };
        let reloader = |engine: &PolicyEngine, seen: &mut [usize; 2]| {
            seen[usize::from(engine.reload().failed.is_empty())] += 1;
        };
        let threads = [spawn(reader), spawn(reader), spawn(reloader)];
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut writes = 0;
        while Instant::now() < deadline {
            let src = if writes % 2 == 0 { DENY_B } else { ALLOW_A };
            if writes % 4 < 2 {
                let mut f = fs::File::create(d.join("notes.rhai")).unwrap();
                let (head, tail) = src.split_at(src.len() / 2);
                io::Write::write_all(&mut f, head.as_bytes()).unwrap();
                thread::yield_now();
                io::Write::write_all(&mut f, tail.as_bytes()).unwrap();
            } else {
                write_atomic(&d, "notes.rhai", src);
            }
            engine.reload();
            writes += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let [a, b, reloads] = threads.map(|t| t.join().unwrap());
        assert!(writes > 10 && a[0] > 0 && a[1] + b[1] > 0, "{writes} {a:?} {b:?}");
        assert!(reloads[1] > 0, "{reloads:?}");
    }

    #[test]
    fn check_reports_file_line_col() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "good.rhai", "true");
        write(d, "bad.rhai", "let x = ;\n");
        write(d, "Wrong.rhai", "true");
        write(d, ".hidden.rhai", "(((");
        write(d, "notes.txt", "(((");
        let limits = Limits::default();
        let diags = check(d, &limits);
        let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with(&format!("{}:", d.join("Wrong.rhai").display())));
        let bad = d.join("bad.rhai");
        assert!(shown[1].starts_with(&format!("{}:1:9: ", bad.display())), "{shown:?}");
        assert_eq!(check(&bad, &limits), diags[1..]);
        assert!(check(&d.join("good.rhai"), &limits).is_empty());
        let missing = check(&d.join("missing.rhai"), &limits);
        assert_eq!((missing.len(), missing[0].line), (1, 0));
    }
}

/// Largest policy file read; a bigger one (or `/dev/zero` behind a symlink) fails to load
/// instead of exhausting memory.
pub const MAX_POLICY_BYTES: u64 = 256 * 1024;

/// Reads a policy file: a regular file (symlinks followed) of at most [`MAX_POLICY_BYTES`].
fn read_policy(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_POLICY_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod read_limit_tests {
    use super::*;

    #[test]
    fn oversized_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.rhai");
        fs::write(&big, "true\n".repeat(100_000)).unwrap();
        assert!(read_policy(&big).is_err());
        assert!(read_policy(Path::new("/dev/zero")).is_err());
        let ok = dir.path().join("ok.rhai");
        fs::write(&ok, "true").unwrap();
        assert_eq!(read_policy(&ok).unwrap(), b"true");
    }
}
