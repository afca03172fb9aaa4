//! Policy tests: `<policy dir>/tests/<name>.toml` holds cases for `<name>.rhai`. Each case gives
//! the inputs (claims, action, resource, request) and the expected decision; the loader runs a
//! policy's cases before a new version goes live (see `loader`), and `gatehouse policy test`
//! runs them all.
//!
//! ```toml
//! [[test]]
//! name = "an owner reads her note"
//! claims = { sub = "ann", roles = ["user"] }
//! action = "read"
//! resource = { id = "n1", owner = "ann", data = { title = "hi" } }
//! expect = "allow"          # "allow", "deny" or "error"
//! # reason = "..."          # when given, the decision's reason must equal it
//! # request = { time = "2026-01-05T10:00:00Z", ip = "10.0.0.7", headers = { x-tenant = "acme" } }
//! ```

use std::{collections::BTreeMap, fmt, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{engine::Sandbox, Decision, Diagnostic, Input, Outcome, RequestInput, ResourceInput};

/// Default `request.time` of a case: 2026-01-05T10:00:00Z, a Monday morning, so that
/// time-dependent policies give the same answer on every run.
pub const DEFAULT_TEST_TIME: i64 = 1_767_607_200;

/// Largest test file read.
const MAX_TEST_FILE_BYTES: usize = 1024 * 1024;

/// One test case.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown when the case fails.
    pub name: String,
    /// The token claims (`claims` in the script); default `{}`.
    #[serde(default = "empty_object")]
    pub claims: Value,
    /// The action (`create`, `read`, `list`, `update`, `delete`, or a system or plugin action).
    pub action: String,
    /// The resource; `kind` defaults to the policy's name.
    #[serde(default)]
    pub resource: TestResource,
    /// Request facts; defaults derive from the action and resource.
    #[serde(default)]
    pub request: TestRequest,
    /// The expected outcome.
    pub expect: Expect,
    /// The expected reason, when given.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A case's `resource`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct TestResource {
    /// `resource.kind`; defaults to the policy's name (`notes`, `_users`), as the server sets it.
    pub kind: Option<String>,
    /// `resource.id`.
    pub id: Option<String>,
    /// `resource.owner`.
    pub owner: Option<String>,
    /// `resource.data`; default `{}`.
    pub data: Option<Value>,
    /// `resource.old`.
    pub old: Option<Value>,
    /// Any other entries (system policies see e.g. `username`, `roles`, `changes`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// A case's `request`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Default: the method of the action on `/resources` (`POST` for create, ...).
    pub method: Option<String>,
    /// Default: `/resources/<kind>[/<id>]`.
    pub path: Option<String>,
    /// Unix seconds or an RFC 3339 string; default [`DEFAULT_TEST_TIME`].
    pub time: Option<TestTime>,
    /// Default `127.0.0.1`.
    pub ip: Option<String>,
    /// Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A time given as unix seconds or as RFC 3339 text.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum TestTime {
    /// Unix seconds.
    Unix(i64),
    /// RFC 3339, e.g. `2026-01-05T10:00:00Z`.
    Text(String),
}

/// The expected outcome of a case.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The policy allows.
    Allow,
    /// The policy denies (returns false or `allow: false`).
    Deny,
    /// The policy fails (runtime error, limit, wrong result type), which also denies.
    Error,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Error => "error",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    test: Vec<TestCase>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Parses a test file's text; `file` labels the diagnostic.
pub fn parse_tests(file: &Path, text: &str) -> Result<Vec<TestCase>, Diagnostic> {
    let diag = |line, col, message: String| Diagnostic {
        file: file.to_path_buf(),
        line,
        col,
        message,
    };
    if text.len() > MAX_TEST_FILE_BYTES {
        return Err(diag(0, 0, format!("larger than {MAX_TEST_FILE_BYTES} bytes")));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed: TestFile = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |span| line_col(text, span.start));
        diag(line, col, e.message().trim().to_owned())
    })?;
    let mut names = std::collections::BTreeSet::new();
    for (i, case) in parsed.test.iter().enumerate() {
        if !names.insert(case.name.as_str()) {
            return Err(diag(
                0,
                0,
                format!("two tests are named `{}`; names must be unique", case.name),
            ));
        }
        if case.expect == Expect::Error && case.reason.is_some() {
            return Err(diag(
                0,
                0,
                format!(
                    "test `{}`: an `error` outcome has no reason; remove `reason`",
                    case.name
                ),
            ));
        }
        if !case.claims.is_object() {
            return Err(diag(
                0,
                0,
                format!("test {} `{}`: `claims` must be a table", i + 1, case.name),
            ));
        }
        if let Some(TestTime::Text(t)) = &case.request.time {
            if time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err() {
                return Err(diag(
                    0,
                    0,
                    format!("test `{}`: `request.time` `{t}` is not RFC 3339", case.name),
                ));
            }
        }
    }
    if parsed.test.is_empty() {
        return Err(diag(0, 0, "no `[[test]]` cases".into()));
    }
    Ok(parsed.test)
}

/// 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, col)
}

/// How one case went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether the decision matched.
    pub passed: bool,
    /// The expected outcome (and reason).
    pub expected: String,
    /// What came back: `allow`, `deny (reason: "…")` or `error: notes.rhai:3:5: …`.
    pub got: String,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: expected {}, got {}", self.name, self.expected, self.got)
    }
}

/// Runs `cases` against one compiled policy named `name`.
pub(crate) fn run_cases(
    sandbox: &Sandbox,
    ast: &rhai::AST,
    label: &Path,
    version: &str,
    name: &str,
    cases: &[TestCase],
) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let decision = with_input(case, name, |input| sandbox.evaluate_quietly(ast, label, version, input));
            judge(case, &decision)
        })
        .collect()
}

/// Builds the [`Input`] of a case for policy `name` and hands it to `f`.
pub(crate) fn with_input<T>(case: &TestCase, name: &str, f: impl FnOnce(&Input) -> T) -> T {
    let res = &case.resource;
    // As the server passes it: the policy's name (`notes`, `_users`).
    let kind = res.kind.as_deref().unwrap_or(name);
    let empty = empty_object();
    let extra = (!res.extra.is_empty()).then(|| Value::Object(res.extra.clone()));
    let req = &case.request;
    let method = req.method.clone().unwrap_or_else(|| {
        match case.action.as_str() {
            "create" => "POST",
            "update" => "PUT",
            "delete" => "DELETE",
            _ => "GET",
        }
        .to_owned()
    });
    let path = req.path.clone().unwrap_or_else(|| match &res.id {
        Some(id) => format!("/resources/{kind}/{id}"),
        None => format!("/resources/{kind}"),
    });
    let time = match &req.time {
        None => DEFAULT_TEST_TIME,
        Some(TestTime::Unix(t)) => *t,
        Some(TestTime::Text(t)) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_or(DEFAULT_TEST_TIME, time::OffsetDateTime::unix_timestamp),
    };
    let headers: Vec<(&str, &str)> = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let claims = super::ClaimSet::new(case.claims.clone());
    let input = Input {
        claims: &claims,
        action: &case.action,
        resource: ResourceInput {
            kind,
            id: res.id.as_deref(),
            owner: res.owner.as_deref(),
            data: res.data.as_ref().unwrap_or(&empty),
            old: res.old.as_ref(),
            extra: extra.as_ref(),
        },
        request: RequestInput {
            method: &method,
            path: &path,
            time,
            ip: Some(req.ip.as_deref().unwrap_or("127.0.0.1")),
            headers: &headers,
        },
    };
    f(&input)
}

/// Compares a decision with a case's expectation.
pub(crate) fn judge(case: &TestCase, d: &Decision) -> CaseResult {
    let got_outcome = match d.outcome {
        Outcome::Allow => Expect::Allow,
        Outcome::Deny => Expect::Deny,
        Outcome::Error => Expect::Error,
    };
    let passed = got_outcome == case.expect && (case.reason.is_none() || case.reason == d.reason);
    let expected = match &case.reason {
        Some(r) => format!("{} (reason: {r:?})", case.expect),
        None => case.expect.to_string(),
    };
    let got = match (d.outcome, &d.reason, &d.error) {
        (Outcome::Error, _, Some(e)) => format!("error: {e}"),
        (_, Some(r), _) => format!("{got_outcome} (reason: {r:?})"),
        _ => got_outcome.to_string(),
    };
    CaseResult {
        name: case.name.clone(),
        passed,
        expected,
        got,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{engine::LibModules, Limits};

    const FILE: &str = r#"
[[test]]
name = "owner reads"
claims = { sub = "ann", roles = ["user"] }
action = "read"
resource = { id = "n1", owner = "ann", data = { title = "hi" } }
expect = "allow"

[[test]]
name = "stranger is told why"
claims = { sub = "bob" }
action = "read"
resource = { id = "n1", owner = "ann" }
expect = "deny"
reason = "not yours"

[[test]]
name = "request facts have defaults"
action = "list"
request = { ip = "10.0.0.7", headers = { x-tenant = "acme" }, time = "2026-01-05T10:00:00Z" }
expect = "allow"
"#;

    const POLICY: &str = r#"
        if action == "list" {
            return request.ip == "10.0.0.7" && request.headers["x-tenant"] == "acme"
                && request.method == "GET" && request.path == "/resources/notes"
                && weekday(request.time) == "monday" && resource.kind == "notes";
        }
        if resource.owner == claims.sub { true } else { #{allow: false, reason: "not yours"} }
    "#;

    fn run(policy: &str, tests: &str) -> Vec<CaseResult> {
        let sb = Sandbox::new(&Limits::default(), |_| {});
        let compiled = sb
            .compile(Path::new("notes.rhai"), policy, &Arc::new(LibModules::new()))
            .unwrap();
        let cases = parse_tests(Path::new("tests/notes.toml"), tests).unwrap();
        run_cases(&sb, &compiled.ast, Path::new("notes.rhai"), "v1", "notes", &cases)
    }

    #[test]
    fn cases_pass_and_fail_with_what_came_back() {
        let results = run(POLICY, FILE);
        assert!(results.iter().all(|r| r.passed), "{results:#?}");

        let wrong = POLICY.replace("not yours", "go away");
        let results = run(&wrong, FILE);
        let failed: Vec<String> = results.iter().filter(|r| !r.passed).map(ToString::to_string).collect();
        assert_eq!(
            failed,
            [r#"`stranger is told why`: expected deny (reason: "not yours"), got deny (reason: "go away")"#]
        );
        let results = run("claims.nope", FILE);
        assert!(results[0].got.starts_with("error: notes.rhai:1:"), "{results:?}");
    }

    #[test]
    fn bad_files_point_at_the_problem() {
        let err = parse_tests(Path::new("t.toml"), "[[test]]\nname = \"x\"\nexpected = \"allow\"\n").unwrap_err();
        assert!(err.message.contains("expected"), "{err}");
        assert!(err.line >= 1, "{err}");
        let err = parse_tests(Path::new("t.toml"), "[[test]\n").unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        let err = parse_tests(
            Path::new("t.toml"),
            "[[test]]\nname = \"x\"\naction = \"read\"\nexpect = \"maybe\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("t.toml:4:"), "{err}");
        assert!(
            parse_tests(Path::new("t.toml"), "").is_err(),
            "an empty file tests nothing"
        );
        let err = parse_tests(
            Path::new("t.toml"),
            "[[test]]\nname = \"x\"\naction = \"read\"\nexpect = \"allow\"\nrequest = { time = \"soon\" }\n",
        )
        .unwrap_err();
        assert!(err.message.contains("RFC 3339"), "{err}");
    }
}
