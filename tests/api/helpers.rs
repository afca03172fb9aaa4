//! Test fixture: [`TestServer::start`] runs the real binary with temp dirs on a free port;
//! [`TestServer::req`] speaks HTTP without treating 4xx/5xx as errors.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

pub const ADMIN_PW: &str = "admin-test-pw-123";
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// The shipped policies of the repository.
pub fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The binary of example `name` (a plugin server), built by `cargo test` next to the
/// `gatehouse` binary in `target/<profile>/examples/`.
pub fn example_bin(name: &str) -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap().join("examples");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "example binary `{}` is missing: `cargo test` builds examples, a filtered run may not; \
         run `cargo build --example {name}` (with the same profile) first",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
    /// Asserts an RFC 9457 problem with this status.
    pub fn assert_problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.content_type().starts_with("application/problem+json"), "{self:?}");
        let p = self.json();
        for k in ["type", "title", "status", "detail"] {
            assert!(p.get(k).is_some(), "problem lacks `{k}`: {self:?}");
        }
        assert_eq!(p["status"], status);
        p
    }
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub policies: PathBuf,
    pub port: u16,
    pub base: String,
    pub env: Vec<(String, String)>,
    /// The program started by [`TestServer::spawn`]: the `gatehouse` binary or an example.
    pub bin: PathBuf,
    child: Option<Child>,
    agent: ureq::Agent,
}

impl TestServer {
    /// A server with the shipped policies.
    pub fn start() -> Self {
        Self::start_with(Some(&shipped_policies()), &[])
    }

    /// A server whose policy dir is a copy of `policies` (or empty), with extra env vars.
    pub fn start_with(policies: Option<&Path>, env: &[(&str, &str)]) -> Self {
        Self::start_bin(Path::new(BIN), policies, env)
    }

    /// As [`TestServer::start_with`], running another binary with gatehouse's command line
    /// (e.g. [`example_bin`]).
    pub fn start_bin(bin: &Path, policies: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pol = dir.path().join("policies");
        std::fs::create_dir_all(&pol).unwrap();
        if let Some(src) = policies {
            for entry in std::fs::read_dir(src).unwrap() {
                let entry = entry.unwrap();
                if entry.path().extension().is_some_and(|e| e == "rhai") {
                    std::fs::copy(entry.path(), pol.join(entry.file_name())).unwrap();
                }
            }
        }
        let port = free_port();
        let mut env_vars: Vec<(String, String)> = vec![
            ("GATEHOUSE_ADMIN_PASSWORD".into(), ADMIN_PW.into()),
            ("GATEHOUSE_JWT_SECRET".into(), SECRET.into()),
            // Many tests fail logins on purpose; login throttling has its own test.
            ("GATEHOUSE_LOGIN_FAILURE_LIMIT".into(), "10000".into()),
        ];
        for (k, v) in env {
            env_vars.retain(|(ek, _)| ek != k);
            env_vars.push(((*k).into(), (*v).into()));
        }
        let mut s = TestServer {
            base: format!("http://127.0.0.1:{port}"),
            dir,
            data,
            policies: pol,
            port,
            env: env_vars,
            bin: bin.to_path_buf(),
            child: None,
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build(),
        };
        s.spawn();
        s
    }

    /// Starts (or restarts) the process and waits for /healthz.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--policies")
            .arg(&self.policies)
            .env_remove("GATEHOUSE_JWT_SECRET")
            .env_remove("GATEHOUSE_ADMIN_PASSWORD")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .current_dir(self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early ({status}):\n{}", self.logs());
            }
            if let Ok(r) = self
                .agent
                .get(&format!("{}/healthz", self.base))
                .timeout(Duration::from_millis(500))
                .call()
            {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server did not start:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_and_wait("TERM")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `SIG<sig>` (e.g. `INT`) without waiting.
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Whether the process has exited (without reaping it for good: its status is kept).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Sends `SIG<sig>` and waits up to 15 s (then SIGKILL); returns the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> Option<std::process::ExitStatus> {
        self.signal(sig);
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (kill -9), no chance to flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Any request; `body` is sent as is with `content_type`. Panics on a transport error.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<(&str, &[u8])>) -> Resp {
        self.try_raw(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Any request; a transport error (refused, reset, timed out) is an `Err`, not a panic.
    pub fn try_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Resp, String> {
        let mut r = self.agent.request(method, &self.url(path));
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let result = match body {
            Some((ctype, bytes)) => r.set("Content-Type", ctype).send_bytes(bytes),
            None => r.call(),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => return Err(format!("{method} {path}: {e}")),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        let body = resp.into_string().map_err(|e| format!("{method} {path}: body: {e}"))?;
        Ok(Resp { status, headers, body })
    }

    /// A JSON request with an optional bearer token.
    pub fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.raw(
            method,
            path,
            &headers,
            bytes.as_deref().map(|b| ("application/json", b)),
        )
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.req("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.req("POST", path, Some(token), Some(&body))
    }

    /// POST /token with a form.
    pub fn token_form(&self, form: &[(&str, &str)]) -> Resp {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", k, urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.raw(
            "POST",
            "/token",
            &[],
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
    }

    /// Logs in; panics on failure.
    pub fn login(&self, user: &str, pw: &str) -> String {
        let r = self.token_form(&[("grant_type", "password"), ("username", user), ("password", pw)]);
        assert_eq!(r.status, 200, "login {user}: {r:?}");
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PW)
    }

    /// Creates a user through the API (as admin) and logs them in.
    pub fn user(&self, admin: &str, name: &str, roles: &[&str]) -> String {
        let pw = format!("{name}-password-123");
        let r = self.post(
            "/users",
            admin,
            json!({"username": name, "password": pw, "roles": roles}),
        );
        assert_eq!(r.status, 201, "{r:?}");
        self.login(name, &pw)
    }

    /// Writes `policies/<name>.rhai` in place.
    pub fn write_policy(&self, name: &str, src: &str) {
        std::fs::write(self.policies.join(format!("{name}.rhai")), src).unwrap();
    }

    /// Writes `policies/<name>.rhai` via a temp file and rename, as editors do.
    pub fn write_policy_atomic(&self, name: &str, src: &str) {
        let tmp = self.policies.join(format!(".{name}.rhai.tmp"));
        std::fs::write(&tmp, src).unwrap();
        std::fs::rename(&tmp, self.policies.join(format!("{name}.rhai"))).unwrap();
    }

    pub fn remove_policy(&self, name: &str) {
        std::fs::remove_file(self.policies.join(format!("{name}.rhai"))).unwrap();
    }

    /// Runs the CLI with this server's settings env.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        cli(&self.env, args, stdin, self.dir.path())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary with args, env and optional stdin.
pub fn cli(env: &[(String, String)], args: &[&str], stdin: Option<&str>, cwd: &Path) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Polls `f` until it is true or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs arbitrary claims with HS256 and the test secret (or another key).
pub fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    let sig = jsonwebtoken::crypto::sign(signing.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{signing}.{sig}")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- Added for policies.rs, hot_reload.rs, durability.rs, cli.rs, traps.rs ----

impl TestServer {
    /// As [`TestServer::req`], but a transport failure (refused, reset, timeout) is returned as
    /// `Err` instead of panicking, so that threads can count them.
    pub fn try_req(&self, method: &str, path: &str, token: Option<&str>) -> Result<Resp, String> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.try_raw(method, path, &headers, None)
    }
}

/// A temporary policy directory holding copies of the shipped policies plus `extra`
/// (`(name, source)` written as `<name>.rhai`). Pass its path to [`TestServer::start_with`].
pub fn policy_dir_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "rhai") {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    for (name, src) in extra {
        std::fs::write(dir.path().join(format!("{name}.rhai")), src).unwrap();
    }
    dir
}

/// Runs the binary like [`cli`], but kills it after `timeout`; `None` when it had to be killed.
/// Only the given env is set (no `GATEHOUSE_*` leaks in from the test's environment).
pub fn cli_timeout(
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
    cwd: &Path,
    timeout: Duration,
) -> Option<std::process::Output> {
    use std::io::{Read, Write};
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            // The program may exit (e.g. refuse) before reading: a broken pipe is not our error.
            let _ = pipe.write_all(input.as_bytes());
        }
    }
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    status.map(|status| std::process::Output { status, stdout, stderr })
}

/// The decoded payload (claims) of a JWT.
pub fn token_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
