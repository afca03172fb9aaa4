//! Access policies: per-kind Rhai scripts, compiled once per file version, evaluated in a
//! sandbox, and hot-reloaded from a watched directory.
//!
//! - `engine` owns the hardened Rhai engine: limits, the wall-clock deadline, how input becomes
//!   script variables and how a script's value becomes a [`Decision`].
//! - `loader` owns the policy directory: which files are policies, [`PolicyEngine::reload`]
//!   (rescan, hash, compile, keep the last good version, swap one immutable [`PolicySet`]) and
//!   [`check`] for `gatehouse policy check`.
//! - `watcher` turns file-system events into debounced reloads ([`watch`]).
//!
//! This module knows nothing of HTTP, storage or tokens: claims arrive as plain JSON, decisions
//! leave as plain data, and every failure denies (fails closed). Diagnostics with file and line are
//! for logs and operators only; callers must never send [`Decision::error`] to clients.
//!
//! # Script interface
//! A policy sees the constants `claims` (map), `action` (string), `resource` (map: `kind`, `id`,
//! `owner`, `data`, `old`, plus any extra entries; absent values are `()`) and `request` (map:
//! `method`, `path`, `time`). It returns `true`, `false` or `#{allow: bool, reason: string}`
//! (`reason` optional). Anything else, a runtime error, a misspelt property or an exceeded
//! [`Limits`] entry denies with [`Outcome::Error`]. An empty (or comment-only) file does not
//! compile, so a save caught between truncate and write keeps the last good version.

mod engine;
mod helpers;
mod loader;
pub mod testing;
mod watcher;

use std::{fmt, path::PathBuf, time::Duration};

use serde::Serialize;

pub use loader::{
    check, check_with, is_policy_name, is_reserved, read_policy, run_tests, Candidate, PolicyEngine, PolicySet,
    TestFileReport, MAX_POLICY_BYTES, RESERVED_NAMES,
};
pub use watcher::{watch, WatchGuard};

/// Resource limits for one policy evaluation. Exceeding any of them denies with [`Outcome::Error`].
///
/// The size limits apply to values a script builds or passes whole to a function. Inputs are not
/// checked on entry: `resource.data.title` works on any document, but `resource.data.len()` on a
/// document bigger than the limits denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum Rhai operations per evaluation (bounds CPU, not memory).
    pub max_operations: u64,
    /// Maximum depth of nested function calls (bounds recursion).
    pub max_call_levels: usize,
    /// Maximum expression nesting at the top level, checked at compile time.
    pub max_expr_depth: usize,
    /// Maximum expression nesting inside functions, checked at compile time.
    pub max_function_expr_depth: usize,
    /// Maximum length of any string a script builds, in bytes.
    pub max_string_size: usize,
    /// Maximum number of elements of any array a script builds.
    pub max_array_size: usize,
    /// Maximum number of entries of any object map a script builds.
    pub max_map_size: usize,
    /// Maximum number of variables alive at once (the four inputs count too).
    pub max_variables: usize,
    /// Wall-clock budget per evaluation, checked between operations.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 100_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 16 * 1024,
            max_array_size: 1024,
            max_map_size: 256,
            max_variables: 128,
            timeout: Duration::from_millis(250),
        }
    }
}

/// A caller's claims as policies see them: the JSON object (for the decision log and replay)
/// and the script's `claims` map, converted once (per verified token, in the server) and cloned
/// cheaply for each evaluation.
#[derive(Debug, Clone)]
pub struct ClaimSet {
    json: serde_json::Value,
    encoded: Box<serde_json::value::RawValue>,
    script: rhai::Dynamic,
}

impl ClaimSet {
    /// Converts `json` (normally an object) for scripts.
    pub fn new(json: serde_json::Value) -> Self {
        let script = engine::json_to_dynamic(&json);
        let encoded =
            serde_json::value::to_raw_value(&json).unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
        Self { json, encoded, script }
    }

    /// The claims as JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// The claims encoded as JSON text (once: every decision record carries them).
    pub fn encoded(&self) -> &serde_json::value::RawValue {
        &self.encoded
    }

    /// The script's `claims` value.
    pub(crate) fn script(&self) -> &rhai::Dynamic {
        &self.script
    }
}

impl From<serde_json::Value> for ClaimSet {
    fn from(json: serde_json::Value) -> Self {
        Self::new(json)
    }
}

/// Input to one decision. Plain data, no HTTP types.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The verified token claims (a JSON object); the script's `claims`.
    pub claims: &'a ClaimSet,
    /// What the caller wants to do; the script's `action`: a resource [`Action`](crate::model::Action) name, or a
    /// system or plugin action such as `"evaluate"`.
    pub action: &'a str,
    /// What it wants to do it to; the script's `resource`.
    pub resource: ResourceInput<'a>,
    /// Facts about the request; the script's `request`.
    pub request: RequestInput<'a>,
}

/// The script's `resource` map.
#[derive(Debug, Clone, Copy)]
pub struct ResourceInput<'a> {
    /// The kind (or system name such as `users`).
    pub kind: &'a str,
    /// The document id; `()` in the script when `None` (create, list).
    pub id: Option<&'a str>,
    /// The owner's user name; `()` in the script when there is none yet.
    pub owner: Option<&'a str>,
    /// Stored data, or the incoming data for create and update.
    pub data: &'a serde_json::Value,
    /// Stored data on update; `()` in the script when `None`.
    pub old: Option<&'a serde_json::Value>,
    /// Extra entries merged into the map when this is a JSON object (for system policies, e.g.
    /// `username`, `roles`). The standard keys above win over extra keys of the same name.
    pub extra: Option<&'a serde_json::Value>,
}

/// The script's `request` map.
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    /// HTTP method, e.g. `"GET"`.
    pub method: &'a str,
    /// Request path, e.g. `"/resources/notes/123"`.
    pub path: &'a str,
    /// Request time in unix seconds.
    pub time: i64,
    /// The client's IP address; `()` in the script when unknown.
    pub ip: Option<&'a str>,
    /// Request headers as `(name, value)`; the script's `request.headers` map (names in lower
    /// case). `Authorization`, `Proxy-Authorization` and `Cookie` are never passed on.
    pub headers: &'a [(&'a str, &'a str)],
}

/// How a decision came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The script allowed the request.
    Allow,
    /// The script denied the request.
    Deny,
    /// The script failed (runtime error, limit, wrong result type): denied, fail closed.
    Error,
}

/// The result of evaluating one policy for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed. Only ever `true` with [`Outcome::Allow`].
    pub allow: bool,
    /// The script's reason, safe to show to the client. Always `None` for [`Outcome::Error`].
    pub reason: Option<String>,
    /// Allow, deny, or deny because of an error.
    pub outcome: Outcome,
    /// Internal diagnostic (`notes.rhai:3:5: message`) for the log only, never for clients.
    pub error: Option<String>,
    /// The version (content hash) of the policy that decided.
    pub policy_version: String,
}

/// What `GET /policies` reports for one policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    /// File stem, e.g. `notes` or `_users`.
    pub name: String,
    /// Full path of the file.
    pub file: PathBuf,
    /// Version running now (first 16 hex digits of the SHA-256 of the file); `None` when no
    /// version ever compiled.
    pub version: Option<String>,
    /// When the running version was loaded (RFC 3339, UTC).
    pub loaded_at: Option<String>,
    /// The last compile error as `file:line:col: message`, or why its tests kept it from going
    /// live; `None` when the file on disk is what is loaded.
    pub error: Option<String>,
    /// Libraries the loaded version imports (`roles` for `lib/roles.rhai`).
    pub imports: Vec<String>,
    /// How many test cases the loaded version passed; `None` without a test file.
    pub tests_passed: Option<usize>,
    /// The failing cases that kept the file on disk from going live.
    pub failing_tests: Vec<String>,
}

/// A compile (or read) problem in one policy file, displayed as `file:line:col: message`.
///
/// `line` and `col` are 1-based; both are 0 when the problem has no position (e.g. an unreadable
/// file), and then it is displayed as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as given to [`check`] or as a bare file name in the engine's status.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file (no position).
    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// What one [`PolicyEngine::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Policies compiled and now serving a new version (new or changed files).
    pub loaded: Vec<String>,
    /// Files that failed to compile (or read); their last good version, if any, keeps running.
    pub failed: Vec<Diagnostic>,
    /// Policies whose files are gone (their kinds no longer exist).
    pub removed: Vec<String>,
    /// The directory itself could not be read; the previous set stays in place.
    pub error: Option<String>,
}

impl ReloadReport {
    /// True when nothing changed and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.failed.is_empty() && self.removed.is_empty() && self.error.is_none()
    }
}

/// Errors of the policy module's setup functions (evaluation never errors: it denies).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// [`watch`] was called outside a tokio runtime.
    #[error("the policy watcher must be started inside a tokio runtime")]
    NoRuntime,
    /// The file-system watcher could not be created or could not watch the directory.
    #[error("cannot watch policy directory `{dir}`")]
    Watch {
        /// The policy directory.
        dir: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
}

/// A typical input for the unit tests: `ann` (role `user`) reads note `n1`, which she owns.
#[cfg(test)]
pub(crate) fn sample_input() -> Input<'static> {
    use std::sync::LazyLock;
    static CLAIMS: LazyLock<ClaimSet> =
        LazyLock::new(|| ClaimSet::new(serde_json::json!({"sub": "ann", "roles": ["user"], "exp": 1})));
    static DATA: LazyLock<serde_json::Value> = LazyLock::new(|| serde_json::json!({"title": "hi", "tags": ["a", "b"]}));
    Input {
        claims: &CLAIMS,
        action: "read",
        resource: ResourceInput {
            kind: "notes",
            id: Some("n1"),
            owner: Some("ann"),
            data: &DATA,
            old: None,
            extra: None,
        },
        request: RequestInput {
            method: "GET",
            path: "/resources/notes/n1",
            time: 1_700_000_000,
            ip: Some("10.1.2.3"),
            headers: &[("x-tenant", "acme"), ("authorization", "Bearer secret")],
        },
    }
}
