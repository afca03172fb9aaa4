//! Operations: `GET /metrics`, structured logs with request ids, graceful shutdown, and the
//! configuration reference in README.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::{json, Value};

use crate::helpers::*;

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels in any
/// order; label values here hold no `,` or `"`), or `None` when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let (n, rest) = key.split_once('{').unwrap_or((key, "}"));
        let got: BTreeSet<String> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        (n == name && got == wanted).then(|| value.parse().ok()).flatten()
    })
}

fn metrics(s: &TestServer) -> String {
    let r = s.raw("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    r.body
}

/// Every line of a text exposition is a comment or `name{labels} value`, and every family
/// has HELP and TYPE.
fn assert_well_formed(text: &str) {
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        let name = key.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without TYPE: {line}");
        assert!(name.starts_with("gatehouse_"), "{line}");
    }
}

/// Requests by route and status, decisions by policy and outcome, evaluation time, token
/// issues and failures, reloads and reload failures: each moves when its event happens, and
/// no label holds a user name, a document id or a raw path.
#[test]
fn metrics_count_what_happens() {
    let s = TestServer::start();
    let before = metrics(&s);
    assert_well_formed(&before);
    assert_eq!(
        sample(
            &before,
            "gatehouse_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // The shipped policies were loaded at start.
    assert_eq!(
        sample(
            &before,
            "gatehouse_policy_reloads_total",
            &[("policy", "notes"), ("result", "loaded")]
        ),
        Some(1.0)
    );

    let admin = s.admin_token();
    let ann = s.user(&admin, "ann-metrics", &["user"]);
    let bad = s.token_form(&[
        ("grant_type", "password"),
        ("username", "ann-metrics"),
        ("password", "wrong-pw-1"),
    ]);
    assert_eq!(bad.status, 400);
    let doc = s.post("/resources/notes", &ann, json!({"title": "hello"}));
    assert_eq!(doc.status, 201, "{doc:?}");
    let id = doc.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&format!("/resources/notes/{id}"), &ann).status, 200);
    // The shipped notes policy wants a string title: a deny.
    assert_eq!(s.post("/resources/notes", &ann, json!({"title": 5})).status, 403);
    assert_eq!(s.raw("GET", "/no/such/path", &[], None).status, 404);
    assert_eq!(s.raw("BREW", "/resources/notes", &[], None).status, 405);
    // Refused before any operation ran: still counted under the route's template.
    let big = vec![b' '; 2 * 1024 * 1024];
    let auth = format!("Bearer {ann}");
    // The server answers 413 at once and closes; the client may see that or a broken pipe.
    let r = s.try_raw(
        "POST",
        "/resources/notes",
        &[("Authorization", &auth)],
        Some(("application/json", &big)),
    );
    if let Ok(r) = r {
        assert_eq!(r.status, 413);
    }
    // A broken edit: the reload fails, the last good version stays.
    s.write_policy("notes", "this is not rhai (");
    wait_until(Duration::from_secs(10), || {
        sample(
            &metrics(&s),
            "gatehouse_policy_reloads_total",
            &[("policy", "notes"), ("result", "failed")],
        )
        .is_some()
    })
    .expect("the failed reload is counted");

    let m = metrics(&s);
    assert_well_formed(&m);
    let count = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels).unwrap_or(0.0);
    let http = "gatehouse_http_requests_total";
    assert!(
        count(http, &[("method", "POST"), ("route", "/token"), ("status", "200")]) >= 2.0,
        "{m}"
    );
    assert_eq!(
        count(http, &[("method", "POST"), ("route", "/token"), ("status", "400")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        count(
            http,
            &[("method", "POST"), ("route", "/resources/{kind}"), ("status", "201")]
        ),
        1.0
    );
    assert_eq!(
        count(
            http,
            &[("method", "POST"), ("route", "/resources/{kind}"), ("status", "403")]
        ),
        1.0
    );
    assert_eq!(
        count(
            http,
            &[
                ("method", "GET"),
                ("route", "/resources/{kind}/{id}"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        count(
            http,
            &[("method", "POST"), ("route", "/resources/{kind}"), ("status", "413")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        count(http, &[("method", "GET"), ("route", "unmatched"), ("status", "404")]),
        1.0
    );
    assert_eq!(
        count(
            http,
            &[("method", "other"), ("route", "/resources/{kind}"), ("status", "405")]
        ),
        1.0,
        "{m}"
    );
    assert!(count(http, &[("method", "GET"), ("route", "/metrics"), ("status", "200")]) >= 2.0);
    let latency = "gatehouse_http_request_duration_seconds_count";
    assert_eq!(
        count(latency, &[("method", "GET"), ("route", "/resources/{kind}/{id}")]),
        1.0
    );
    assert_eq!(
        count(
            "gatehouse_http_request_duration_seconds_bucket",
            &[("method", "GET"), ("route", "/resources/{kind}/{id}"), ("le", "+Inf")]
        ),
        1.0
    );

    let decisions = "gatehouse_policy_decisions_total";
    assert_eq!(
        count(decisions, &[("policy", "notes"), ("outcome", "allow")]),
        2.0,
        "{m}"
    );
    assert_eq!(
        count(decisions, &[("policy", "notes"), ("outcome", "deny")]),
        1.0,
        "{m}"
    );
    assert!(
        count(decisions, &[("policy", "_users"), ("outcome", "allow")]) >= 1.0,
        "{m}"
    );
    assert_eq!(
        count(
            "gatehouse_policy_evaluation_duration_seconds_count",
            &[("policy", "notes")]
        ),
        3.0
    );

    assert!(
        count("gatehouse_tokens_issued_total", &[("grant", "password")]) >= 2.0,
        "{m}"
    );
    assert_eq!(
        count(
            "gatehouse_token_failures_total",
            &[("grant", "password"), ("error", "invalid_grant")]
        ),
        1.0
    );
    // The notes policy joins whatever failed at start (the fixture copies no libraries).
    let failing_before = sample(&before, "gatehouse_policies", &[("state", "failing")]).unwrap();
    assert_eq!(
        count("gatehouse_policies", &[("state", "failing")]),
        failing_before + 1.0,
        "{m}"
    );
    assert!(count("gatehouse_policies", &[("state", "loaded")]) >= 3.0, "{m}");
    assert_eq!(
        count("gatehouse_http_requests_in_flight", &[]),
        1.0,
        "only this scrape is in flight"
    );

    for secret in [id.as_str(), "ann-metrics", "/no/such/path", ADMIN_PW, ann.as_str()] {
        assert!(!m.contains(secret), "`{secret}` appears in the metrics:\n{m}");
    }
}

/// The refresh grant and its failures are counted apart from the password grant.
#[test]
fn metrics_count_token_grants() {
    let s = TestServer::start();
    let r = s.token_form(&[
        ("grant_type", "password"),
        ("username", "admin"),
        ("password", ADMIN_PW),
    ]);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .status,
        200
    );
    assert_eq!(
        s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", "nope")])
            .status,
        400
    );
    assert_eq!(s.token_form(&[("grant_type", "client_credentials")]).status, 400);
    let m = metrics(&s);
    assert_eq!(
        sample(&m, "gatehouse_tokens_issued_total", &[("grant", "refresh_token")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_token_failures_total",
            &[("grant", "refresh_token"), ("error", "invalid_grant")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_token_failures_total",
            &[("grant", "other"), ("error", "unsupported_grant_type")]
        ),
        Some(1.0),
        "{m}"
    );
}

/// `metrics = false` turns the endpoint off (404 problem+json); the rest still works.
#[test]
fn metrics_can_be_turned_off() {
    let s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_METRICS", "false")]);
    let r = s.raw("GET", "/metrics", &[], None);
    r.assert_problem(404);
    assert!(r.json()["detail"].as_str().unwrap().contains("metrics = false"));
    assert_eq!(s.raw("GET", "/healthz", &[], None).status, 200);
}

/// `log_format = "json"`: every log line on stderr is one JSON object; the lines of a request
/// carry its `X-Request-Id`; no password, token or secret is in any line, even at `trace`.
#[test]
fn json_logs_carry_the_request_id_and_no_secrets() {
    let s = TestServer::start_with(
        Some(&shipped_policies()),
        &[("GATEHOUSE_LOG_FORMAT", "json"), ("RUST_LOG", "trace")],
    );
    let admin = s.admin_token();
    let pw = "carol-very-secret-pw-77";
    let r = s.post(
        "/users",
        &admin,
        json!({"username": "carol", "password": pw, "roles": ["user"]}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let login = s.token_form(&[("grant_type", "password"), ("username", "carol"), ("password", pw)]);
    let access = login.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = s.raw(
        "GET",
        "/resources/notes",
        &[
            ("Authorization", &format!("Bearer {access}")),
            ("X-Request-Id", "ops-test-req-1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("ops-test-req-1"));
    let r = s.token_form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(r.status, 200);
    // A failed login logs a line inside the request span.
    let r = s.raw(
        "POST",
        "/token",
        &[("X-Request-Id", "ops-test-req-2")],
        Some((
            "application/x-www-form-urlencoded",
            b"grant_type=password&username=carol&password=wrong-password-9",
        )),
    );
    assert_eq!(r.status, 400);
    // A reload caused by a request logs inside that request's span.
    let r = s.raw(
        "PUT",
        "/policies/widgets",
        &[
            ("Authorization", &format!("Bearer {admin}")),
            ("X-Request-Id", "ops-test-req-3"),
        ],
        Some(("text/plain", b"true")),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let mut s = s;
    assert_eq!(s.stop().and_then(|st| st.code()), Some(0));

    let logs = s.logs();
    let mut json_lines = 0;
    let mut by_request: Vec<Value> = Vec::new();
    for line in logs.lines() {
        // The startup banner is printed on stdout (the fixture merges both streams).
        if !line.starts_with('{') {
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(),
            "{line}"
        );
        json_lines += 1;
        if v["span"]["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ops-test-req-"))
        {
            by_request.push(v);
        }
    }
    assert!(json_lines > 10, "{logs}");
    let access_line = by_request
        .iter()
        .find(|v| v["target"] == "gatehouse::access" && v["span"]["request_id"] == "ops-test-req-1")
        .unwrap_or_else(|| panic!("no access line for the request:\n{logs}"));
    assert_eq!(access_line["status"], 200);
    assert_eq!(access_line["route"], "/resources/{kind}");
    assert_eq!(access_line["span"]["method"], "GET");
    assert!(
        by_request
            .iter()
            .any(|v| v["span"]["request_id"] == "ops-test-req-2" && v["message"] == "login failed"),
        "{logs}"
    );
    assert!(
        by_request
            .iter()
            .any(|v| v["span"]["request_id"] == "ops-test-req-3" && v["message"] == "policy loaded"),
        "{logs}"
    );
    let signature = access.rsplit('.').next().unwrap();
    for secret in [
        pw,
        "wrong-password-9",
        ADMIN_PW,
        SECRET,
        access.as_str(),
        signature,
        refresh.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret is in the log:\n{logs}");
    }
}

/// An unknown log format is refused at start with a message naming the setting.
#[test]
fn unknown_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        &[("GATEHOUSE_LOG_FORMAT".into(), "xml".into())],
        &["serve", "--bind", "127.0.0.1:0"],
        None,
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_format") && err.contains("json"), "{err}");
}

/// Opens a connection and sends the head of `POST /resources/notes` with `len` bytes of body
/// announced but only `sent` of them, then waits until the server counts the request in flight
/// (the metrics scrape itself is the other one).
fn held_request(s: &TestServer, token: &str, body: &str, sent: usize) -> TcpStream {
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /resources/notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body.as_bytes()[..sent]).unwrap();
    conn.flush().unwrap();
    let in_flight = wait_until(Duration::from_secs(10), || {
        sample(&metrics(s), "gatehouse_http_requests_in_flight", &[]) == Some(2.0)
    });
    assert!(in_flight.is_some(), "the held request never showed as in flight");
    conn
}

/// Whether new connections are refused within 10 s.
fn refuses_connections(s: &TestServer) -> bool {
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect_timeout(&([127, 0, 0, 1], s.port).into(), Duration::from_secs(1)).is_err()
    })
    .is_some()
}

/// SIGTERM (and SIGINT) during a request: the server stops accepting connections, finishes the
/// request (its body arrives after the signal), flushes, and exits 0; what it acknowledged is
/// there after a restart.
#[test]
fn shutdown_finishes_in_flight_requests() {
    for sig in ["TERM", "INT"] {
        let mut s = TestServer::start();
        let admin = s.admin_token();
        let body = json!({"title": format!("written during SIG{sig}")}).to_string();
        let mut conn = held_request(&s, &admin, &body, 5);
        s.signal(sig);
        assert!(refuses_connections(&s), "SIG{sig}: new connections are still accepted");
        assert!(
            !s.exited(),
            "SIG{sig}: the server exited with a request in flight:\n{}",
            s.logs()
        );
        conn.write_all(&body.as_bytes()[5..]).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 201"), "SIG{sig}: {answer}");
        let id = answer
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let status = s.signal_and_wait(sig).unwrap();
        assert_eq!(status.code(), Some(0), "SIG{sig}: {status}\n{}", s.logs());
        let logs = s.logs();
        assert!(
            logs.contains("shutting down") && logs.contains("gatehouse stopped"),
            "{logs}"
        );
        s.spawn();
        let r = s.get(&format!("/resources/notes/{id}"), &s.admin_token());
        assert_eq!(r.status, 200, "SIG{sig}: the acknowledged note is gone: {r:?}");
    }
}

/// A request still running after `shutdown_timeout` does not hold the server up forever: it
/// waits that long for it, then stops anyway, with exit status 0.
#[test]
fn shutdown_is_bounded() {
    let mut s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_SHUTDOWN_TIMEOUT", "2")]);
    let admin = s.admin_token();
    let _conn = held_request(&s, &admin, &json!({"title": "never finished"}).to_string(), 4);
    let started = std::time::Instant::now();
    let status = s.signal_and_wait("TERM").unwrap();
    assert_eq!(status.code(), Some(0), "{status}\n{}", s.logs());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "it did not wait for the request: {took:?}"
    );
    assert!(took < Duration::from_secs(12), "took {took:?}");
}

/// A second signal stops the server without waiting for requests in flight (a half-sent
/// request would otherwise hold it for all of `shutdown_timeout`); it still exits 0.
#[test]
fn second_signal_forces_the_stop() {
    let mut s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_SHUTDOWN_TIMEOUT", "60")]);
    let admin = s.admin_token();
    let _conn = held_request(&s, &admin, &json!({"title": "never finished"}).to_string(), 4);
    s.signal("TERM");
    assert!(refuses_connections(&s), "new connections are still accepted");
    assert!(!s.exited(), "the held request should hold the graceful stop");
    let started = std::time::Instant::now();
    let status = s.signal_and_wait("INT").unwrap();
    assert_eq!(status.code(), Some(0), "{status}\n{}", s.logs());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(s.logs().contains("stopping without waiting"), "{}", s.logs());
}

/// README's configuration reference names every setting of `gatehouse serve` with its env
/// variable and its flag.
#[test]
fn readme_config_reference_lists_every_setting() {
    let out = cli(&[], &["serve", "--help"], None, std::env::temp_dir().as_path());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration section");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let mut flags = 0;
    for word in help.split_whitespace() {
        let Some(flag) = word.strip_prefix("--") else { continue };
        let flag = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
        if flag.is_empty() || flag == "help" || flag == "version" {
            continue;
        }
        flags += 1;
        let key = flag.replace('-', "_");
        let env = format!("GATEHOUSE_{}", key.to_ascii_uppercase());
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("README's configuration table has no row for `{key}`"));
        assert!(
            row.contains(&format!("`{env}`")),
            "the row of `{key}` does not name `{env}`: {row}"
        );
        assert!(
            row.contains(&format!("`--{flag}`")),
            "the row of `{key}` does not name `--{flag}`: {row}"
        );
        assert!(help.contains(&env), "`gatehouse serve --help` does not name {env}");
    }
    assert!(flags >= 30, "found only {flags} flags in:\n{help}");
}
