//! The decision log: one JSON line per policy decision (allow, deny or error), written by a
//! background thread to `<data_dir>/decisions.jsonl` (configurable, size-rotated, switchable
//! off), and read back for replay.
//!
//! A record holds what an operator needs to go from a complaint to a decision (time, decision
//! id, request id, `sub`, policy, action, resource id, outcome, reason, policy version,
//! evaluation time) and what replay needs to decide it again (the claims, the resource without
//! its data, the request facts). Document data and request headers are left out unless
//! `decision_log_data` is on. Logging never blocks a request: records are appended to a bounded
//! in-memory buffer that a writer thread hands to the file every 50 ms, and when the disk cannot
//! keep up they are dropped and counted (and a warning logged).

use std::{
    fs,
    io::{self, BufRead as _, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Condvar, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Outcome, RequestInput, ResourceInput};

/// Bytes of records waiting for the writer; beyond this, new records are dropped (and counted).
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// Pending bytes at which the writer is woken before its next round.
const WAKE_BYTES: usize = 256 * 1024;

/// How often the writer hands what is pending to the file.
const WRITE_INTERVAL: Duration = Duration::from_millis(50);

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

/// One decision as it is written: borrowed from the request that made it, so that logging
/// copies nothing. Written as the JSON of a [`DecisionRecord`] (the tests read it back as one).
#[derive(Debug, Serialize)]
pub struct DecisionEvent<'a> {
    /// See [`DecisionRecord::time`].
    pub time: &'a str,
    /// See [`DecisionRecord::decision_id`].
    pub decision_id: &'a str,
    /// See [`DecisionRecord::request_id`].
    pub request_id: &'a str,
    /// See [`DecisionRecord::sub`].
    pub sub: Option<&'a str>,
    /// See [`DecisionRecord::policy`].
    pub policy: &'a str,
    /// See [`DecisionRecord::action`].
    pub action: &'a str,
    /// See [`DecisionRecord::resource_id`].
    pub resource_id: Option<&'a str>,
    /// See [`DecisionRecord::outcome`].
    pub outcome: Outcome,
    /// See [`DecisionRecord::reason`].
    pub reason: Option<&'a str>,
    /// See [`DecisionRecord::error`].
    pub error: Option<&'a str>,
    /// See [`DecisionRecord::policy_version`].
    pub policy_version: Option<&'a str>,
    /// See [`DecisionRecord::duration_us`].
    pub duration_us: u64,
    /// What the policy saw.
    pub input: EventInput<'a>,
}

/// The inputs of a decision as written (see [`RecordedInput`] for what is read back): data,
/// `old` and headers only when `with_data`, and never the credential headers.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    /// The claims, encoded once per token.
    pub claims: &'a serde_json::value::RawValue,
    /// `resource`.
    pub resource: &'a ResourceInput<'a>,
    /// `request`.
    pub request: &'a RequestInput<'a>,
    /// Whether document data and headers go in too.
    pub with_data: bool,
}

impl Serialize for EventInput<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Resource<'a>(&'a ResourceInput<'a>, bool);
        impl Serialize for Resource<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let Resource(r, with_data) = *self;
                let mut m = s.serialize_struct("RecordedResource", 6)?;
                m.serialize_field("kind", r.kind)?;
                m.serialize_field("id", &r.id)?;
                m.serialize_field("owner", &r.owner)?;
                if with_data {
                    m.serialize_field("data", r.data)?;
                    if let Some(old) = r.old {
                        m.serialize_field("old", old)?;
                    }
                }
                if let Some(extra) = r.extra {
                    m.serialize_field("extra", extra)?;
                }
                m.end()
            }
        }
        struct Request<'a>(&'a RequestInput<'a>, bool);
        impl Serialize for Request<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let Request(r, with_data) = *self;
                let mut m = s.serialize_struct("RecordedRequest", 5)?;
                m.serialize_field("method", r.method)?;
                m.serialize_field("path", r.path)?;
                m.serialize_field("time", &r.time)?;
                m.serialize_field("ip", &r.ip)?;
                if with_data {
                    let headers: Vec<&(&str, &str)> =
                        r.headers.iter().filter(|(k, _)| !is_credential_header(k)).collect();
                    if !headers.is_empty() {
                        m.serialize_field("headers", &headers)?;
                    }
                }
                m.end()
            }
        }
        let mut m = s.serialize_struct("RecordedInput", 4)?;
        m.serialize_field("claims", self.claims)?;
        m.serialize_field("resource", &Resource(self.resource, self.with_data))?;
        m.serialize_field("request", &Request(self.request, self.with_data))?;
        m.serialize_field("with_data", &self.with_data)?;
        m.end()
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
///
/// Requests never wake the writer or touch the file: each record is encoded on the calling
/// thread and appended to a shared buffer, and the writer thread hands that buffer to the file
/// every [`WRITE_INTERVAL`] (sooner when it grows large, at once on [`DecisionLog::sync`]).
#[derive(Debug)]
pub struct DecisionLog {
    shared: Option<std::sync::Arc<Shared>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    config: LogConfig,
    dropped: AtomicU64,
}

/// What requests and the writer share.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for its next round.
    wake: Condvar,
    /// [`DecisionLog::sync`] waits here for the writer's round to end.
    written: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    /// Encoded records, one line each.
    buf: Vec<u8>,
    closed: bool,
    /// Rounds asked for by `sync`, and the last one the writer finished.
    sync_asked: u64,
    sync_done: u64,
}

impl DecisionLog {
    /// Opens (creating the directory and file) and starts the writer thread.
    pub fn open(config: LogConfig) -> io::Result<Self> {
        let (shared, writer) = match &config.path {
            None => (None, None),
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)?;
                }
                let file = open_append(path)?;
                let meta = file.metadata()?;
                let shared = std::sync::Arc::new(Shared::default());
                let writer = Writer {
                    path: path.clone(),
                    size: meta.len(),
                    out: BufWriter::new(file),
                    // Only a regular file is rotated: renaming `/dev/null`, a pipe or a socket
                    // away (and creating a plain file in its place) would break it for everyone.
                    max_bytes: if meta.is_file() { config.max_bytes } else { u64::MAX },
                    keep: config.keep,
                };
                let handle = std::thread::Builder::new().name("decision-log".into()).spawn({
                    let shared = shared.clone();
                    move || writer.run(&shared)
                })?;
                (Some(shared), Some(handle))
            }
        };
        Ok(Self {
            shared,
            writer: Mutex::new(writer),
            config,
            dropped: AtomicU64::new(0),
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self {
            shared: None,
            writer: Mutex::new(None),
            config: LogConfig {
                path: None,
                max_bytes: u64::MAX,
                keep: 0,
                tracing: false,
                with_data: false,
            },
            dropped: AtomicU64::new(0),
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
    pub fn record(&self, rec: &DecisionEvent<'_>) {
        if self.config.tracing {
            tracing::info!(
                target: "gatehouse::decision",
                decision_id = rec.decision_id,
                request_id = rec.request_id,
                sub = rec.sub,
                policy = rec.policy,
                action = rec.action,
                resource_id = rec.resource_id,
                outcome = ?rec.outcome,
                reason = rec.reason,
                policy_version = rec.policy_version,
                duration_us = rec.duration_us,
                "decision"
            );
        }
        let Some(shared) = &self.shared else { return };
        SCRATCH.with(|scratch| {
            let mut line = scratch.borrow_mut();
            line.clear();
            if let Err(e) = serde_json::to_writer(&mut *line, rec) {
                tracing::warn!(error = %e, "cannot encode a decision record");
                return;
            }
            line.push(b'\n');
            let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.closed {
                return;
            }
            if pending.buf.len() + line.len() > MAX_PENDING_BYTES {
                drop(pending);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n + 1, "decision log cannot keep up; records dropped");
                }
                return;
            }
            let was = pending.buf.len();
            pending.buf.extend_from_slice(&line);
            if was < WAKE_BYTES && pending.buf.len() >= WAKE_BYTES {
                shared.wake.notify_one();
            }
        });
    }

    /// Waits (at most a few seconds) until every record queued before the call is in the file.
    /// For readers of the file, such as replay.
    pub fn sync(&self) {
        let Some(shared) = &self.shared else { return };
        let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.closed {
            return;
        }
        pending.sync_asked += 1;
        let ticket = pending.sync_asked;
        shared.wake.notify_one();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pending.sync_done < ticket {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("decision log writer did not answer; replaying what is on disk");
                return;
            }
            pending = shared
                .written
                .wait_timeout(pending, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops the writer after it has written and flushed everything queued.
    pub fn close(&self) {
        if let Some(shared) = &self.shared {
            shared.pending.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            shared.wake.notify_one();
        }
        if let Some(handle) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
    }
}

thread_local! {
    /// Where a record is encoded before it is appended to the shared buffer, so that the lock
    /// is held only for a copy.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
    fn run(mut self, shared: &Shared) {
        let mut batch = Vec::new();
        loop {
            let (closed, ticket) = {
                let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let idle = |p: &Pending| !p.closed && p.sync_asked == p.sync_done && p.buf.len() < WAKE_BYTES;
                if idle(&pending) {
                    pending = shared
                        .wake
                        .wait_timeout(pending, WRITE_INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                // Swap buffers: requests go on appending while this batch is written.
                std::mem::swap(&mut batch, &mut pending.buf);
                (pending.closed, pending.sync_asked)
            };
            if !batch.is_empty() {
                self.write_batch(&batch);
                batch.clear();
                self.flush();
            }
            let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.sync_done = ticket;
            shared.written.notify_all();
            if closed && pending.buf.is_empty() {
                return;
            }
        }
    }

    /// Writes whole lines, rotating between two lines when the file would grow too large.
    fn write_batch(&mut self, batch: &[u8]) {
        if self.size + batch.len() as u64 <= self.max_bytes {
            self.write(batch);
            return;
        }
        for line in batch.split_inclusive(|b| *b == b'\n') {
            self.write(line);
        }
    }

    /// Writes `bytes` (whole lines), rotating first when they would not fit.
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len() as u64;
        if self.size > 0 && self.size + n > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot rotate the decision log");
            }
        }
        match self.out.write_all(bytes) {
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
        if !fs::metadata(&self.path)?.is_file() {
            // Replaced by something else since it was opened: leave it alone, keep appending.
            self.max_bytes = u64::MAX;
            return Ok(());
        }
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

    /// A log at `path` that writes to it and not to tracing.
    fn open_log(path: PathBuf, max_bytes: u64, keep: u32, with_data: bool) -> DecisionLog {
        DecisionLog::open(LogConfig {
            path: Some(path),
            max_bytes,
            keep,
            tracing: false,
            with_data,
        })
        .unwrap()
    }

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

    /// Logs `rec` the way the server does, through a borrowed [`DecisionEvent`].
    fn write(log: &DecisionLog, rec: &DecisionRecord) {
        let empty = serde_json::json!({});
        let headers: Vec<(&str, &str)> = rec
            .input
            .request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resource = ResourceInput {
            kind: &rec.input.resource.kind,
            id: rec.input.resource.id.as_deref(),
            owner: rec.input.resource.owner.as_deref(),
            data: rec.input.resource.data.as_ref().unwrap_or(&empty),
            old: rec.input.resource.old.as_ref(),
            extra: rec.input.resource.extra.as_ref(),
        };
        let request = RequestInput {
            method: &rec.input.request.method,
            path: &rec.input.request.path,
            time: rec.input.request.time,
            ip: rec.input.request.ip.as_deref(),
            headers: &headers,
        };
        let claims = serde_json::value::to_raw_value(&rec.input.claims).unwrap();
        log.record(&DecisionEvent {
            time: &rec.time,
            decision_id: &rec.decision_id,
            request_id: &rec.request_id,
            sub: rec.sub.as_deref(),
            policy: &rec.policy,
            action: &rec.action,
            resource_id: rec.resource_id.as_deref(),
            outcome: rec.outcome,
            reason: rec.reason.as_deref(),
            error: rec.error.as_deref(),
            policy_version: rec.policy_version.as_deref(),
            duration_us: rec.duration_us,
            input: EventInput {
                claims: &claims,
                resource: &resource,
                request: &request,
                with_data: rec.input.with_data,
            },
        });
    }

    #[test]
    fn written_events_read_back_as_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = open_log(path.clone(), 1 << 20, 1, true);
        let mut lean = record(1, "notes");
        lean.reason = Some("no \"quotes\" here".into());
        let mut full = record(2, "notes");
        full.outcome = Outcome::Error;
        full.error = Some("notes.rhai:1:1: boom".into());
        full.input.with_data = true;
        full.input.resource.data = Some(serde_json::json!({"title": "t", "n": [1, 2.5, null]}));
        full.input.resource.old = Some(serde_json::json!({"title": "before"}));
        full.input.resource.extra = Some(serde_json::json!({"changes": ["roles"]}));
        full.input.request.headers = vec![("x-tenant".into(), "acme".into())];
        write(&log, &lean);
        write(&log, &full);
        log.close();
        let (all, bad) = read_last(&path, "notes", 10).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(all, [lean, full]);
    }

    /// `decision_log = "/dev/null"` once made the server rename `/dev/null` away. A FIFO stands in
    /// for it here (renaming the real one would break the machine).
    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_rotated() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("decisions.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo unavailable; skipped");
            return;
        }
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                let mut all = Vec::new();
                std::io::Read::read_to_end(&mut fs::File::open(fifo).unwrap(), &mut all).unwrap();
                all.len()
            }
        });
        let log = open_log(fifo.clone(), 1024, 2, false);
        for i in 0..40 {
            write(&log, &record(i, "notes"));
        }
        log.close();
        let read = reader.join().unwrap();
        assert!(read > 4 * 1024, "everything went through the FIFO: {read} bytes");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo(), "still the FIFO");
        assert!(!rotated(&fifo, 1).exists(), "never renamed");
    }

    #[test]
    fn writes_rotates_and_reads_back_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/decisions.jsonl");
        let log = open_log(path.clone(), 4096, 3, false);
        for i in 0..60 {
            write(&log, &record(i, if i % 2 == 0 { "notes" } else { "todos" }));
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
    fn sync_waits_for_what_is_buffered_and_requests_never_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = open_log(path.clone(), 1 << 20, 1, false);
        for round in 0..3 {
            for i in 0..10 {
                write(&log, &record(round * 10 + i, "notes"));
            }
            log.sync();
            let (all, bad) = read_last(&path, "notes", 1000).unwrap();
            assert_eq!((all.len(), bad), ((round + 1) * 10, 0));
        }
        log.close();
        // After close, records are ignored and sync returns at once.
        write(&log, &record(99, "notes"));
        log.sync();
        assert_eq!(read_last(&path, "notes", 1000).unwrap().0.len(), 30);
    }

    #[test]
    fn data_is_left_out_unless_asked_for() {
        let claims = serde_json::value::to_raw_value(&serde_json::json!({"sub": "ann"})).unwrap();
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
        let input = |with_data| EventInput {
            claims: &claims,
            resource: &resource,
            request: &request,
            with_data,
        };
        let text = serde_json::to_string(&input(false)).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("acme") && !text.contains("Bearer"),
            "{text}"
        );
        let text = serde_json::to_string(&input(true)).unwrap();
        assert!(
            text.contains("secret") && text.contains("acme") && !text.contains("Bearer"),
            "{text}"
        );
    }

    #[test]
    fn disabled_and_missing_logs_are_harmless() {
        let log = DecisionLog::disabled();
        write(&log, &record(1, "notes"));
        assert!(!log.enabled());
        let dir = tempfile::tempdir().unwrap();
        let (none, _) = read_last(&dir.path().join("nope.jsonl"), "notes", 10).unwrap();
        assert!(none.is_empty());
    }
}
