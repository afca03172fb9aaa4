//! The command line: `user add/list/passwd/remove` on a stopped server's data dir, the plain
//! refusal while a server holds it, `policy check`, `openapi`, and settings precedence and
//! validation (flags > env > file, unknown file keys, short JWT secrets).

use std::{path::Path, process::Output, time::Duration};

use serde_json::Value;

use crate::helpers::*;

/// Runs the binary with only `env` set; panics if it does not finish within 30 s.
fn run(env: &[(&str, &str)], args: &[&str], stdin: Option<&str>, cwd: &Path) -> Output {
    cli_timeout(env, args, stdin, cwd, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("gatehouse {args:?} did not finish within 30 s"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stdout and stderr together.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts the run succeeded.
fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}\n{}", o.status, text(o));
}

/// Asserts a clean failure: non-zero exit, and no panic or backtrace in the output.
fn clean_failure(o: &Output, what: &str) -> String {
    let all = text(o);
    assert!(!o.status.success(), "{what} should fail:\n{all}");
    assert!(
        o.status.code().is_some_and(|c| c != 101),
        "{what}: exit {} is a panic or a signal:\n{all}",
        o.status
    );
    let lower = all.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "{what}: a panic instead of a message:\n{all}"
    );
    assert!(!all.trim().is_empty(), "{what}: failed without a message");
    all
}

/// `user ... --data-dir DIR` args.
fn user_args<'a>(data: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["user"];
    v.extend_from_slice(rest);
    v.extend_from_slice(&["--data-dir", data]);
    v
}

/// A stopped test server (its data dir holds `admin`), for the user commands.
fn stopped_server() -> (TestServer, String) {
    let mut s = TestServer::start();
    s.stop();
    let data = s.data.to_str().unwrap().to_owned();
    (s, data)
}

fn last_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | ',' | ';' | ')' | '('))
        .to_owned()
}

/// `user add NAME --role R --password-stdin` then `user list` shows it, and it logs in once the
/// server runs, with those roles.
#[test]
fn user_add_then_list_and_login() {
    let (mut s, data) = stopped_server();
    let cwd = s.dir.path().to_owned();
    let o = run(
        &[],
        &user_args(
            &data,
            &["add", "carol", "--role", "editor", "--role", "user", "--password-stdin"],
        ),
        Some("carol-password-123\n"),
        &cwd,
    );
    ok(&o, "user add");
    let o = run(&[], &user_args(&data, &["list"]), None, &cwd);
    ok(&o, "user list");
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("carol"))
        .unwrap_or_else(|| panic!("user list lacks carol:\n{out}"));
    assert!(line.contains("editor") && line.contains("user"), "{line}");
    assert!(
        out.lines().any(|l| l.split_whitespace().next() == Some("admin")),
        "{out}"
    );
    assert!(!out.contains("argon2"), "user list shows a hash:\n{out}");

    s.spawn();
    let t = s.login("carol", "carol-password-123");
    let r = s.get("/users/carol", &t);
    assert_eq!(r.status, 200, "{r:?}");
    let mut roles: Vec<String> = serde_json::from_value(r.json()["roles"].clone()).unwrap();
    roles.sort();
    assert_eq!(roles, ["editor", "user"]);
}

/// `user add` without --password-stdin prints a generated password that logs in.
#[test]
fn user_add_prints_generated_password() {
    let (mut s, data) = stopped_server();
    let cwd = s.dir.path().to_owned();
    let o = run(&[], &user_args(&data, &["add", "dave"]), None, &cwd);
    ok(&o, "user add");
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.to_lowercase().contains("password"))
        .unwrap_or_else(|| panic!("no password printed:\n{}", text(&o)));
    let pw = last_word(line);
    assert!(pw.len() >= 12, "generated password looks too short: {pw:?}");
    s.spawn();
    s.login("dave", &pw);
}

/// `user passwd NAME --password-stdin` sets a new password; the old one stops working.
#[test]
fn user_passwd_changes_password() {
    let (mut s, data) = stopped_server();
    let cwd = s.dir.path().to_owned();
    let o = run(
        &[],
        &user_args(&data, &["add", "erin", "--password-stdin"]),
        Some("erin-old-password\n"),
        &cwd,
    );
    ok(&o, "user add");
    let o = run(
        &[],
        &user_args(&data, &["passwd", "erin", "--password-stdin"]),
        Some("erin-new-password\n"),
        &cwd,
    );
    ok(&o, "user passwd");
    s.spawn();
    s.login("erin", "erin-new-password");
    let r = s.token_form(&[
        ("grant_type", "password"),
        ("username", "erin"),
        ("password", "erin-old-password"),
    ]);
    assert_eq!(r.status, 400, "old password still works: {r:?}");
    assert_eq!(r.json()["error"], "invalid_grant");
}

/// `user remove NAME` deletes the user (gone from the list, cannot log in); removing an
/// unknown user fails.
#[test]
fn user_remove_deletes_user() {
    let (mut s, data) = stopped_server();
    let cwd = s.dir.path().to_owned();
    let o = run(
        &[],
        &user_args(&data, &["add", "frank", "--password-stdin"]),
        Some("frank-password-1\n"),
        &cwd,
    );
    ok(&o, "user add");
    let o = run(&[], &user_args(&data, &["remove", "frank"]), None, &cwd);
    ok(&o, "user remove");
    let o = run(&[], &user_args(&data, &["list"]), None, &cwd);
    ok(&o, "user list");
    assert!(
        !stdout(&o).lines().any(|l| l.split_whitespace().next() == Some("frank")),
        "{}",
        stdout(&o)
    );
    let o = run(&[], &user_args(&data, &["remove", "frank"]), None, &cwd);
    clean_failure(&o, "removing an unknown user");
    s.spawn();
    let r = s.token_form(&[
        ("grant_type", "password"),
        ("username", "frank"),
        ("password", "frank-password-1"),
    ]);
    assert_eq!(r.status, 400, "removed user logs in: {r:?}");
}

/// Adding an existing user fails with a non-zero exit and leaves the first one intact.
#[test]
fn user_add_duplicate_fails() {
    let (mut s, data) = stopped_server();
    let cwd = s.dir.path().to_owned();
    let args = user_args(&data, &["add", "gina", "--password-stdin"]);
    ok(&run(&[], &args, Some("gina-password-1\n"), &cwd), "first add");
    let o = run(&[], &args, Some("gina-password-2\n"), &cwd);
    let msg = clean_failure(&o, "duplicate add");
    assert!(msg.contains("gina"), "message does not name the user: {msg}");
    s.spawn();
    s.login("gina", "gina-password-1");
}

/// While a server holds the data dir, `user list`/`user add` exit non-zero with a plain message
/// that mentions the running server, and the server is unharmed.
#[test]
fn user_commands_refuse_while_server_runs() {
    let s = TestServer::start();
    let data = s.data.to_str().unwrap().to_owned();
    let cwd = s.dir.path().to_owned();
    let o = run(&[], &user_args(&data, &["list"]), None, &cwd);
    let msg = clean_failure(&o, "user list while the server runs");
    assert!(
        msg.to_lowercase().contains("server"),
        "message does not mention the server: {msg}"
    );
    let o = run(
        &[],
        &user_args(&data, &["add", "hank", "--password-stdin"]),
        Some("hank-password-1\n"),
        &cwd,
    );
    let msg = clean_failure(&o, "user add while the server runs");
    assert!(msg.to_lowercase().contains("server"), "{msg}");
    let t = s.admin_token();
    assert_eq!(s.get("/users/admin", &t).status, 200);
    assert_eq!(s.get("/users/hank", &t).status, 404);
}

/// `policy check` on the shipped policies exits 0.
#[test]
fn policy_check_shipped_policies_ok() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_policies();
    let o = run(&[], &["policy", "check", shipped.to_str().unwrap()], None, dir.path());
    ok(&o, "policy check");
}

/// Finds `file:LINE:COL: message` in `out`; returns (line, col).
fn find_diag(out: &str, file: &str) -> Option<(u32, u32)> {
    out.lines().find_map(|l| {
        let at = l.find(&format!("{file}:"))?;
        let mut parts = l[at + file.len() + 1..].splitn(3, ':');
        let line = parts.next()?.parse().ok()?;
        let col = parts.next()?.parse().ok()?;
        let msg = parts.next()?.strip_prefix(' ')?;
        (!msg.trim().is_empty()).then_some((line, col))
    })
}

/// `policy check` on a broken file exits non-zero and prints `bad.rhai:LINE:COL: message`,
/// for a directory and for the file itself.
#[test]
fn policy_check_broken_file_reports_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.rhai"), "true\n").unwrap();
    std::fs::write(dir.path().join("bad.rhai"), "// line one\nlet x = ;\ntrue\n").unwrap();
    let bad = dir.path().join("bad.rhai");
    for target in [dir.path(), bad.as_path()] {
        let o = run(&[], &["policy", "check", target.to_str().unwrap()], None, dir.path());
        let all = clean_failure(&o, "policy check on a broken file");
        let (line, col) =
            find_diag(&all, "bad.rhai").unwrap_or_else(|| panic!("no bad.rhai:LINE:COL: message:\n{all}"));
        assert_eq!(line, 2, "{all}");
        assert!(col >= 1, "{all}");
        assert!(find_diag(&all, "good.rhai").is_none(), "good.rhai reported:\n{all}");
    }
}

/// `openapi` prints the OpenAPI document as JSON.
#[test]
fn openapi_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[], &["openapi"], None, dir.path());
    ok(&o, "openapi");
    let spec: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(&o)));
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{}",
        spec["openapi"]
    );
    assert!(spec["paths"]["/token"].is_object(), "no /token path");
}

/// Adds `name` to the data dir `data` (flag) with a fixed password.
fn add_user(data: &Path, name: &str, cwd: &Path) {
    let o = run(
        &[],
        &[
            "user",
            "add",
            name,
            "--password-stdin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Some("some-password-1\n"),
        cwd,
    );
    ok(&o, "user add");
}

fn listed(o: &Output, name: &str) -> bool {
    stdout(o).lines().any(|l| l.split_whitespace().next() == Some(name))
}

/// `--data-dir` beats GATEHOUSE_DATA_DIR, which beats `data_dir` in the `--config` file, which
/// beats the default `./data`.
#[test]
fn settings_precedence_flag_env_file_default() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let (d_flag, d_env, d_file, d_default) = (cwd.join("flag"), cwd.join("env"), cwd.join("file"), cwd.join("data"));
    add_user(&d_flag, "in-flag", cwd);
    add_user(&d_env, "in-env", cwd);
    add_user(&d_file, "in-file", cwd);
    add_user(&d_default, "in-default", cwd);
    let config = cwd.join("gatehouse.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", d_file.to_str().unwrap())).unwrap();
    let config = config.to_str().unwrap();
    let env_dir = d_env.to_str().unwrap();

    let o = run(
        &[("GATEHOUSE_DATA_DIR", env_dir)],
        &[
            "user",
            "list",
            "--config",
            config,
            "--data-dir",
            d_flag.to_str().unwrap(),
        ],
        None,
        cwd,
    );
    ok(&o, "list with flag, env and file");
    assert!(
        listed(&o, "in-flag") && !listed(&o, "in-env") && !listed(&o, "in-file"),
        "flag must win:\n{}",
        text(&o)
    );

    let o = run(
        &[("GATEHOUSE_DATA_DIR", env_dir)],
        &["user", "list", "--config", config],
        None,
        cwd,
    );
    ok(&o, "list with env and file");
    assert!(
        listed(&o, "in-env") && !listed(&o, "in-file"),
        "env must beat the file:\n{}",
        text(&o)
    );

    let o = run(&[], &["user", "list", "--config", config], None, cwd);
    ok(&o, "list with file");
    assert!(
        listed(&o, "in-file") && !listed(&o, "in-default"),
        "file must beat the default:\n{}",
        text(&o)
    );

    let o = run(&[], &["user", "list"], None, cwd);
    ok(&o, "list with defaults");
    assert!(listed(&o, "in-default"), "default is ./data:\n{}", text(&o));
}

/// A `--config` TOML file with an unknown key fails clearly (names the key), without serving.
#[test]
fn config_file_unknown_key_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gatehouse.toml");
    std::fs::write(&config, "bind = \"127.0.0.1:0\"\nlewaey = 5\n").unwrap();
    let shipped = shipped_policies();
    let data = tmp.path().join("data");
    let args = [
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--policies",
        shipped.to_str().unwrap(),
    ];
    let o = cli_timeout(
        &[("GATEHOUSE_ADMIN_PASSWORD", ADMIN_PW)],
        &args,
        None,
        tmp.path(),
        Duration::from_secs(20),
    )
    .expect("serve with a bad config file kept running instead of failing");
    let msg = clean_failure(&o, "serve with an unknown config key");
    assert!(msg.contains("lewaey"), "message does not name the unknown key: {msg}");
}

/// `--jwt-secret short` fails clearly (names the setting and the 32-byte minimum), without serving.
#[test]
fn short_jwt_secret_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = shipped_policies();
    let data = tmp.path().join("data");
    let args = [
        "serve",
        "--jwt-secret",
        "short",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--policies",
        shipped.to_str().unwrap(),
    ];
    let o = cli_timeout(
        &[("GATEHOUSE_ADMIN_PASSWORD", ADMIN_PW)],
        &args,
        None,
        tmp.path(),
        Duration::from_secs(20),
    )
    .expect("serve with a short JWT secret kept running instead of failing");
    let msg = clean_failure(&o, "serve --jwt-secret short");
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("jwt") && lower.contains("32"),
        "message does not explain: {msg}"
    );
}
