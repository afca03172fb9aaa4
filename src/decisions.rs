//! The decision log: one JSON line per policy decision (allow, deny or error), written by a
//! background thread to `<data_dir>/decisions.jsonl` (configurable, size-rotated, switchable
//! off), and read back for replay.
//!
//! A record holds what an operator needs to go from a complaint to a decision (time, decision
//! id, request id, `sub`, policy, action, resource id, outcome, reason, policy version,
//! evaluation time) and what replay needs to decide it again (the claims, the resource without
//! its data, the request facts). Document data and request headers are left out unless
//! `decision_log_data` is on. Logging never blocks a request: records go through a bounded
//! queue, and when the disk cannot keep up they are dropped and counted (and a warning logged).

use std::{
    fs,
    io::{self, BufRead as _, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
        Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Outcome, RequestInput, ResourceInput};

/// Records waiting for the writer; beyond this, new records are dropped (and counted).
const QUEUE: usize = 16 * 1024;

/// One decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// Unique id; also sent to the client in the `X-Decision-Id` header.
    pub decision_id: String,
    /// The request's id (`X-Request-Id`); several decisions can share one (a listing).
    pub request_id: String,
    /// The caller's `sub`.
    pub sub: Option<String>,
    /// The policy that decided (`notes`, `_users`).
    pub policy: String,
    /// The action.
    pub action: String,
    /// The resource id, if any.
    pub resource_id: Option<String>,
    /// `allow`, `deny` or `error`.
    pub outcome: Outcome,
    /// The policy's reason.
    pub reason: Option<String>,
    /// The internal diagnostic of an error outcome (`notes.rhai:3:5: ...`).
    pub error: Option<String>,
    /// The policy version that decided.
    pub policy_version: Option<String>,
    /// Evaluation time in microseconds.
    pub duration_us: u64,
    /// What the policy saw, for replay.
    pub input: RecordedInput,
}

/// The inputs of a decision as logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedInput {
    /// The token claims.
    pub claims: Value,
    /// `resource` without `data`/`old` unless data logging is on.
    pub resource: RecordedResource,
    /// `request`.
    pub request: RecordedRequest,
    /// Whether `resource.data`, `resource.old` and the headers were logged.
    pub with_data: bool,
}

/// `resource` as logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedResource {
    /// `resource.kind`.
    pub kind: String,
    /// `resource.id`.
    pub id: Option<String>,
    /// `resource.owner`.
    pub owner: Option<String>,
    /// `resource.data` (only with data logging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// `resource.old` (only with data logging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// Extra entries of system policies (user names, roles, changes; never password hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// `request` as logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Unix seconds.
    pub time: i64,
    /// Client address.
    pub ip: Option<String>,
    /// Headers (only with data logging).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl RecordedInput {
    /// Captures an input; data and headers only when `with_data`.
    pub fn capture(claims: &Value, resource: &ResourceInput, request: &RequestInput, with_data: bool) -> Self {
        Self {
            claims: claims.clone(),
            resource: RecordedResource {
                kind: resource.kind.to_owned(),
                id: resource.id.map(str::to_owned),
                owner: resource.owner.map(str::to_owned),
                data: with_data.then(|| resource.data.clone()),
                old: if with_data { resource.old.cloned() } else { None },
                extra: resource.extra.cloned(),
            },
            request: RecordedRequest {
                method: request.method.to_owned(),
                path: request.path.to_owned(),
                time: request.time,
                ip: request.ip.map(str::to_owned),
                headers: if with_data {
                    request
                        .headers
                        .iter()
                        .filter(|(k, _)| !is_credential_header(k))
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                } else {
                    Vec::new()
                },
            },
            with_data,
        }
    }
}

fn is_credential_header(name: &str) -> bool {
    ["authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Where decisions go and with what.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The file; `None` = no file.
    pub path: Option<PathBuf>,
    /// Rotate at this size.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` … `.N`).
    pub keep: u32,
    /// Also emit each record as a tracing event.
    pub tracing: bool,
    /// Log document data and headers.
    pub with_data: bool,
}

/// The decision log handle. Cheap to call from any thread.
#[derive(Debug)]
pub struct DecisionLog {
    sender: Mutex<Option<SyncSender<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    config: LogConfig,
    dropped: AtomicU64,
    written: AtomicU64,
}

impl DecisionLog {
    /// Opens (creating the directory and file) and starts the writer thread.
    pub fn open(config: LogConfig) -> io::Result<Self> {
        let (sender, writer) = match &config.path {
            None => (None, None),
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)?;
                }
                let file = open_append(path)?;
                let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
                let writer = Writer {
                    path: path.clone(),
                    size: file.metadata().map(|m| m.len()).unwrap_or(0),
                    out: BufWriter::new(file),
                    max_bytes: config.max_bytes,
                    keep: config.keep,
                };
                let handle = std::thread::Builder::new()
                    .name("decision-log".into())
                    .spawn(move || writer.run(rx))?;
                (Some(tx), Some(handle))
            }
        };
        Ok(Self {
            sender: Mutex::new(sender),
            writer: Mutex::new(writer),
            config,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self {
            sender: Mutex::new(None),
            writer: Mutex::new(None),
            config: LogConfig {
                path: None,
                max_bytes: u64::MAX,
                keep: 0,
                tracing: false,
                with_data: false,
            },
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Whether records carry document data and headers.
    pub fn with_data(&self) -> bool {
        self.config.with_data
    }

    /// Whether anything is recorded at all (file or tracing).
    pub fn enabled(&self) -> bool {
        self.config.path.is_some() || self.config.tracing
    }

    /// The file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.config.path.as_deref()
    }

    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one record.
    pub fn record(&self, rec: &DecisionRecord) {
        if self.config.tracing {
            tracing::info!(
                target: "gatehouse::decision",
                decision_id = %rec.decision_id,
                request_id = %rec.request_id,
                sub = rec.sub.as_deref(),
                policy = %rec.policy,
                action = %rec.action,
                resource_id = rec.resource_id.as_deref(),
                outcome = ?rec.outcome,
                reason = rec.reason.as_deref(),
                policy_version = rec.policy_version.as_deref(),
                duration_us = rec.duration_us,
                "decision"
            );
        }
        let guard = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else { return };
        let line = match serde_json::to_string(rec) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a decision record");
                return;
            }
        };
        match tx.try_send(line) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n + 1, "decision log cannot keep up; records dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Stops the writer after it has written and flushed everything queued.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_append(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    out: BufWriter<fs::File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<String>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.write(&line);
                    // Write what else is queued, then hand the batch to the file: one write
                    // call per burst under load, and records readable at once when idle.
                    while let Ok(line) = rx.try_recv() {
                        self.write(&line);
                    }
                    self.flush();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    fn write(&mut self, line: &str) {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot rotate the decision log");
            }
        }
        let result = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"));
        match result {
            Ok(()) => self.size += n,
            Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "cannot write the decision log"),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the decision log");
        }
    }

    /// `decisions.jsonl` → `.1` → `.2` … (the oldest beyond `keep` is removed).
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, self.keep));
            for i in (1..self.keep).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.out = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The last `n` records of policy `policy` (oldest first), read from `path` and its rotated
/// files. Lines that do not parse are skipped (and counted in the second value).
pub fn read_last(path: &Path, policy: &str, n: usize) -> io::Result<(Vec<DecisionRecord>, usize)> {
    let mut files = vec![path.to_path_buf()];
    for i in 1..=100 {
        let p = rotated(path, i);
        if !p.exists() {
            break;
        }
        files.push(p);
    }
    // Newest file first; within a file, lines are oldest first.
    let mut out: Vec<DecisionRecord> = Vec::new();
    let mut bad = 0;
    for file in files {
        let f = match fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut batch = Vec::new();
        for line in io::BufReader::new(f).split(b'\n') {
            // A torn or foreign line (not UTF-8, not a record) is skipped and counted.
            let Ok(line) = String::from_utf8(line?) else {
                bad += 1;
                continue;
            };
            // Cheap filter before parsing.
            if !line.contains(&format!("\"policy\":\"{policy}\"")) {
                continue;
            }
            match serde_json::from_str::<DecisionRecord>(&line) {
                Ok(rec) if rec.policy == policy => batch.push(rec),
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
        let need = n.saturating_sub(out.len());
        let start = batch.len().saturating_sub(need);
        let mut older: Vec<DecisionRecord> = batch.split_off(start);
        older.append(&mut out);
        out = older;
        if out.len() >= n {
            break;
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, policy: &str) -> DecisionRecord {
        DecisionRecord {
            time: "2026-12-03T20:00:00.000Z".into(),
            decision_id: format!("d{i}"),
            request_id: format!("r{i}"),
            sub: Some("ann".into()),
            policy: policy.into(),
            action: "read".into(),
            resource_id: Some(format!("id{i}")),
            outcome: Outcome::Allow,
            reason: None,
            error: None,
            policy_version: Some("v".into()),
            duration_us: 3,
            input: RecordedInput {
                claims: serde_json::json!({"sub": "ann"}),
                resource: RecordedResource {
                    kind: policy.into(),
                    id: Some(format!("id{i}")),
                    owner: Some("ann".into()),
                    data: None,
                    old: None,
                    extra: None,
                },
                request: RecordedRequest {
                    method: "GET".into(),
                    path: "/x".into(),
                    time: 1,
                    ip: None,
                    headers: Vec::new(),
                },
                with_data: false,
            },
        }
    }

    #[test]
    fn writes_rotates_and_reads_back_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/decisions.jsonl");
        let log = DecisionLog::open(LogConfig {
            path: Some(path.clone()),
            max_bytes: 4096,
            keep: 3,
            tracing: false,
            with_data: false,
        })
        .unwrap();
        for i in 0..60 {
            log.record(&record(i, if i % 2 == 0 { "notes" } else { "todos" }));
        }
        log.close();
        assert!(rotated(&path, 1).exists(), "rotated at 4 KiB");
        assert!(!rotated(&path, 4).exists(), "keeps at most 3");
        for file in [path.clone(), rotated(&path, 1)] {
            assert!(fs::metadata(&file).unwrap().len() <= 4096);
        }
        let (last, bad) = read_last(&path, "notes", 5).unwrap();
        assert_eq!(bad, 0);
        let ids: Vec<&str> = last.iter().map(|r| r.decision_id.as_str()).collect();
        assert_eq!(ids, ["d50", "d52", "d54", "d56", "d58"]);
        assert_eq!(last[0], record(50, "notes"));
        // Asking for more than there is gives everything that survived rotation, in order.
        let (all, _) = read_last(&path, "notes", 1000).unwrap();
        assert!(all.len() > 5 && all.len() < 30, "{}", all.len());
        assert!(all.windows(2).all(|w| {
            let n = |r: &DecisionRecord| r.decision_id[1..].parse::<u32>().unwrap();
            n(&w[0]) < n(&w[1])
        }));
    }

    #[test]
    fn data_is_left_out_unless_asked_for() {
        let claims = serde_json::json!({"sub": "ann"});
        let data = serde_json::json!({"secret": "x"});
        let resource = ResourceInput {
            kind: "notes",
            id: Some("n1"),
            owner: Some("ann"),
            data: &data,
            old: Some(&data),
            extra: None,
        };
        let request = RequestInput {
            method: "GET",
            path: "/resources/notes/n1",
            time: 5,
            ip: Some("10.0.0.1"),
            headers: &[("x-tenant", "acme"), ("authorization", "Bearer t")],
        };
        let lean = RecordedInput::capture(&claims, &resource, &request, false);
        let text = serde_json::to_string(&lean).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("acme") && !text.contains("Bearer"),
            "{text}"
        );
        let full = RecordedInput::capture(&claims, &resource, &request, true);
        let text = serde_json::to_string(&full).unwrap();
        assert!(
            text.contains("secret") && text.contains("acme") && !text.contains("Bearer"),
            "{text}"
        );
    }

    #[test]
    fn disabled_and_missing_logs_are_harmless() {
        let log = DecisionLog::disabled();
        log.record(&record(1, "notes"));
        assert!(!log.enabled());
        let dir = tempfile::tempdir().unwrap();
        let (none, _) = read_last(&dir.path().join("nope.jsonl"), "notes", 10).unwrap();
        assert!(none.is_empty());
    }
}
