//! The policy directory: which files are policies, reloading them into an immutable
//! [`PolicySet`] swapped atomically, [`check`] for compiling without serving, and
//! [`run_tests`] for `gatehouse policy test`.
//!
//! A policy file is `<dir>/<name>.rhai` where `name` is a kind (`^[a-z][a-z0-9_-]{0,63}$`) or a
//! system name (`_` then `[a-z0-9_-]`, e.g. `_users`). Libraries are `<dir>/lib/<kind-like
//! name>.rhai`, imported as `import "lib/<name>" as m;`. Tests are `<dir>/tests/<name>.toml`.
//! Everything else is ignored: other extensions, dotfiles (`.notes.rhai.swp`), editor scratch
//! (`notes.rhai~`, `4913`) and other subdirectories. Symlinks are followed (Kubernetes
//! ConfigMaps mount files as symlinks).
//!
//! A policy is recompiled when its file, a library it imports or its test file changes. A new
//! version goes live only if it compiles and, when it has tests, all of them pass; otherwise the
//! last good version keeps running and the status says why. A broken library therefore keeps
//! its dependants on their last good versions.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use rhai::AST;
use sha2::{Digest, Sha256};

use super::{
    engine::{LibModules, Sandbox},
    testing::{self, CaseResult, TestCase},
    Decision, Diagnostic, Input, Limits, PolicyStatus, ReloadReport,
};
use crate::model::Kind;

/// One compiled version of one policy file.
#[derive(Debug)]
struct Loaded {
    file: PathBuf,
    /// Bare file name, used to label diagnostics (`notes.rhai:3:5: ...`).
    label: PathBuf,
    version: String,
    /// What this version was built from: file, imported libraries, test file.
    fingerprint: [u8; 32],
    loaded_at: Option<String>,
    ast: AST,
    /// Libraries it imports.
    deps: Vec<String>,
    /// Cases of its test file that passed (all of them, or it would not be loaded); `None` when
    /// it has no test file.
    tests_passed: Option<usize>,
}

/// A file whose current contents failed to compile, read, or pass its tests.
#[derive(Debug, Clone)]
struct Failed {
    file: PathBuf,
    /// What the failing attempt was built from (file, all libraries, test file), so an
    /// unchanged broken file is not recompiled (and re-logged) on every rescan; `None` for read
    /// errors, which are retried.
    fingerprint: Option<[u8; 32]>,
    diagnostic: Diagnostic,
    /// The test cases that failed, when that is why.
    failing_tests: Vec<String>,
}

/// One library file: its content hash and compiled module, or why it does not compile.
#[derive(Debug, Clone)]
struct Lib {
    file: PathBuf,
    hash: [u8; 32],
    loaded_at: Option<String>,
    result: Result<rhai::Shared<rhai::Module>, Diagnostic>,
}

/// One test file: its hash and cases, or why it cannot be read.
#[derive(Debug, Clone)]
struct Tests {
    hash: [u8; 32],
    cases: Result<Arc<Vec<TestCase>>, Diagnostic>,
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
    libs: BTreeMap<String, Lib>,
    modules: Arc<LibModules>,
    tests: BTreeMap<String, Tests>,
}

/// A policy compiled from a given source (not the file), to try before saving: dry runs,
/// replays and remote edits.
#[derive(Debug)]
pub struct Candidate {
    sandbox: Arc<Sandbox>,
    label: PathBuf,
    name: String,
    ast: AST,
    version: String,
}

impl Candidate {
    /// Evaluates the candidate (fails closed, as a loaded policy does).
    pub fn evaluate(&self, input: &Input) -> Decision {
        self.sandbox.evaluate(&self.ast, &self.label, &self.version, input)
    }

    /// The version it would have once saved.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The policy name it was compiled for.
    pub fn name(&self) -> &str {
        &self.name
    }
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

    /// Compiles `source` as policy `name` against this set's libraries, without loading it.
    pub fn compile_candidate(&self, name: &str, source: &str) -> Result<Candidate, Diagnostic> {
        let label = PathBuf::from(format!("{name}.rhai"));
        let compiled = self.sandbox.compile(&label, source, &self.modules)?;
        let hash: [u8; 32] = Sha256::digest(source.as_bytes()).into();
        let version = version_of(&hash, &compiled.deps, &self.libs);
        Ok(Candidate {
            sandbox: Arc::clone(&self.sandbox),
            label,
            name: name.to_owned(),
            ast: compiled.ast,
            version,
        })
    }

    /// Runs policy `name`'s test cases (as loaded with this set) against `candidate`: `None`
    /// when it has no test file, else each case's result; a test file that does not parse is an
    /// error.
    pub fn test_candidate(&self, candidate: &Candidate) -> Result<Option<Vec<CaseResult>>, Diagnostic> {
        match self.tests.get(&candidate.name) {
            None => Ok(None),
            Some(Tests { cases: Err(e), .. }) => Err(e.clone()),
            Some(Tests { cases: Ok(cases), .. }) => Ok(Some(testing::run_cases(
                &self.sandbox,
                &candidate.ast,
                &candidate.label,
                &candidate.version,
                &candidate.name,
                cases,
            ))),
        }
    }

    /// One entry per policy and library file seen (loaded or failed), sorted by name; libraries
    /// are named `lib/<name>`.
    pub fn status(&self) -> Vec<PolicyStatus> {
        let mut out: BTreeMap<String, PolicyStatus> = BTreeMap::new();
        for (name, p) in &self.loaded {
            out.insert(
                name.clone(),
                PolicyStatus {
                    name: name.clone(),
                    file: p.file.clone(),
                    version: Some(p.version.clone()),
                    loaded_at: p.loaded_at.clone(),
                    error: None,
                    imports: p.deps.clone(),
                    tests_passed: p.tests_passed,
                    failing_tests: Vec::new(),
                },
            );
        }
        for (name, f) in &self.failed {
            let entry = out.entry(name.clone()).or_insert_with(|| PolicyStatus {
                name: name.clone(),
                file: f.file.clone(),
                version: None,
                loaded_at: None,
                error: None,
                imports: Vec::new(),
                tests_passed: None,
                failing_tests: Vec::new(),
            });
            entry.error = Some(f.diagnostic.to_string());
            entry.failing_tests.clone_from(&f.failing_tests);
        }
        for (name, lib) in &self.libs {
            let name = format!("lib/{name}");
            out.insert(
                name.clone(),
                PolicyStatus {
                    name,
                    file: lib.file.clone(),
                    // A library that does not compile has no version in force (its dependants
                    // keep theirs).
                    version: lib.result.is_ok().then(|| hex16(&lib.hash)),
                    loaded_at: lib.loaded_at.clone(),
                    error: lib.result.as_ref().err().map(ToString::to_string),
                    imports: Vec::new(),
                    tests_passed: None,
                    failing_tests: Vec::new(),
                },
            );
        }
        out.into_values().collect()
    }
}

/// Owns the policy directory and the current [`PolicySet`]. `Send + Sync`; share it as
/// `Arc<PolicyEngine>`.
pub struct PolicyEngine {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    current: ArcSwap<PolicySet>,
    /// Serializes reloads (watcher, periodic rescan, explicit calls) so none loses another's work.
    reload_lock: Mutex<()>,
    /// Told of every non-empty reload (metrics).
    observer: std::sync::OnceLock<ReloadObserver>,
}

type ReloadObserver = Box<dyn Fn(&ReloadReport) + Send + Sync>;

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
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
            libs: BTreeMap::new(),
            modules: Arc::new(LibModules::new()),
            tests: BTreeMap::new(),
        };
        Self {
            dir: dir.into(),
            sandbox,
            current: ArcSwap::from_pointee(empty),
            reload_lock: Mutex::new(()),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Calls `f` with the report of every reload that changed or failed something, from now on
    /// (watcher, rescans, `POST /policies/reload`, remote edits). Only the first observer set is
    /// kept; returns `false` when one was already set.
    pub fn observe_reloads(&self, f: impl Fn(&ReloadReport) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(f)).is_ok()
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

    /// Rescans the directory and swaps in a new set: unchanged policies keep their compiled
    /// version; a policy whose file, imported libraries or tests changed is recompiled and, when
    /// it has tests, tested; a version that fails either keeps the last good one running (and the
    /// error is reported); vanished files are dropped.
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
                if let Some(observe) = self.observer.get() {
                    observe(&report);
                }
                return report;
            }
        };
        let libs = load_libs(&self.sandbox, &self.dir, Path::new("lib"), &old.libs, &mut report);
        let modules = Arc::new(modules_of(&libs));
        let tests = load_tests(&self.dir, &old.tests);
        for (name, t) in &tests {
            let new = old.tests.get(name).is_none_or(|o| o.hash != t.hash);
            if new && !files.iter().any(|(n, _)| n == name) {
                tracing::warn!(tests = %format!("tests/{name}.toml"), "test file for a policy that does not exist (a misspelt name?)");
            }
        }
        let mut loaded = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for (name, file) in files {
            let label = PathBuf::from(format!("{name}.rhai"));
            let prev = old.loaded.get(&name);
            let test_hash = tests.get(&name).map(|t| t.hash);
            let fail = |fingerprint, line, col, message| Failed {
                file: file.clone(),
                fingerprint,
                diagnostic: Diagnostic {
                    file: label.clone(),
                    line,
                    col,
                    message,
                },
                failing_tests: Vec::new(),
            };
            let outcome = match read_policy(&file) {
                // Vanished mid-scan: treat as removed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(fail(None, 0, 0, format!("cannot read: {e}"))),
                Ok(bytes) => {
                    let hash: [u8; 32] = Sha256::digest(&bytes).into();
                    let all_libs: Vec<String> = libs.keys().cloned().collect();
                    let failed_fp = fingerprint(&hash, &all_libs, &libs, test_hash);
                    if let Some(f) = old.failed.get(&name).filter(|f| f.fingerprint == Some(failed_fp)) {
                        failed.insert(name.clone(), f.clone());
                        if let Some(p) = prev {
                            loaded.insert(name, Arc::clone(p));
                        }
                        continue;
                    }
                    if let Some(p) = prev.filter(|p| {
                        !old.failed.contains_key(&name)
                            && p.fingerprint == fingerprint(&hash, &p.deps, &libs, test_hash)
                    }) {
                        loaded.insert(name, Arc::clone(p));
                        continue;
                    }
                    let src = if is_reserved(&name) {
                        Err(format!(
                            "`{name}` is a reserved name (the path of `POST /policies/{name}`); rename the file"
                        ))
                    } else {
                        String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_owned())
                    };
                    match src {
                        Err(message) => Err(fail(Some(failed_fp), 0, 0, message)),
                        Ok(src) => match self.sandbox.compile(&label, &src, &modules) {
                            Err(d) => Err(fail(Some(failed_fp), d.line, d.col, d.message)),
                            Ok(compiled) => {
                                let version = version_of(&hash, &compiled.deps, &libs);
                                let tested = match tests.get(&name).map(|t| &t.cases) {
                                    None => Ok(None),
                                    Some(Err(d)) => Err(fail(
                                        Some(failed_fp),
                                        0,
                                        0,
                                        format!("not activated: its tests cannot be read: {d}"),
                                    )),
                                    Some(Ok(cases)) => {
                                        let results = testing::run_cases(
                                            &self.sandbox,
                                            &compiled.ast,
                                            &label,
                                            &version,
                                            &name,
                                            cases,
                                        );
                                        let failing: Vec<String> =
                                            results.iter().filter(|r| !r.passed).map(ToString::to_string).collect();
                                        if failing.is_empty() {
                                            Ok(Some(results.len()))
                                        } else {
                                            let mut f = fail(
                                                Some(failed_fp),
                                                0,
                                                0,
                                                format!(
                                                    "not activated: {} of {} tests in tests/{name}.toml failed; first: {}",
                                                    failing.len(),
                                                    results.len(),
                                                    failing[0]
                                                ),
                                            );
                                            f.failing_tests = failing;
                                            Err(f)
                                        }
                                    }
                                };
                                tested.map(|tests_passed| {
                                    let fp = fingerprint(&hash, &compiled.deps, &libs, test_hash);
                                    (version, fp, compiled, tests_passed)
                                })
                            }
                        },
                    }
                }
            };
            match outcome {
                Ok((version, fingerprint, compiled, tests_passed)) => {
                    let same_version = prev.filter(|p| p.version == version);
                    if same_version.is_none() {
                        tracing::info!(policy = %name, %version, "policy loaded");
                        report.loaded.push(name.clone());
                    }
                    let p = Loaded {
                        file,
                        label,
                        loaded_at: same_version.map_or_else(now_rfc3339, |p| p.loaded_at.clone()),
                        version,
                        fingerprint,
                        ast: compiled.ast,
                        deps: compiled.deps,
                        tests_passed,
                    };
                    loaded.insert(name, Arc::new(p));
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
            libs,
            modules,
            tests,
        };
        self.current.store(Arc::new(set));
        if let Some(observe) = self.observer.get().filter(|_| !report.is_empty()) {
            observe(&report);
        }
        report
    }
}

fn now_rfc3339() -> Option<String> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// What a policy version is built from: its file, the libraries it imports and its tests.
fn fingerprint(hash: &[u8; 32], deps: &[String], libs: &BTreeMap<String, Lib>, tests: Option<[u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(hash);
    for dep in deps {
        h.update(dep.as_bytes());
        h.update(libs.get(dep).map_or([0; 32], |l| l.hash));
    }
    h.update(tests.map_or([0; 32], |t| t));
    h.finalize().into()
}

/// The version of a policy: the file's hash, or with imports, the hash of the file and the
/// libraries it imports (so a library change makes a new version of each dependant).
fn version_of(hash: &[u8; 32], deps: &[String], libs: &BTreeMap<String, Lib>) -> String {
    if deps.is_empty() {
        return hex16(hash);
    }
    let mut h = Sha256::new();
    h.update(hash);
    for dep in deps {
        h.update(dep.as_bytes());
        h.update(libs.get(dep).map_or([0; 32], |l| l.hash));
    }
    hex16(&h.finalize().into())
}

/// `(stem, path)` of the entries `<dir>/<stem><ext>` whose stem is accepted; nothing when the
/// directory does not exist. Entries that are not regular files (directories, FIFOs, dangling
/// symlinks) are included on purpose: reading them fails, and a test or library that cannot be
/// read must block what depends on it, not vanish (fail closed).
fn files_in(dir: &Path, ext: &str, accept: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_suffix(ext).filter(|s| accept(s))?.to_owned();
            Some((stem, entry.path()))
        })
        .collect()
}

/// Reads and compiles `<dir>/lib/*.rhai`, reusing `old` entries whose files did not change.
/// `label_dir` prefixes the diagnostics' file names (`lib` in the server, the full path in
/// [`check`]).
fn load_libs(
    sandbox: &Sandbox,
    dir: &Path,
    label_dir: &Path,
    old: &BTreeMap<String, Lib>,
    report: &mut ReloadReport,
) -> BTreeMap<String, Lib> {
    let mut out = BTreeMap::new();
    for (name, file) in files_in(&dir.join("lib"), ".rhai", |n| Kind::parse(n).is_ok()) {
        let label = label_dir.join(format!("{name}.rhai"));
        let bytes = match read_policy(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                let diag = Diagnostic::whole_file(label, format!("cannot read: {e}"));
                report.failed.push(diag.clone());
                out.insert(
                    name,
                    Lib {
                        file,
                        hash: [0; 32],
                        loaded_at: None,
                        result: Err(diag),
                    },
                );
                continue;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(lib) = old.get(&name).filter(|l| l.hash == hash) {
            out.insert(name, lib.clone());
            continue;
        }
        let result = match String::from_utf8(bytes) {
            Ok(src) => sandbox.compile_lib(&label, &src),
            Err(_) => Err(Diagnostic::whole_file(label.clone(), "not valid UTF-8")),
        };
        match &result {
            Ok(_) => {
                tracing::debug!(library = %name, version = %hex16(&hash), "policy library loaded");
                report.loaded.push(format!("lib/{name}"));
            }
            Err(d) => {
                tracing::warn!("policy library not loaded (its dependants keep their versions): {d}");
                report.failed.push(d.clone());
            }
        }
        out.insert(
            name,
            Lib {
                file,
                hash,
                loaded_at: now_rfc3339(),
                result,
            },
        );
    }
    out
}

fn modules_of(libs: &BTreeMap<String, Lib>) -> LibModules {
    libs.iter()
        .map(|(name, lib)| (name.clone(), lib.result.clone().map_err(|d| d.to_string())))
        .collect()
}

/// Reads `<dir>/tests/*.toml`, reusing parsed entries whose files did not change.
fn load_tests(dir: &Path, old: &BTreeMap<String, Tests>) -> BTreeMap<String, Tests> {
    let mut out = BTreeMap::new();
    for (name, file) in files_in(&dir.join("tests"), ".toml", is_policy_name) {
        let label = PathBuf::from(format!("tests/{name}.toml"));
        let bytes = match read_policy(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                let diag = Diagnostic::whole_file(label, format!("cannot read: {e}"));
                out.insert(
                    name,
                    Tests {
                        hash: [0xff; 32],
                        cases: Err(diag),
                    },
                );
                continue;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(t) = old.get(&name).filter(|t| t.hash == hash) {
            out.insert(name, t.clone());
            continue;
        }
        let cases = String::from_utf8(bytes)
            .map_err(|_| Diagnostic::whole_file(label.clone(), "not valid UTF-8"))
            .and_then(|text| testing::parse_tests(&label, &text))
            .map(Arc::new);
        out.insert(name, Tests { hash, cases });
    }
    out
}

/// Compiles every policy under `path` (a file, or a directory of `*.rhai`) without serving,
/// with the libraries of `lib/` beside it.
///
/// Diagnostics name files as given (`policies/notes.rhai:3:5: message`). In a directory, a
/// `*.rhai` file whose name is not a valid policy name is reported too, since the server would
/// silently ignore it, and so is every library that does not compile. An empty result means
/// everything compiles.
pub fn check(path: &Path, limits: &Limits) -> Vec<Diagnostic> {
    check_with(path, limits, |_| {})
}

/// [`check`] with plugin helpers registered by `setup` (as the server does).
pub fn check_with(path: &Path, limits: &Limits, setup: impl FnOnce(&mut rhai::Engine)) -> Vec<Diagnostic> {
    let sandbox = Sandbox::new(limits, setup);
    let io_diag = |file: &Path, e: io::Error| Diagnostic::whole_file(file.to_path_buf(), e.to_string());
    let is_dir = path.is_dir();
    let dir = if is_dir {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut lib_report = ReloadReport::default();
    let libs = load_libs(&sandbox, &dir, &dir.join("lib"), &BTreeMap::new(), &mut lib_report);
    let modules = Arc::new(modules_of(&libs));
    let compile = |file: &Path| match read_policy(file)
        .and_then(|b| String::from_utf8(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8")))
    {
        Ok(src) => sandbox.compile(file, &src, &modules).err(),
        Err(e) => Some(io_diag(file, e)),
    };
    if !is_dir {
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
    let mut out = lib_report.failed;
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

/// The result of one test file in [`run_tests`].
#[derive(Debug, Clone)]
pub struct TestFileReport {
    /// The test file.
    pub file: PathBuf,
    /// The policy it tests.
    pub policy: String,
    /// Each case's result; empty when the file or its policy could not be used.
    pub results: Vec<CaseResult>,
    /// Why no case could run (the file does not parse, the policy is missing or does not
    /// compile).
    pub error: Option<String>,
}

impl TestFileReport {
    /// Cases that failed (an unusable file counts as one failure).
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count() + usize::from(self.error.is_some())
    }
}

/// Runs every `<dir>/tests/*.toml` against the policies of `dir` as they are on disk (compiled
/// with the libraries of `dir/lib`, without the activation gate), sorted by file name.
pub fn run_tests(
    dir: &Path,
    limits: &Limits,
    setup: impl FnOnce(&mut rhai::Engine),
) -> Result<Vec<TestFileReport>, Diagnostic> {
    let sandbox = Sandbox::new(limits, setup);
    let tests_dir = dir.join("tests");
    if !dir.is_dir() {
        return Err(Diagnostic::whole_file(dir, "not a policy directory"));
    }
    let entries = match fs::read_dir(&tests_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Diagnostic::whole_file(
                tests_dir,
                format!("cannot read the test directory: {e}"),
            ))
        }
    };
    // Every `*.toml`, whatever it is: one that cannot be read is a failure, not a skip.
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut lib_report = ReloadReport::default();
    let libs = load_libs(&sandbox, dir, &dir.join("lib"), &BTreeMap::new(), &mut lib_report);
    let modules = Arc::new(modules_of(&libs));
    let mut out = Vec::new();
    for file in files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let mut report = TestFileReport {
            file: file.clone(),
            policy: stem.clone(),
            results: Vec::new(),
            error: None,
        };
        let policy_file = dir.join(format!("{stem}.rhai"));
        let text = read_policy(&file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))
            .and_then(|b| String::from_utf8(b).map_err(|_| format!("{}: not valid UTF-8", file.display())));
        let cases = text.and_then(|t| testing::parse_tests(&file, &t).map_err(|d| d.to_string()));
        let source = read_policy(&policy_file)
            .map_err(|e| format!("{}: cannot read the policy it tests: {e}", policy_file.display()))
            .and_then(|b| String::from_utf8(b).map_err(|_| format!("{}: not valid UTF-8", policy_file.display())));
        match (policy_name(&format!("{stem}.rhai")), cases, source) {
            (None, _, _) => {
                report.error = Some(format!(
                    "{}: the file name must be a policy name followed by .toml",
                    file.display()
                ))
            }
            (_, Err(e), _) | (_, _, Err(e)) => report.error = Some(e),
            (Some(name), Ok(cases), Ok(src)) => match sandbox.compile(&policy_file, &src, &modules) {
                Err(d) => report.error = Some(d.to_string()),
                Ok(compiled) => {
                    let hash: [u8; 32] = Sha256::digest(src.as_bytes()).into();
                    let version = version_of(&hash, &compiled.deps, &libs);
                    report.results = testing::run_cases(&sandbox, &compiled.ast, &policy_file, &version, name, &cases);
                }
            },
        }
        out.push(report);
    }
    Ok(out)
}

/// Whether `name` is a policy name: a kind, or `_` and a system name (e.g. `_users`).
pub fn is_policy_name(name: &str) -> bool {
    policy_name(&format!("{name}.rhai")).is_some() && !is_reserved(name)
}

/// Names that cannot be policies: `POST /policies/reload` and `POST /policies/evaluate` sit
/// where `/policies/{name}` of such a policy would, so its source could not be read, saved or
/// deleted over HTTP. A file with such a name is reported as failing, never loaded.
pub const RESERVED_NAMES: [&str; 2] = ["evaluate", "reload"];

/// Whether `name` is one of [`RESERVED_NAMES`].
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name)
}

/// The policy name of a file name, or `None` when the loader ignores the file.
fn policy_name(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".rhai")?;
    let ok = match stem.strip_prefix('_') {
        Some(rest) => {
            rest.starts_with(|c: char| c.is_ascii_lowercase())
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
    fn tests_gate_and_libraries_reload_dependants() {
        let (dir, engine) = setup();
        let d = dir.path();
        fs::create_dir_all(d.join("lib")).unwrap();
        fs::create_dir_all(d.join("tests")).unwrap();
        write(d, "lib/why.rhai", "fn why() { \"one\" }");
        write(
            d,
            "notes.rhai",
            "import \"lib/why\" as w;\n#{allow: false, reason: w::why()}",
        );
        let tests = "[[test]]\nname = \"denies\"\naction = \"read\"\nexpect = \"deny\"\n";
        write(d, "tests/notes.toml", tests);
        let report = engine.reload();
        assert_eq!(report.loaded, ["lib/why", "notes"], "{report:?}");
        let v1 = decide(&engine, "notes").unwrap();
        assert_eq!(v1.reason.as_deref(), Some("one"));
        let st = engine.status().into_iter().find(|s| s.name == "notes").unwrap();
        assert_eq!((st.imports, st.tests_passed), (vec!["why".to_owned()], Some(1)));

        // A library change is a new version of its dependant.
        write(d, "lib/why.rhai", "fn why() { \"two\" }");
        assert_eq!(engine.reload().loaded, ["lib/why", "notes"]);
        let v2 = decide(&engine, "notes").unwrap();
        assert_eq!(v2.reason.as_deref(), Some("two"));
        assert_ne!(v1.policy_version, v2.policy_version);
        assert!(engine.reload().is_empty(), "nothing changed, nothing recompiled");

        // A broken library keeps the dependant on its last good version.
        write(d, "lib/why.rhai", "fn why( {");
        let report = engine.reload();
        assert_eq!(report.failed.len(), 2, "{report:?}");
        assert_eq!(decide(&engine, "notes").unwrap().policy_version, v2.policy_version);
        assert!(engine.reload().is_empty(), "an unchanged failure is not retried");

        // A version that fails its tests never goes live.
        write(d, "lib/why.rhai", "fn why() { \"three\" }");
        write(d, "notes.rhai", "true");
        let report = engine.reload();
        assert_eq!(report.loaded, ["lib/why"], "{report:?}");
        assert_eq!(decide(&engine, "notes").unwrap().policy_version, v2.policy_version);
        let st = engine.status().into_iter().find(|s| s.name == "notes").unwrap();
        assert!(st.error.unwrap().contains("1 of 1 tests"));
        assert_eq!(st.failing_tests.len(), 1);
        // Changing the tests so that they pass lets it through.
        write(d, "tests/notes.toml", &tests.replace("\"deny\"", "\"allow\""));
        assert_eq!(engine.reload().loaded, ["notes"]);
        assert_eq!(decide(&engine, "notes").unwrap().outcome, Outcome::Allow);
        // A test file that cannot be read (here: a directory) blocks new versions too.
        fs::remove_file(d.join("tests/notes.toml")).unwrap();
        fs::create_dir(d.join("tests/notes.toml")).unwrap();
        write(d, "notes.rhai", "false");
        assert_eq!(engine.reload().failed.len(), 1);
        assert_eq!(decide(&engine, "notes").unwrap().outcome, Outcome::Allow);
        fs::remove_dir(d.join("tests/notes.toml")).unwrap();
        // A test file that does not parse blocks new versions too.
        write(d, "tests/notes.toml", "[[test]\n");
        write(d, "notes.rhai", "false");
        assert_eq!(engine.reload().failed.len(), 1);
        assert_eq!(decide(&engine, "notes").unwrap().outcome, Outcome::Allow);
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
pub fn read_policy(path: &Path) -> io::Result<Vec<u8>> {
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
