//! `/policies`: what the server has loaded, remote editing (`GET`/`PUT`/`DELETE
//! /policies/{name}`), dry runs (`POST /policies/evaluate`), replays against the decision log
//! (`POST /policies/{name}/replay`) and forced reloads (`POST /policies/reload`). Every operation
//! is decided by `policies/_policies.rhai` (fail closed without it); edits are recorded in
//! `<data_dir>/policy-changes.jsonl`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Instant,
};

use poem::{web::Data, Request};
use poem_openapi::{
    param::{Header, Path},
    payload::{Json, PlainText},
    ApiResponse, Enum, Object, OpenApi,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{authorize, problem::ApiError, security::BearerAuth, ApiTags, AppState, Target};
use crate::{
    decisions,
    model::Action,
    policy::{
        testing::{Expect, TestCase, TestRequest, TestResource, TestTime},
        Candidate, Decision, Outcome, PolicySet, MAX_POLICY_BYTES,
    },
};

/// The policy that governs `/policies`.
pub const POLICIES_POLICY: &str = "_policies";

/// Most decisions one replay evaluates.
const MAX_REPLAY: u32 = 10_000;

/// The state of one policy or library file.
#[derive(Debug, Object)]
#[oai(example)]
pub struct PolicyView {
    /// File stem: a resource kind (`notes`), a system policy (`_users`, `_policies`) or a
    /// library (`lib/roles`).
    pub name: String,
    /// Whether this file defines a resource kind (names without a leading `_` or `lib/`).
    pub is_kind: bool,
    /// The file's path.
    pub file: String,
    /// Version in force (a content hash; for a policy with imports, of the file and its
    /// libraries), or `null` if no version ever compiled.
    pub version: Option<String>,
    /// RFC 3339 time the version in force was loaded.
    pub loaded_at: Option<String>,
    /// Why the file on disk is not what runs: its compile error as `file:line:col: message`, or
    /// its failing tests (the previous good version, if any, stays in force).
    pub error: Option<String>,
    /// Libraries the version in force imports.
    pub imports: Vec<String>,
    /// Test cases (`policies/tests/<name>.toml`) the version in force passed; `null` without a
    /// test file.
    pub tests_passed: Option<u32>,
    /// The failing cases that keep the file on disk from going live.
    pub failing_tests: Vec<String>,
}

impl poem_openapi::types::Example for PolicyView {
    fn example() -> Self {
        Self {
            name: "notes".into(),
            is_kind: true,
            file: "policies/notes.rhai".into(),
            version: Some("3f2a9c0d1b7e4a55".into()),
            loaded_at: Some("2026-12-03T17:00:00Z".into()),
            error: None,
            imports: vec!["roles".into()],
            tests_passed: Some(9),
            failing_tests: Vec::new(),
        }
    }
}

impl From<crate::policy::PolicyStatus> for PolicyView {
    fn from(s: crate::policy::PolicyStatus) -> Self {
        Self {
            is_kind: !s.name.starts_with('_') && !s.name.starts_with("lib/"),
            name: s.name,
            file: s.file.display().to_string(),
            version: s.version,
            loaded_at: s.loaded_at,
            error: s.error,
            imports: s.imports,
            tests_passed: s.tests_passed.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            failing_tests: s.failing_tests,
        }
    }
}

/// All policy files.
#[derive(Debug, Object)]
pub struct PolicyList {
    /// One entry per policy and library file, sorted by name.
    pub items: Vec<PolicyView>,
}

/// A problem with the list of what is wrong: a policy that does not compile or fails its tests.
#[derive(Debug, Object)]
pub struct PolicyProblem {
    /// `urn:gatehouse:problem:policy-rejected`.
    #[oai(rename = "type")]
    pub type_: String,
    /// `Unprocessable Content`.
    pub title: String,
    /// 422.
    pub status: u16,
    /// Summary.
    pub detail: String,
    /// Each compile error (`notes.rhai:3:5: message`) or failing test case.
    pub errors: Vec<String>,
}

impl PolicyProblem {
    fn new(detail: impl Into<String>, errors: Vec<String>) -> Self {
        Self {
            type_: "urn:gatehouse:problem:policy-rejected".into(),
            title: "Unprocessable Content".into(),
            status: 422,
            detail: detail.into(),
            errors,
        }
    }
}

/// A policy's source.
#[derive(Debug, ApiResponse)]
pub enum PolicySource {
    /// The file as it is on disk; `ETag` is its content hash (send it as `If-Match` to `PUT`).
    #[oai(status = 200, content_type = "text/plain; charset=utf-8")]
    Ok(PlainText<String>, #[oai(header = "ETag")] String),
}

/// Answer of a policy save.
#[derive(Debug, ApiResponse)]
pub enum PolicySaved {
    /// Saved over an existing file and reloaded.
    #[oai(status = 200)]
    Updated(Json<PolicyView>, #[oai(header = "ETag")] String),
    /// Saved as a new file and reloaded.
    #[oai(status = 201)]
    Created(Json<PolicyView>, #[oai(header = "ETag")] String),
    /// `If-Match` does not name the file's current version; nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<super::problem::Problem>),
    /// The source does not compile, or the policy's tests fail with it; nothing was changed.
    #[oai(status = 422, content_type = "application/problem+json")]
    Rejected(Json<PolicyProblem>),
}

/// Answer of a policy delete.
#[derive(Debug, ApiResponse)]
pub enum PolicyDeleted {
    /// Deleted; the kind is gone.
    #[oai(status = 204)]
    Deleted,
    /// `If-Match` does not name the file's current version; nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<super::problem::Problem>),
}

/// The `resource` of a dry run (all optional).
#[derive(Debug, Default, Object)]
pub struct EvalResource {
    /// `resource.kind`; default: the policy's name.
    pub kind: Option<String>,
    /// `resource.id`.
    pub id: Option<String>,
    /// `resource.owner`.
    pub owner: Option<String>,
    /// `resource.data`; default `{}`.
    pub data: Option<BTreeMap<String, Value>>,
    /// `resource.old`.
    pub old: Option<BTreeMap<String, Value>>,
    /// Extra entries (system policies: `username`, `roles`, `changes`).
    pub extra: Option<BTreeMap<String, Value>>,
}

/// The `request` of a dry run (all optional).
#[derive(Debug, Default, Object)]
pub struct EvalRequest {
    /// Default: the method of the action on `/resources`.
    pub method: Option<String>,
    /// Default: `/resources/<kind>[/<id>]`.
    pub path: Option<String>,
    /// Unix seconds; default: now.
    pub time: Option<i64>,
    /// Client address; default `127.0.0.1`.
    pub ip: Option<String>,
    /// Request headers (lower-case names).
    pub headers: Option<BTreeMap<String, String>>,
}

/// A dry run: a decision from the given inputs, changing nothing.
#[derive(Debug, Object)]
#[oai(example)]
pub struct EvalInput {
    /// The policy to ask (`notes`, `_users`).
    pub kind: String,
    /// The token claims the policy sees.
    pub claims: BTreeMap<String, Value>,
    /// The action (`create`, `read`, `list`, `update`, `delete` or any other name).
    pub action: String,
    /// The resource.
    pub resource: Option<EvalResource>,
    /// The request facts.
    pub request: Option<EvalRequest>,
    /// A policy source to try instead of the loaded version (it is compiled, not saved).
    pub source: Option<String>,
}

impl poem_openapi::types::Example for EvalInput {
    fn example() -> Self {
        Self {
            kind: "notes".into(),
            claims: BTreeMap::from([
                ("sub".to_owned(), Value::from("ann")),
                ("roles".to_owned(), Value::from(vec!["user"])),
            ]),
            action: "update".into(),
            resource: Some(EvalResource {
                id: Some("019a7c2e-3b1f-7cc0-9a51-2f0c6b7d8e90".into()),
                owner: Some("bob".into()),
                ..EvalResource::default()
            }),
            request: None,
            source: None,
        }
    }
}

/// How a decision came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum OutcomeView {
    /// Allowed.
    Allow,
    /// Denied by the policy.
    Deny,
    /// The policy failed: denied (fail closed).
    Error,
}

impl From<Outcome> for OutcomeView {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Allow => Self::Allow,
            Outcome::Deny => Self::Deny,
            Outcome::Error => Self::Error,
        }
    }
}

/// The decision of a dry run.
#[derive(Debug, Object)]
pub struct EvalResult {
    /// Whether the request would be allowed.
    pub allow: bool,
    /// Allow, deny, or deny because the policy failed.
    pub outcome: OutcomeView,
    /// The policy's reason.
    pub reason: Option<String>,
    /// The version that decided (of the loaded file, or of the given `source`).
    pub policy_version: String,
    /// Evaluation time in microseconds.
    pub duration_us: u64,
    /// Why the policy failed (`notes.rhai:3:5: message`), for an `error` outcome.
    pub error: Option<String>,
}

/// What a forced reload changed.
#[derive(Debug, Object)]
pub struct ReloadView {
    /// Policies and libraries that now run a new version.
    pub loaded: Vec<String>,
    /// Every file not in force as it is on disk after the reload: compile errors
    /// (`file:line:col: message`) and failing tests.
    pub failed: Vec<String>,
    /// Policies whose files are gone.
    pub removed: Vec<String>,
    /// The directory could not be read (nothing changed).
    pub error: Option<String>,
}

/// A replay request: a candidate source to run against logged decisions.
#[derive(Debug, Object)]
pub struct ReplayInput {
    /// The candidate policy source.
    pub source: String,
    /// How many of the policy's most recent logged decisions to replay (1–10000, default 100).
    pub last: Option<u32>,
}

/// A logged decision the candidate would decide differently.
#[derive(Debug, Object)]
pub struct ReplayChange {
    /// The logged decision's id.
    pub decision_id: String,
    /// When it was made.
    pub time: String,
    /// Who asked.
    pub sub: Option<String>,
    /// The action.
    pub action: String,
    /// The resource id.
    pub resource_id: Option<String>,
    /// What was decided then.
    pub before: OutcomeView,
    /// The reason then.
    pub before_reason: Option<String>,
    /// What the candidate decides.
    pub after: OutcomeView,
    /// The candidate's reason.
    pub after_reason: Option<String>,
    /// The candidate's error, for an `error` outcome.
    pub after_error: Option<String>,
}

/// The result of a replay.
#[derive(Debug, Object)]
pub struct ReplayResult {
    /// The candidate's version.
    pub candidate_version: String,
    /// Decisions replayed.
    pub evaluated: u32,
    /// Those decided differently (outcome or reason), oldest first.
    pub changed: Vec<ReplayChange>,
    /// Replayed decisions logged without document data and headers (`decision_log_data` is
    /// off). Each is replayed with `resource.data` = `{}`; it is compared only when the version
    /// in force, given the same input, still decides as logged.
    pub without_data: u32,
    /// Decisions logged without data that the version in force decides differently without
    /// it: they depend on the data, so they are not compared (turn on `decision_log_data`).
    pub not_replayable: u32,
    /// Lines of the log that are not decision records (torn or foreign lines), skipped.
    pub unreadable_lines: u32,
}

/// One recorded policy change.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
pub struct PolicyChange {
    /// RFC 3339 time.
    pub time: String,
    /// Who made it (`sub`).
    pub by: String,
    /// The request id.
    pub request_id: String,
    /// The policy.
    pub name: String,
    /// `create`, `update` or `delete`.
    pub change: String,
    /// Content hash of the file before (`null` when created).
    pub old_version: Option<String>,
    /// Content hash after (`null` when deleted).
    pub new_version: Option<String>,
}

/// The changes of one policy.
#[derive(Debug, Object)]
pub struct PolicyHistory {
    /// Oldest first.
    pub items: Vec<PolicyChange>,
}

/// The policy endpoints.
pub struct PolicyApi;

/// A policy name as in the file name: a kind, or `_` and a system name.
fn policy_name(name: &str) -> Result<&str, ApiError> {
    if crate::policy::is_reserved(name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is reserved (`POST /policies/{name}` has that path) and cannot be a policy name"
        )));
    }
    crate::policy::is_policy_name(name).then_some(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{}` is not a policy name: kinds match ^[a-z][a-z0-9_-]{{0,63}}$, system policies start with `_`",
            name.chars().take(64).collect::<String>()
        ))
    })
}

fn file_of(state: &AppState, name: &str) -> PathBuf {
    state.policies.dir().join(format!("{name}.rhai"))
}

/// Content hash of a file's bytes as an `ETag` value.
fn etag(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The file's bytes (a regular file of at most 256 KiB, as the loader reads it); `None` when
/// there is none.
fn read_current(file: &FsPath) -> Result<Option<Vec<u8>>, ApiError> {
    match crate::policy::read_policy(file) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::conflict(format!(
            "cannot read `{}`: {e}",
            file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ))),
    }
}

/// The `If-Match` header values as sent (all of them); `None` entries are values that are not
/// visible ASCII, which can match nothing.
fn if_match_values(req: &Request) -> Vec<Option<String>> {
    req.headers()
        .get_all(poem::http::header::IF_MATCH)
        .iter()
        .map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// `If-Match` (RFC 9110 §13.1.1, strong comparison): `*` matches any existing file; otherwise one
/// of the listed tags must be the file's current one (quotes optional, weak tags never match).
/// `None` when there is no `If-Match` or it matches, else the 412 problem.
fn if_match_fails(values: &[Option<String>], current: Option<&[u8]>) -> Option<super::problem::Problem> {
    if values.is_empty() {
        return None;
    }
    let tag = current.map(etag);
    let ok = values.iter().any(|v| {
        let (Some(v), Some(tag)) = (v, &tag) else { return false };
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || (!t.starts_with("W/") && (t == tag || format!("\"{t}\"") == *tag)))
    });
    (!ok).then(|| {
        super::problem::Problem::new(
            poem::http::StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "the policy changed since you read it (`If-Match` does not match its ETag); fetch it again",
        )
    })
}

impl PolicyApi {
    fn check(
        state: &AppState,
        req: &Request,
        auth: &BearerAuth,
        action: &str,
        id: Option<&str>,
        data: &Value,
    ) -> Result<Arc<PolicySet>, ApiError> {
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        authorize(
            &set,
            POLICIES_POLICY,
            claims,
            action,
            Target::new(POLICIES_POLICY, id, None, data),
            req,
        )?;
        Ok(set)
    }
}

fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Runs the blocking reload off the async workers.
async fn reload(state: &AppState) -> Result<crate::policy::ReloadReport, ApiError> {
    let engine = state.policies.clone();
    // The reload's log lines belong to the request that caused it (its id is in the span).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| engine.reload()))
        .await
        .map_err(|e| ApiError::internal(&e))
}

fn record_change(state: &AppState, change: &PolicyChange) {
    tracing::info!(
        target: "gatehouse::policy",
        by = %change.by, policy = %change.name, change = %change.change,
        old_version = change.old_version.as_deref(), new_version = change.new_version.as_deref(),
        "policy changed through the API"
    );
    let path = state.settings.data_dir.join("policy-changes.jsonl");
    let line = match serde_json::to_string(change) {
        Ok(line) => line,
        Err(e) => return tracing::warn!(error = %e, "cannot encode a policy change"),
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}").and_then(|()| f.sync_data()));
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "cannot record a policy change");
    }
}

fn change_record(
    auth: &BearerAuth,
    req: &Request,
    name: &str,
    change: &str,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
) -> PolicyChange {
    let version = |b: &[u8]| etag(b).trim_matches('"').to_owned();
    PolicyChange {
        time: super::now_rfc3339(),
        by: auth.0.claims.sub.clone(),
        request_id: req
            .extensions()
            .get::<Arc<super::RequestContext>>()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        name: name.to_owned(),
        change: change.to_owned(),
        old_version: old.map(version),
        new_version: new.map(version),
    }
}

/// Writes `bytes` to `file` through a temp file in the same directory and a rename, so the
/// watcher never sees a half-written policy.
fn write_atomically(file: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(FsPath::new("."));
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("policy");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A test case standing for the inputs of a dry run.
pub fn case_of(input: &EvalInput) -> TestCase {
    let obj = |m: &BTreeMap<String, Value>| Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let res = input.resource.as_ref();
    let req = input.request.as_ref();
    TestCase {
        name: "dry run".into(),
        claims: obj(&input.claims),
        action: input.action.clone(),
        resource: TestResource {
            kind: res.and_then(|r| r.kind.clone()),
            id: res.and_then(|r| r.id.clone()),
            owner: res.and_then(|r| r.owner.clone()),
            data: res.and_then(|r| r.data.as_ref()).map(obj),
            old: res.and_then(|r| r.old.as_ref()).map(obj),
            extra: res
                .and_then(|r| r.extra.as_ref())
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        },
        request: TestRequest {
            method: req.and_then(|r| r.method.clone()),
            path: req.and_then(|r| r.path.clone()),
            time: Some(TestTime::Unix(
                req.and_then(|r| r.time)
                    .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp()),
            )),
            ip: req.and_then(|r| r.ip.clone()),
            headers: req.and_then(|r| r.headers.clone()).unwrap_or_default(),
        },
        expect: Expect::Allow,
        reason: None,
    }
}

/// Compiles a candidate and runs the policy's tests with it; the errors when either fails.
fn vet(set: &PolicySet, name: &str, source: &str) -> Result<Candidate, Vec<String>> {
    let candidate = set.compile_candidate(name, source).map_err(|d| vec![d.to_string()])?;
    match set.test_candidate(&candidate) {
        Ok(None) => Ok(candidate),
        Ok(Some(results)) => {
            let failing: Vec<String> = results.iter().filter(|r| !r.passed).map(ToString::to_string).collect();
            if failing.is_empty() {
                Ok(candidate)
            } else {
                Err(failing)
            }
        }
        Err(d) => Err(vec![format!("its tests cannot be read: {d}")]),
    }
}

#[OpenApi(tag = "ApiTags::Policies")]
impl PolicyApi {
    /// List policy files and their state
    ///
    /// Shows each policy and library file's version in force, when it was loaded, what it
    /// imports, how many of its tests passed, and why the file on disk is not in force (compile
    /// error or failing tests). Decided by `_policies.rhai` with `action == "list"`.
    #[oai(path = "/policies", method = "get", operation_id = "list_policies")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<PolicyList>, ApiError> {
        Self::check(&state, req, &auth, Action::List.as_str(), None, &empty())?;
        let items = state.policies.status().into_iter().map(PolicyView::from).collect();
        Ok(Json(PolicyList { items }))
    }

    /// Get a policy's source
    ///
    /// The `.rhai` file as it is on disk (which may differ from the version in force when it
    /// does not compile). Decided by `_policies.rhai` with `action == "read"` and
    /// `resource.id` = the name.
    #[oai(path = "/policies/:name", method = "get", operation_id = "get_policy_source")]
    async fn get_source(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Policy name, e.g. `notes` or `_users`.
        name: Path<String>,
    ) -> Result<PolicySource, ApiError> {
        let name = policy_name(&name)?;
        Self::check(&state, req, &auth, Action::Read.as_str(), Some(name), &empty())?;
        let bytes = read_current(&file_of(&state, name))?
            .ok_or_else(|| ApiError::not_found(format!("no policy file `{name}.rhai`")))?;
        let tag = etag(&bytes);
        let text = String::from_utf8(bytes).map_err(|_| ApiError::conflict("the policy file is not valid UTF-8"))?;
        Ok(PolicySource::Ok(PlainText(text), tag))
    }

    /// Save a policy
    ///
    /// The body is the new source (`text/plain`). It is compiled and the policy's tests
    /// (`policies/tests/<name>.toml`) run against it first: when either fails the answer is 422
    /// with the errors and nothing changes. Otherwise the file is written atomically and
    /// reloaded, and the change is recorded (who, when, old and new version). Send the `ETag`
    /// from `GET` as `If-Match` to refuse overwriting someone else's edit (412). Decided by
    /// `_policies.rhai` with `action` `create` or `update` and `resource.id` = the name.
    #[oai(path = "/policies/:name", method = "put", operation_id = "put_policy")]
    async fn put(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Policy name, e.g. `notes` or `_users`.
        name: Path<String>,
        /// Only save when the file's current `ETag` is one of these (`*`: when it exists).
        #[oai(name = "If-Match")]
        _if_match: Header<Option<String>>,
        body: super::payload::TextBody,
    ) -> Result<PolicySaved, ApiError> {
        let name = policy_name(&name)?;
        let file = file_of(&state, name);
        let exists = file.exists();
        let action = if exists { Action::Update } else { Action::Create };
        Self::check(&state, req, &auth, action.as_str(), Some(name), &empty())?;
        if body.0.len() as u64 > MAX_POLICY_BYTES {
            return Err(ApiError::payload_too_large(MAX_POLICY_BYTES as usize));
        }
        let _edit = state.policy_edit_lock.lock().await;
        let current = read_current(&file)?;
        if let Some(p) = if_match_fails(&if_match_values(req), current.as_deref()) {
            return Ok(PolicySaved::PreconditionFailed(Json(p)));
        }
        // Vet against the directory as it is now (tests and libraries may have changed since
        // the watcher last looked), not against a cached view.
        reload(&state).await?;
        let set = state.policies.snapshot();
        let candidate = match vet(&set, name, &body.0) {
            Ok(c) => c,
            Err(errors) => {
                let detail = format!("`{name}.rhai` was not saved: it does not compile or its tests fail");
                return Ok(PolicySaved::Rejected(Json(PolicyProblem::new(detail, errors))));
            }
        };
        if let Err(e) = write_atomically(&file, body.0.as_bytes()) {
            return Err(ApiError::conflict(format!(
                "cannot write `{name}.rhai` into the policy directory: {e}"
            )));
        }
        reload(&state).await?;
        let in_force = state.policies.snapshot().version(name).map(str::to_owned);
        if in_force.as_deref() != Some(candidate.version()) {
            // Its tests or libraries changed between the vetting and the reload: put the old
            // file back, so that what the client was told (nothing changed) is true.
            let restored = match &current {
                Some(old) => write_atomically(&file, old),
                None => std::fs::remove_file(&file),
            };
            if let Err(e) = restored {
                tracing::error!(policy = name, error = %e, "cannot restore a policy after a failed save");
            }
            reload(&state).await?;
            return Err(ApiError::conflict(format!(
                "`{name}.rhai` was not saved: its tests or libraries changed while it was being saved; try again"
            )));
        }
        let change = if current.is_some() { "update" } else { "create" };
        record_change(
            &state,
            &change_record(&auth, req, name, change, current.as_deref(), Some(body.0.as_bytes())),
        );
        let view = state
            .policies
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .map(PolicyView::from)
            .ok_or_else(|| ApiError::conflict("the policy was removed again while it was being saved"))?;
        let tag = etag(body.0.as_bytes());
        Ok(if current.is_some() {
            PolicySaved::Updated(Json(view), tag)
        } else {
            PolicySaved::Created(Json(view), tag)
        })
    }

    /// Delete a policy
    ///
    /// Removes the file: a kind's documents become unreachable (404) until the file is back; a
    /// deleted `_users.rhai` or `_policies.rhai` locks its endpoints (403). Recorded like a
    /// save. Decided by `_policies.rhai` with `action == "delete"`.
    #[oai(path = "/policies/:name", method = "delete", operation_id = "delete_policy")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Policy name.
        name: Path<String>,
        /// Only delete when the file's current `ETag` is one of these.
        #[oai(name = "If-Match")]
        _if_match: Header<Option<String>>,
    ) -> Result<PolicyDeleted, ApiError> {
        let name = policy_name(&name)?;
        Self::check(&state, req, &auth, Action::Delete.as_str(), Some(name), &empty())?;
        let file = file_of(&state, name);
        let _edit = state.policy_edit_lock.lock().await;
        let current =
            read_current(&file)?.ok_or_else(|| ApiError::not_found(format!("no policy file `{name}.rhai`")))?;
        if let Some(p) = if_match_fails(&if_match_values(req), Some(&current)) {
            return Ok(PolicyDeleted::PreconditionFailed(Json(p)));
        }
        std::fs::remove_file(&file).map_err(|e| ApiError::conflict(format!("cannot remove `{name}.rhai`: {e}")))?;
        record_change(&state, &change_record(&auth, req, name, "delete", Some(&current), None));
        reload(&state).await?;
        Ok(PolicyDeleted::Deleted)
    }

    /// History of a policy's remote edits
    ///
    /// Every save and delete made through this API, oldest first. Decided by `_policies.rhai`
    /// with `action == "read"`.
    #[oai(
        path = "/policies/:name/history",
        method = "get",
        operation_id = "get_policy_history"
    )]
    async fn history(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Policy name.
        name: Path<String>,
    ) -> Result<Json<PolicyHistory>, ApiError> {
        let name = policy_name(&name)?;
        Self::check(&state, req, &auth, Action::Read.as_str(), Some(name), &empty())?;
        let path = state.settings.data_dir.join("policy-changes.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ApiError::internal(&format!("cannot read {}: {e}", path.display()))),
        };
        let items = text
            .lines()
            .filter_map(|l| serde_json::from_str::<PolicyChange>(l).ok())
            .filter(|c| c.name == name)
            .collect();
        Ok(Json(PolicyHistory { items }))
    }

    /// Dry-run a decision
    ///
    /// Evaluates the loaded policy `kind` (or `source`, compiled but not saved) for the given
    /// claims, action, resource and request, and returns the decision with its evaluation time.
    /// Changes nothing and is not written to the decision log. A `source` that does not compile
    /// is 422. Decided by `_policies.rhai` with `action == "evaluate"` and `resource.id` = `kind`.
    #[oai(path = "/policies/evaluate", method = "post", operation_id = "evaluate_policy")]
    async fn evaluate(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        body: Json<EvalInput>,
    ) -> Result<EvalAnswer, ApiError> {
        let name = policy_name(&body.kind)?;
        let set = Self::check(&state, req, &auth, "evaluate", Some(name), &empty())?;
        let case = case_of(&body);
        let run = |f: &dyn Fn(&crate::policy::Input) -> Option<Decision>| {
            crate::policy::testing::with_input(&case, name, |input| {
                let started = Instant::now();
                let d = f(input);
                (d, u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
            })
        };
        let (decision, duration_us) = match &body.source {
            Some(source) => {
                let candidate = match set.compile_candidate(name, source) {
                    Ok(c) => c,
                    Err(d) => {
                        return Ok(EvalAnswer::Rejected(Json(PolicyProblem::new(
                            "the source does not compile",
                            vec![d.to_string()],
                        ))))
                    }
                };
                run(&|input| Some(candidate.evaluate(input)))
            }
            None => run(&|input| set.evaluate(name, input)),
        };
        let d = decision.ok_or_else(|| ApiError::not_found(format!("no policy `{name}.rhai` is loaded")))?;
        Ok(EvalAnswer::Ok(Json(EvalResult {
            allow: d.allow,
            outcome: d.outcome.into(),
            reason: d.reason,
            policy_version: d.policy_version,
            duration_us,
            error: d.error,
        })))
    }

    /// Reload all policies now
    ///
    /// Rescans the policy directory (policies, libraries, tests) at once, for file systems
    /// where change events do not arrive. Decided by `_policies.rhai` with `action == "reload"`.
    #[oai(path = "/policies/reload", method = "post", operation_id = "reload_policies")]
    async fn reload(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<ReloadView>, ApiError> {
        Self::check(&state, req, &auth, "reload", None, &empty())?;
        let report = reload(&state).await?;
        // Every file that is not in force as it is on disk, not only those that failed anew.
        let failed = state.policies.status().into_iter().filter_map(|s| s.error).collect();
        Ok(Json(ReloadView {
            loaded: report.loaded,
            failed,
            removed: report.removed,
            error: report.error,
        }))
    }

    /// Replay logged decisions against a candidate
    ///
    /// Evaluates `source` (compiled, not saved) against the inputs of the last `last` logged
    /// decisions of policy `name`, and lists every decision that would change. Needs the
    /// decision log (409 when it is off). Decided by `_policies.rhai` with `action == "replay"`.
    #[oai(path = "/policies/:name/replay", method = "post", operation_id = "replay_policy")]
    async fn replay(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Policy name.
        name: Path<String>,
        body: Json<ReplayInput>,
    ) -> Result<ReplayAnswer, ApiError> {
        let name = policy_name(&name)?;
        let set = Self::check(&state, req, &auth, "replay", Some(name), &empty())?;
        if !set.has(name) {
            return Err(ApiError::not_found(format!("no policy `{name}.rhai` is loaded")));
        }
        let last = body.last.unwrap_or(100);
        if !(1..=MAX_REPLAY).contains(&last) {
            return Err(ApiError::bad_request(format!(
                "`last` must be between 1 and {MAX_REPLAY}"
            )));
        }
        let Some(path) = state.decisions.path().map(FsPath::to_path_buf) else {
            return Err(ApiError::conflict(
                "the decision log is off (decision_log = \"off\"), so there is nothing to replay",
            ));
        };
        let candidate = match set.compile_candidate(name, &body.source) {
            Ok(c) => c,
            Err(d) => {
                return Ok(ReplayAnswer::Rejected(Json(PolicyProblem::new(
                    "the source does not compile",
                    vec![d.to_string()],
                ))))
            }
        };
        let policy = name.to_owned();
        let log = state.decisions.clone();
        let report = tokio::task::spawn_blocking(move || {
            // The decisions made up to now, including those still in the writer's buffer.
            log.sync();
            replay(&path, &policy, last as usize, &candidate, &set)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&format!("cannot read the decision log: {e}")))?;
        Ok(ReplayAnswer::Ok(Json(report)))
    }
}

/// Answer of a dry run.
#[derive(Debug, ApiResponse)]
pub enum EvalAnswer {
    /// The decision.
    #[oai(status = 200)]
    Ok(Json<EvalResult>),
    /// `source` does not compile.
    #[oai(status = 422, content_type = "application/problem+json")]
    Rejected(Json<PolicyProblem>),
}

/// Answer of a replay.
#[derive(Debug, ApiResponse)]
pub enum ReplayAnswer {
    /// What would change.
    #[oai(status = 200)]
    Ok(Json<ReplayResult>),
    /// `source` does not compile.
    #[oai(status = 422, content_type = "application/problem+json")]
    Rejected(Json<PolicyProblem>),
}

/// Replays the last `n` logged decisions of `policy` with `candidate`.
///
/// `baseline` (the set in force) decides whether a record logged without data can be compared
/// at all: only when it still decides that record as logged.
pub fn replay(
    log: &FsPath,
    policy: &str,
    n: usize,
    candidate: &Candidate,
    baseline: &PolicySet,
) -> std::io::Result<ReplayResult> {
    let (records, bad) = decisions::read_last(log, policy, n)?;
    let mut changed = Vec::new();
    let (mut without_data, mut not_replayable) = (0u32, 0u32);
    for rec in &records {
        if !rec.input.with_data {
            without_data += 1;
            let same = with_recorded_input(rec, |input| baseline.evaluate(policy, input))
                .is_some_and(|b| b.outcome == rec.outcome && b.reason == rec.reason);
            if !same {
                not_replayable += 1;
                continue;
            }
        }
        let d = with_recorded_input(rec, |input| candidate.evaluate(input));
        if d.outcome != rec.outcome || d.reason != rec.reason {
            changed.push(ReplayChange {
                decision_id: rec.decision_id.clone(),
                time: rec.time.clone(),
                sub: rec.sub.clone(),
                action: rec.action.clone(),
                resource_id: rec.resource_id.clone(),
                before: rec.outcome.into(),
                before_reason: rec.reason.clone(),
                after: d.outcome.into(),
                after_reason: d.reason,
                after_error: d.error,
            });
        }
    }
    Ok(ReplayResult {
        candidate_version: candidate.version().to_owned(),
        evaluated: u32::try_from(records.len()).unwrap_or(u32::MAX),
        changed,
        without_data,
        not_replayable,
        unreadable_lines: u32::try_from(bad).unwrap_or(u32::MAX),
    })
}

/// Rebuilds the input of a logged decision and hands it to `f`.
pub fn with_recorded_input<T>(rec: &decisions::DecisionRecord, f: impl FnOnce(&crate::policy::Input) -> T) -> T {
    let i = &rec.input;
    let empty = empty();
    let headers: Vec<(&str, &str)> = i
        .request
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let claims = crate::policy::ClaimSet::new(i.claims.clone());
    let input = crate::policy::Input {
        claims: &claims,
        action: &rec.action,
        resource: crate::policy::ResourceInput {
            kind: &i.resource.kind,
            id: i.resource.id.as_deref(),
            owner: i.resource.owner.as_deref(),
            data: i.resource.data.as_ref().unwrap_or(&empty),
            old: i.resource.old.as_ref(),
            extra: i.resource.extra.as_ref(),
        },
        request: crate::policy::RequestInput {
            method: &i.request.method,
            path: &i.request.path,
            time: i.request.time,
            ip: i.request.ip.as_deref(),
            headers: &headers,
        },
    };
    f(&input)
}
