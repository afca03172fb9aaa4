//! `gatehouse policy check|test|eval|replay`: the operator's tools for the policy directory,
//! all without a running server.
//!
//! Exit codes: 0 success (all compile, all tests pass, allowed, nothing would change); 1 a
//! usage or IO error, a compile error or a failing test; 2 `eval` denied, or `replay` found
//! decisions that would change.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    api::policies::{replay, EvalInput},
    config::Settings,
    policy::{self, testing, Limits, Outcome, PolicyEngine},
};

/// Exit code of a denied `eval` and of a `replay` that changes decisions.
const CHANGED: u8 = 2;

/// `policy check [PATH]`.
pub fn check(path: &Path, limits: &Limits, setup: impl FnOnce(&mut rhai::Engine)) -> ExitCode {
    if !path.exists() {
        eprintln!("error: `{}` does not exist", path.display());
        return ExitCode::FAILURE;
    }
    let report = policy::check_with(path, limits, setup);
    for diag in &report {
        eprintln!("{diag}");
    }
    if report.is_empty() {
        println!("ok: every policy in `{}` compiles", path.display());
        ExitCode::SUCCESS
    } else {
        eprintln!("{} error(s)", report.len());
        ExitCode::FAILURE
    }
}

/// `policy test [DIR]`: runs `DIR/tests/*.toml`, prints each failure and a summary.
pub fn test(dir: &Path, limits: &Limits, setup: impl FnOnce(&mut rhai::Engine)) -> ExitCode {
    let reports = match policy::run_tests(dir, limits, setup) {
        Ok(r) => r,
        Err(d) => {
            eprintln!("error: {d}");
            return ExitCode::FAILURE;
        }
    };
    if reports.is_empty() {
        println!("no test files in `{}`", dir.join("tests").display());
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for r in &reports {
        if let Some(e) = &r.error {
            println!("FAIL {}: {e}", r.file.display());
        }
        for case in &r.results {
            if case.passed {
                passed += 1;
            } else {
                println!("FAIL {}: {case}", r.file.display());
            }
        }
        failed += r.failures();
        let ok = r.results.iter().filter(|c| c.passed).count();
        if r.error.is_none() {
            println!("{}: {ok}/{} passed", r.file.display(), r.results.len());
        }
    }
    println!(
        "{passed} passed, {failed} failed ({} test file{})",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A loaded engine over `dir` (for its libraries), or the error to print.
fn engine(dir: &Path, limits: &Limits, setup: impl FnOnce(&mut rhai::Engine)) -> Result<PolicyEngine, String> {
    if !dir.is_dir() {
        return Err(format!("policy directory `{}` does not exist", dir.display()));
    }
    let engine = PolicyEngine::with_setup(dir, limits.clone(), setup);
    engine.reload();
    Ok(engine)
}

fn read_text(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// `policy eval KIND --input FILE [--source FILE]`: one decision, printed as JSON.
pub fn eval(
    settings: &Settings,
    limits: &Limits,
    kind: &str,
    input: &Path,
    source: Option<&Path>,
    setup: impl FnOnce(&mut rhai::Engine),
) -> Result<ExitCode, String> {
    if !policy::is_policy_name(kind) {
        return Err(format!("`{kind}` is not a policy name"));
    }
    let text = read_text(input)?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("the input is not JSON: {e}"))?;
    if let Some(obj) = value.as_object_mut() {
        obj.entry("kind").or_insert_with(|| kind.into());
    }
    let body: EvalInput = poem_openapi::types::ParseFromJSON::parse_from_json(Some(value)).map_err(|e| {
        format!(
            "the input must be {{\"claims\": {{..}}, \"action\": \"..\", \"resource\": {{..}}, \"request\": {{..}}}}: {}",
            e.message()
        )
    })?;
    let engine = engine(&settings.policies, limits, setup)?;
    let set = engine.snapshot();
    let (file, src) = match source {
        Some(path) => (path.to_path_buf(), read_text(path)?),
        None => {
            let file = settings.policies.join(format!("{kind}.rhai"));
            let src = read_text(&file)?;
            (file, src)
        }
    };
    let candidate = set
        .compile_candidate(kind, &src)
        .map_err(|d| format!("{}: {d}", file.display()))?;
    let case = crate::api::policies::case_of(&body);
    let started = std::time::Instant::now();
    let d = testing::with_input(&case, kind, |input| candidate.evaluate(input));
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let out = serde_json::json!({
        "allow": d.allow,
        "outcome": d.outcome,
        "reason": d.reason,
        "policy_version": d.policy_version,
        "duration_us": duration_us,
        "error": d.error,
    });
    println!("{out:#}");
    Ok(if d.outcome == Outcome::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHANGED)
    })
}

/// `policy replay KIND CANDIDATE [--last N]`: prints every logged decision that would change.
pub fn replay_cmd(
    settings: &Settings,
    limits: &Limits,
    kind: &str,
    candidate: &Path,
    last: usize,
    setup: impl FnOnce(&mut rhai::Engine),
) -> Result<ExitCode, String> {
    if !policy::is_policy_name(kind) {
        return Err(format!("`{kind}` is not a policy name"));
    }
    if last == 0 {
        return Err("--last must be at least 1".into());
    }
    let Some(log) = settings.decision_log_path() else {
        return Err("the decision log is off (decision_log = \"off\"): nothing to replay".into());
    };
    if !log.exists() {
        return Err(format!("no decision log at `{}` (has the server run?)", log.display()));
    }
    let src = read_text(candidate)?;
    let engine = engine(&settings.policies, limits, setup)?;
    let set = engine.snapshot();
    let cand = set
        .compile_candidate(kind, &src)
        .map_err(|d| format!("{}: {d}", candidate.display()))?;
    if !set.has(kind) {
        return Err(format!(
            "no policy `{kind}.rhai` is loaded from `{}` (replay compares with the version in force)",
            settings.policies.display()
        ));
    }
    let result = replay(&log, kind, last, &cand, &set).map_err(|e| format!("cannot read `{}`: {e}", log.display()))?;
    println!(
        "replayed {} logged decision(s) of `{kind}` with {} (version {})",
        result.evaluated,
        candidate.display(),
        result.candidate_version
    );
    for c in &result.changed {
        let show = |o: crate::api::policies::OutcomeView, r: &Option<String>| {
            let o = format!("{o:?}").to_lowercase();
            match r {
                Some(r) => format!("{o} ({r:?})"),
                None => o,
            }
        };
        let after = match &c.after_error {
            Some(e) => format!("error ({e})"),
            None => show(c.after, &c.after_reason),
        };
        println!(
            "CHANGED {} {} sub={} action={} resource={}: {} -> {after}",
            c.time,
            c.decision_id,
            c.sub.as_deref().unwrap_or("-"),
            c.action,
            c.resource_id.as_deref().unwrap_or("-"),
            show(c.before, &c.before_reason),
        );
    }
    if result.not_replayable > 0 {
        println!(
            "note: {} of {} decision(s) logged without document data depend on it and were not \
             compared (turn on decision_log_data for exact replays)",
            result.not_replayable, result.without_data
        );
    }
    println!(
        "{} of {} decision(s) would change",
        result.changed.len(),
        result.evaluated
    );
    Ok(if result.changed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHANGED)
    })
}

/// The directory `policy test` uses: the argument, else the `policies` setting.
pub fn dir_or_default(dir: Option<PathBuf>, settings: &Settings) -> PathBuf {
    dir.unwrap_or_else(|| settings.policies.clone())
}
