//! The hardened Rhai engine (the sandbox): how a policy is compiled, how [`Input`] becomes the
//! script's `claims`, `action`, `resource` and `request` constants, and how the script's value
//! becomes a [`Decision`].
//!
//! `Engine::new()` is not a sandbox, so [`Sandbox::new`] closes what it leaves open: module
//! imports from anywhere, `eval`, the thread-blocking `sleep` builtins, stdout printing, silent
//! `()` for typos, and unbounded CPU, memory and time. Every failure is a deny with
//! [`Outcome::Error`].
//!
//! Imports: a policy may `import "lib/<name>" as m;` and nothing else. [`LibResolver`] serves
//! those paths, at compile time only, from the library set of the reload in progress (see
//! [`Sandbox::compile`]); the compiled modules are embedded in the policy's AST, so evaluation
//! reads no files. Any other path, a dynamic path, or an import inside a library is an error.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rhai::{
    module_resolvers::ModuleResolver, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, Position, Scope,
    Shared, AST,
};

use super::{Decision, Diagnostic, Input, Limits, Outcome};

/// The names a policy sees; compiled against so that strict-variables mode accepts them.
const INPUTS: [&str; 4] = ["claims", "action", "resource", "request"];

/// Most `import` statements one evaluation may run (each library counts once per import).
const MAX_IMPORTS: usize = 32;

/// Request headers a policy never sees: they carry credentials.
const HIDDEN_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Compiled libraries by name (`x` for `lib/x.rhai`): the module, or why it does not compile.
pub(crate) type LibModules = BTreeMap<String, Result<Shared<Module>, String>>;

/// What a compile needs to resolve imports, and what it found.
struct ImportContext {
    libs: Arc<LibModules>,
    /// Compiling a library: imports are refused.
    in_lib: bool,
    /// Libraries the policy imported, in order of first use.
    used: Vec<String>,
}

thread_local! {
    /// The import context of the compile running on this thread; `None` during evaluation, so
    /// that a path not resolved at compile time is refused.
    static IMPORTS: RefCell<Option<ImportContext>> = const { RefCell::new(None) };

    /// Wall-clock deadline of the evaluation running on this thread. Evaluation is synchronous,
    /// so the engine-wide progress callback can read the deadline of the current call here.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Clears this thread's deadline when an evaluation ends, however it ends.
struct DeadlineGuard;

impl DeadlineGuard {
    fn set(timeout: Duration) -> Self {
        DEADLINE.with(|d| d.set(Instant::now().checked_add(timeout)));
        Self
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(None));
    }
}

/// Serves `lib/<name>` from the [`IMPORTS`] context; refuses everything else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LibResolver;

impl ModuleResolver for LibResolver {
    fn resolve(
        &self,
        _: &Engine,
        _: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let refuse = |msg: String| -> Box<EvalAltResult> {
            EvalAltResult::ErrorInModule(path.to_owned(), msg.into(), pos).into()
        };
        let name = match path.strip_prefix("lib/") {
            Some(name) if crate::model::Kind::parse(name).is_ok() => name,
            _ => {
                return Err(refuse(format!(
                    "cannot import `{path}`: policies may only import \"lib/<name>\" (policies/lib/<name>.rhai)"
                )))
            }
        };
        IMPORTS.with(|ctx| {
            let mut ctx = ctx.borrow_mut();
            let Some(ctx) = ctx.as_mut() else {
                return Err(refuse("imports must be a string literal such as \"lib/<name>\"".into()));
            };
            if ctx.in_lib {
                return Err(refuse("a library cannot import other libraries".into()));
            }
            if !ctx.used.iter().any(|u| u == name) {
                ctx.used.push(name.to_owned());
            }
            match ctx.libs.get(name) {
                Some(Ok(module)) => Ok(Arc::clone(module)),
                Some(Err(e)) => Err(refuse(format!("library `lib/{name}.rhai` does not compile: {e}"))),
                None => Err(refuse(format!("no library `lib/{name}.rhai`"))),
            }
        })
    }
}

/// Sets the import context for one compile and clears it however the compile ends.
struct ImportGuard;

impl ImportGuard {
    fn set(libs: &Arc<LibModules>, in_lib: bool) -> Self {
        IMPORTS.with(|c| {
            *c.borrow_mut() = Some(ImportContext {
                libs: Arc::clone(libs),
                in_lib,
                used: Vec::new(),
            })
        });
        Self
    }

    fn used(&self) -> Vec<String> {
        IMPORTS.with(|c| c.borrow().as_ref().map(|c| c.used.clone()).unwrap_or_default())
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        IMPORTS.with(|c| *c.borrow_mut() = None);
    }
}

/// A compiled policy and what it depends on.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) ast: AST,
    /// Libraries it imports (names under `lib/`).
    pub(crate) deps: Vec<String>,
}

/// A configured Rhai engine plus the wall-clock budget. Shared (`Arc`) by every policy set.
pub(crate) struct Sandbox {
    engine: Engine,
    timeout: Duration,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the hardened engine. `setup` may register helpers; hardening is applied after it so
    /// that it cannot be undone.
    pub(crate) fn new(limits: &Limits, setup: impl FnOnce(&mut Engine)) -> Self {
        let mut engine = Engine::new();
        super::helpers::register(&mut engine);
        setup(&mut engine);
        engine
            .set_module_resolver(LibResolver)
            .set_max_modules(MAX_IMPORTS)
            .disable_symbol("eval")
            .set_strict_variables(true)
            .set_fail_on_invalid_map_property(true)
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_variables(limits.max_variables)
            .on_print(|text| tracing::info!(target: "gatehouse::policy::script", "{text}"))
            .on_debug(|text, source, pos| {
                tracing::debug!(target: "gatehouse::policy::script", source, %pos, "{text}");
            })
            .on_progress(|ops| {
                // Reading the clock every 64 operations is plenty: one operation is bounded by
                // the size limits.
                if ops % 64 != 0 {
                    return None;
                }
                let late = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t));
                late.then(|| "timeout".into())
            });
        // The builtins call std::thread::sleep and escape the operation budget; disable_symbol
        // does not stop them, overriding both overloads does.
        engine.register_fn("sleep", |_: i64| -> Result<(), Box<EvalAltResult>> {
            Err("sleep is not available in policies".into())
        });
        engine.register_fn("sleep", |_: f64| -> Result<(), Box<EvalAltResult>> {
            Err("sleep is not available in policies".into())
        });
        Self {
            engine,
            timeout: limits.timeout,
        }
    }

    /// Compiles one policy against the libraries `libs`; `file` is only used to label the
    /// diagnostic.
    pub(crate) fn compile(&self, file: &Path, source: &str, libs: &Arc<LibModules>) -> Result<Compiled, Diagnostic> {
        // Editors on Windows may start a UTF-8 file with a byte-order mark.
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let mut names = Scope::new();
        for name in INPUTS {
            // Plain variables, not constants: constants would be folded into the AST.
            names.push(name, ());
        }
        let guard = ImportGuard::set(libs, false);
        let compiled = self.engine.compile_into_self_contained(&names, source);
        let deps = guard.used();
        drop(guard);
        let mut ast = compiled.map_err(|e| compile_diagnostic(file, source, &e))?;
        // An empty file (e.g. caught between truncate and write) would deny everything with an
        // error; refuse it so that the last good version keeps running.
        if is_blank(source) {
            return Err(Diagnostic {
                file: file.to_path_buf(),
                line: 1,
                col: 1,
                message: "policy is empty: it must evaluate to true, false or #{allow, reason}".into(),
            });
        }
        ast.set_source(file.to_string_lossy().as_ref());
        Ok(Compiled { ast, deps })
    }

    /// Compiles a library (`lib/<name>.rhai`) into a module: its functions, and the constants it
    /// `export`s. Its top level runs once, here, under the same limits as a policy.
    pub(crate) fn compile_lib(&self, file: &Path, source: &str) -> Result<Shared<Module>, Diagnostic> {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let guard = ImportGuard::set(&Arc::new(LibModules::new()), true);
        let mut ast = self.engine.compile(source).map_err(|e| {
            let (line, col) = position(e.position());
            Diagnostic {
                file: file.to_path_buf(),
                line,
                col,
                message: e.err_type().to_string(),
            }
        })?;
        ast.set_source(file.to_string_lossy().as_ref());
        let _deadline = DeadlineGuard::set(self.timeout);
        let module = Module::eval_ast_as_new(Scope::new(), &ast, &self.engine).map_err(|e| {
            let (line, col, message) = runtime_error(&e);
            Diagnostic {
                file: file.to_path_buf(),
                line,
                col,
                message,
            }
        });
        drop(guard);
        Ok(Arc::new(module?))
    }

    /// Runs a compiled policy for one input. Never panics, never allows on error.
    pub(crate) fn evaluate(&self, ast: &AST, file: &Path, version: &str, input: &Input) -> Decision {
        self.evaluate_logged(ast, file, version, input, true)
    }

    /// [`Sandbox::evaluate`] for test cases, where a failing script is an expected result and
    /// not worth a warning.
    pub(crate) fn evaluate_quietly(&self, ast: &AST, file: &Path, version: &str, input: &Input) -> Decision {
        self.evaluate_logged(ast, file, version, input, false)
    }

    fn evaluate_logged(&self, ast: &AST, file: &Path, version: &str, input: &Input, log: bool) -> Decision {
        let mut scope = scope_for(input);
        let result = {
            let _deadline = DeadlineGuard::set(self.timeout);
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
                .map_err(|e| runtime_error(&e))
        };
        let verdict = result.and_then(|value| interpret(value).map_err(|message| (0, 0, message)));
        match verdict {
            Ok((allow, reason)) => Decision {
                allow,
                reason,
                outcome: if allow { Outcome::Allow } else { Outcome::Deny },
                error: None,
                policy_version: version.to_owned(),
            },
            Err((line, col, message)) => {
                let diag = Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    col,
                    message,
                };
                if log {
                    tracing::warn!(
                        file = %file.display(), line, col, version, error = %diag.message,
                        "policy failed; denying"
                    );
                }
                Decision {
                    allow: false,
                    reason: None,
                    outcome: Outcome::Error,
                    error: Some(diag.to_string()),
                    policy_version: version.to_owned(),
                }
            }
        }
    }
}

type Located = (usize, usize, String);

/// JSON as Rhai values, exactly as `rhai::serde::to_dynamic` makes them (numbers are integers
/// when they fit an `i64`, else floats; `null` is `()`), without serde's indirection: this runs
/// for every document a policy sees.
pub(crate) fn json_to_dynamic(value: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
    }
}

/// `resource` without extra entries and `request`, with every value `()`: cloning a template
/// and filling its values in key order is cheaper than building the maps key by key, and this
/// runs for every decision.
static RESOURCE_TEMPLATE: std::sync::LazyLock<Map> =
    std::sync::LazyLock::new(|| RESOURCE_KEYS.iter().map(|k| ((*k).into(), Dynamic::UNIT)).collect());
static REQUEST_TEMPLATE: std::sync::LazyLock<Map> =
    std::sync::LazyLock::new(|| REQUEST_KEYS.iter().map(|k| ((*k).into(), Dynamic::UNIT)).collect());
/// The keys of the templates, in the maps' (sorted) order.
const RESOURCE_KEYS: [&str; 5] = ["data", "id", "kind", "old", "owner"];
const REQUEST_KEYS: [&str; 5] = ["headers", "ip", "method", "path", "time"];

/// Fills a clone of `template` (whose keys are `keys`, sorted) with `values` in that order.
fn from_template(template: &Map, keys: &[&str; 5], values: [Dynamic; 5]) -> Map {
    let mut map = template.clone();
    for ((key, slot), (expected, value)) in map.iter_mut().zip(keys.iter().zip(values)) {
        debug_assert_eq!(key.as_str(), *expected);
        *slot = value;
    }
    map
}

/// A fresh scope per evaluation (top-level `let`s would otherwise leak between requests).
fn scope_for(input: &Input) -> Scope<'static> {
    let res = &input.resource;
    let data = json_to_dynamic(res.data);
    let old = res.old.map_or(Dynamic::UNIT, json_to_dynamic);
    let resource = match res.extra.map(json_to_dynamic).and_then(|d| d.try_cast::<Map>()) {
        None => from_template(
            &RESOURCE_TEMPLATE,
            &RESOURCE_KEYS,
            [data, opt_str(res.id), str_value(res.kind), old, opt_str(res.owner)],
        ),
        Some(mut resource) => {
            resource.insert("kind".into(), str_value(res.kind));
            resource.insert("id".into(), opt_str(res.id));
            resource.insert("owner".into(), opt_str(res.owner));
            resource.insert("data".into(), data);
            resource.insert("old".into(), old);
            resource
        }
    };
    let mut headers = Map::new();
    for (name, value) in input.request.headers {
        if !HIDDEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            // `http` keeps header names in lower case already; test files may not.
            let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.to_ascii_lowercase().into()
            } else {
                (*name).into()
            };
            headers.insert(key, str_value(value));
        }
    }
    let request = from_template(
        &REQUEST_TEMPLATE,
        &REQUEST_KEYS,
        [
            Dynamic::from_map(headers),
            opt_str(input.request.ip),
            str_value(input.request.method),
            str_value(input.request.path),
            Dynamic::from_int(input.request.time),
        ],
    );

    let mut scope = Scope::with_capacity(INPUTS.len());
    scope.push_constant_dynamic("claims", input.claims.script().clone());
    scope.push_constant_dynamic("action", str_value(input.action));
    scope.push_constant_dynamic("resource", Dynamic::from_map(resource));
    scope.push_constant_dynamic("request", Dynamic::from_map(request));
    scope
}

fn str_value(s: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(s))
}

/// A compile error as a diagnostic. Errors from resolving an import carry no position: point at
/// the import's path in the source instead.
fn compile_diagnostic(file: &Path, source: &str, err: &EvalAltResult) -> Diagnostic {
    let (mut line, mut col) = position(err.position());
    let message = match err {
        EvalAltResult::ErrorInModule(path, inner, _) => {
            if line == 0 {
                if let Some(at) = source.find(&format!("\"{path}\"")) {
                    line = source[..at].matches('\n').count() + 1;
                    col = at - source[..at].rfind('\n').map_or(0, |nl| nl + 1) + 1;
                }
            }
            inner.to_string()
        }
        EvalAltResult::ErrorParsing(kind, _) => kind.to_string(),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    };
    Diagnostic {
        file: file.to_path_buf(),
        line,
        col,
        message,
    }
}

fn opt_str(v: Option<&str>) -> Dynamic {
    v.map_or(Dynamic::UNIT, str_value)
}

/// `true` / `false` / `#{allow: bool, reason: string}`; anything else is an error.
fn interpret(value: Dynamic) -> Result<(bool, Option<String>), String> {
    let value = value.flatten();
    if let Ok(allow) = value.as_bool() {
        return Ok((allow, None));
    }
    let type_name = value.type_name();
    let Some(map) = value.try_cast::<Map>() else {
        return Err(format!(
            "policy returned {type_name}; expected true, false or #{{allow: bool, reason: string}}"
        ));
    };
    let allow = map
        .get("allow")
        .and_then(|v| v.as_bool().ok())
        .ok_or_else(|| "policy returned a map without a bool `allow`".to_owned())?;
    let reason = match map.get("reason") {
        None => None,
        Some(r) => Some(
            r.clone()
                .into_string()
                .map_err(|t| format!("policy returned a `reason` of type {t}; expected a string"))?,
        ),
    };
    Ok((allow, reason))
}

/// The innermost error's position and message (inside a called function, not at the call site).
fn runtime_error(err: &EvalAltResult) -> Located {
    let inner = err.unwrap_inner();
    let pos = if inner.position().is_none() {
        err.position()
    } else {
        inner.position()
    };
    let (line, col) = position(pos);
    let message = match inner {
        EvalAltResult::ErrorTerminated(..) => "policy exceeded its time limit".to_owned(),
        _ => {
            // Display appends " (line L, position P)"; the position is reported separately.
            let text = inner.to_string();
            let suffix = format!(" ({})", inner.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    };
    (line, col, message)
}

/// Rhai positions as 1-based line and column; column 1 when Rhai reports "start of line".
fn position(pos: rhai::Position) -> (usize, usize) {
    match pos.line() {
        Some(line) => (line, pos.position().unwrap_or(1)),
        None => (0, 0),
    }
}

/// True when the source has nothing but whitespace and comments.
fn is_blank(source: &str) -> bool {
    let mut rest = source;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(mut after) = rest.strip_prefix("/*") {
            // Rhai block comments nest.
            let mut depth = 1;
            while depth > 0 {
                match (after.find("/*"), after.find("*/")) {
                    (Some(open), Some(close)) if open < close => {
                        depth += 1;
                        after = &after[open + 2..];
                    }
                    (_, Some(close)) => {
                        depth -= 1;
                        after = &after[close + 2..];
                    }
                    // Unterminated: the compiler has already refused it.
                    (_, None) => return true,
                }
            }
            rest = after;
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sample_input;

    fn no_libs() -> Arc<LibModules> {
        Arc::new(LibModules::new())
    }

    fn sandbox(limits: &Limits) -> Sandbox {
        Sandbox::new(limits, |_| {})
    }

    /// Compiles and evaluates `src` against [`sample_input`] with `limits`.
    fn run_with(limits: &Limits, src: &str, input: &Input) -> Result<Decision, Diagnostic> {
        let sb = sandbox(limits);
        let ast = sb.compile(Path::new("t.rhai"), src, &no_libs())?.ast;
        Ok(sb.evaluate(&ast, Path::new("t.rhai"), "v1", input))
    }

    fn run(src: &str) -> Decision {
        run_with(&Limits::default(), src, &sample_input()).expect("compiles")
    }

    #[test]
    fn templates_list_their_keys_in_map_order() {
        let keys = |m: &Map| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(&RESOURCE_TEMPLATE), RESOURCE_KEYS);
        assert_eq!(keys(&REQUEST_TEMPLATE), REQUEST_KEYS);
        // And the values land under the right names.
        let d = run(
            r#"resource.kind == "notes" && resource.id != () && request.method == "GET"
            && type_of(request.time) == "i64" && type_of(request.headers) == "map" && resource.old == ()"#,
        );
        assert!(d.allow, "{d:?}");
    }

    /// Asserts a fail-closed error decision and returns its internal diagnostic.
    fn assert_error(d: Decision) -> String {
        assert!(!d.allow, "{d:?}");
        assert_eq!(d.outcome, Outcome::Error, "{d:?}");
        assert_eq!(d.reason, None, "clients never see the error");
        d.error.expect("diagnostic")
    }

    #[test]
    fn results_map_to_decisions() {
        let d = run("true");
        assert!(d.allow && d.outcome == Outcome::Allow && d.reason.is_none() && d.error.is_none());
        assert_eq!(d.policy_version, "v1");
        let d = run("false");
        assert!(!d.allow && d.outcome == Outcome::Deny && d.error.is_none());
        let d = run(r#"#{allow: false, reason: "B"}"#);
        assert_eq!(
            (d.allow, d.outcome, d.reason.as_deref()),
            (false, Outcome::Deny, Some("B"))
        );
        let d = run(r#"#{allow: true}"#);
        assert_eq!((d.allow, d.outcome, d.reason), (true, Outcome::Allow, None));
    }

    #[test]
    fn script_sees_its_inputs() {
        let d = run(r#"
            claims.sub == "ann" && claims.roles.contains("user") && action == "read"
            && resource.kind == "notes" && resource.id == "n1" && resource.owner == claims.sub
            && resource.data.title == "hi" && resource.old == () && request.method == "GET"
            && request.path == "/resources/notes/n1" && request.time == 1_700_000_000
        "#);
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");

        let extra = serde_json::json!({"username": "bob", "kind": "spoofed"});
        let old = serde_json::json!({"title": "before"});
        let mut input = sample_input();
        input.resource.id = None;
        input.resource.owner = None;
        input.resource.old = Some(&old);
        input.resource.extra = Some(&extra);
        let src = r#"resource.id == () && resource.owner == () && resource.old.title == "before"
                     && resource.username == "bob" && resource.kind == "notes""#;
        let d = run_with(&Limits::default(), src, &input).unwrap();
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    }

    #[test]
    fn inputs_are_constants_and_scopes_are_fresh() {
        assert_error(run(r#"claims.sub = "admin"; true"#));
        assert_error(run(r#"resource.owner = "mallory"; true"#));
        let sb = sandbox(&Limits::default());
        let ast = sb
            .compile(Path::new("t.rhai"), "let x = 1; x == 1", &no_libs())
            .unwrap()
            .ast;
        for _ in 0..2 {
            let d = sb.evaluate(&ast, Path::new("t.rhai"), "v", &sample_input());
            assert_eq!(d.outcome, Outcome::Allow);
        }
    }

    #[test]
    fn wrong_result_types_deny() {
        for src in [
            "42",
            r#""yes""#,
            "()",
            "[true]",
            "#{}",
            r#"#{allow: "yes"}"#,
            r#"#{allow: true, reason: 5}"#,
            "1.5",
        ] {
            let err = assert_error(run(src));
            assert!(err.starts_with("t.rhai: policy returned"), "{src}: {err}");
        }
    }

    #[test]
    fn runtime_errors_deny_with_file_and_line() {
        let err = assert_error(run("let x = 1;\nlet y = x / 0;\ntrue"));
        assert!(err.starts_with("t.rhai:2:"), "{err}");
        let err = assert_error(run("fn f() {\n  throw \"boom\";\n}\nf()"));
        assert!(err.starts_with("t.rhai:2:") && err.contains("boom"), "{err}");
    }

    #[test]
    fn misspelt_property_denies() {
        assert_eq!(run(r#"claims.roles.contains("user")"#).outcome, Outcome::Allow);
        let err = assert_error(run(r#"claims.rolez != "admin""#));
        assert!(err.contains("rolez"), "{err}");
    }

    #[test]
    fn endless_loop_denies_within_a_second() {
        let start = Instant::now();
        let err = assert_error(run("loop {}"));
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        assert!(err.contains("operations"), "{err}");
    }

    #[test]
    fn wall_clock_deadline_stops_a_script() {
        let limits = Limits {
            max_operations: 0, // unlimited: only the deadline can stop it
            timeout: Duration::from_millis(50),
            ..Limits::default()
        };
        let start = Instant::now();
        let d = run_with(&limits, "loop {}", &sample_input()).unwrap();
        let err = assert_error(d);
        assert!(err.contains("time limit"), "{err}");
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        // The deadline is per evaluation: the next one on this thread starts afresh.
        assert_eq!(
            run_with(&limits, "true", &sample_input()).unwrap().outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn runaway_recursion_denies() {
        assert!(assert_error(run("fn f(x) { f(x + 1) } f(0)")).contains("Stack overflow"));
    }

    #[test]
    fn runaway_data_denies() {
        for src in [
            r#"let s = "x"; loop { s += s; }"#,
            "let a = []; loop { a.push(1); }",
            "let a = [1]; a.pad(1000000, 0); true",
            // Rhai checks a map's size when it is next used, not on index assignment.
            r#"let m = #{}; for i in 0..300 { m["k" + i] = i; } m.len() > 0"#,
        ] {
            let err = assert_error(run(src));
            assert!(err.contains("too large"), "{src}: {err}");
        }
    }

    #[test]
    fn sleep_is_disabled() {
        let start = Instant::now();
        for src in [
            "sleep(10); true",
            "sleep(0.5); true",
            r#"let f = Fn("sleep"); f.call(10); true"#,
        ] {
            assert!(assert_error(run(src)).contains("sleep"), "{src}");
        }
        assert!(start.elapsed() < Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[test]
    fn import_and_eval_are_refused() {
        for path in ["/etc/passwd", "lib/../secret", "../x", "lib/Up", "other/x"] {
            let src = format!("import \"{path}\" as m;\ntrue");
            let err = run_with(&Limits::default(), &src, &sample_input()).unwrap_err();
            assert!(err.message.contains("may only import"), "{path}: {err}");
            assert_eq!((err.line, err.col), (1, 8), "{path}: {err}");
        }
        // A path only known at run time is never resolved.
        let err = assert_error(run("let p = \"lib/\" + \"x\";\nimport p as m;\ntrue"));
        assert!(err.contains("string literal"), "{err}");
        let eval = run_with(&Limits::default(), r#"eval("true")"#, &sample_input());
        assert!(eval.unwrap_err().message.contains("eval"));
        assert!(assert_error(run(r#"Fn("eval").call("true")"#)).contains("eval"));
    }

    #[test]
    fn libraries_are_embedded_at_compile_time() {
        let sb = sandbox(&Limits::default());
        let lib = sb
            .compile_lib(
                Path::new("lib/roles.rhai"),
                "export const ADMIN = \"admin\";\nfn is_admin(c) { c.roles.contains(\"admin\") }",
            )
            .unwrap();
        let mut libs = LibModules::new();
        libs.insert("roles".into(), Ok(lib));
        libs.insert("broken".into(), Err("lib/broken.rhai:1:1: nope".into()));
        let libs = Arc::new(libs);
        let src = "import \"lib/roles\" as roles;\nroles::is_admin(claims) || roles::ADMIN == \"admin\"";
        let compiled = sb.compile(Path::new("t.rhai"), src, &libs).unwrap();
        assert_eq!(compiled.deps, ["roles"]);
        // Evaluation reads nothing: the module is inside the AST.
        let d = sb.evaluate(&compiled.ast, Path::new("t.rhai"), "v", &sample_input());
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");

        let err = sb
            .compile(Path::new("t.rhai"), "true;\nimport \"lib/broken\" as b;\ntrue", &libs)
            .unwrap_err();
        assert!(err.message.contains("does not compile"), "{err}");
        assert_eq!((err.line, err.col), (2, 8), "{err}");
        let err = sb
            .compile(Path::new("t.rhai"), "import \"lib/none\" as b; true", &libs)
            .unwrap_err();
        assert!(err.message.contains("no library"), "{err}");

        let err = sb
            .compile_lib(Path::new("lib/x.rhai"), "import \"lib/roles\" as r;\nfn f() { 1 }")
            .unwrap_err();
        assert!(err.message.contains("cannot import"), "{err}");
        let err = sb.compile_lib(Path::new("lib/x.rhai"), "fn f( { 1 }").unwrap_err();
        assert!(err.to_string().starts_with("lib/x.rhai:1:"), "{err}");
        let err = sb.compile_lib(Path::new("lib/x.rhai"), "loop {}").unwrap_err();
        assert!(err.message.contains("operations"), "{err}");
    }

    #[test]
    fn helpers_and_request_facts() {
        let d = run(r#"request.ip == "10.1.2.3" && cidr_match("10.0.0.0/8", request.ip)
            && request.headers["x-tenant"] == "acme" && !("authorization" in request.headers)
            && hour(request.time) == 22 && weekday(request.time) == "tuesday"
            && glob_match("/resources/*/n1", request.path)"#);
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    }

    #[test]
    fn print_does_not_fail() {
        assert_eq!(
            run(r#"print("hello"); debug(claims.sub); true"#).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn compile_errors_have_line_and_column() {
        let sb = sandbox(&Limits::default());
        let diag = sb
            .compile(Path::new("bad.rhai"), "true &&\nlet x = ;", &no_libs())
            .unwrap_err();
        assert_eq!((diag.line, diag.col), (2, 1), "{diag}");
        assert!(diag.to_string().starts_with("bad.rhai:2:1: "), "{diag}");
        // Strict variables: an unknown name is a compile error, not a runtime `()`.
        let diag = sb
            .compile(Path::new("bad.rhai"), "\n  userz == 1", &no_libs())
            .unwrap_err();
        assert_eq!((diag.line, diag.col), (2, 3), "{diag}");
        assert!(diag.message.contains("userz"), "{diag}");
    }

    #[test]
    fn blank_sources_are_refused() {
        let sb = sandbox(&Limits::default());
        for src in ["", " \n", "// nothing\n", "/* a /* nested */ b */ // c"] {
            assert!(sb.compile(Path::new("t.rhai"), src, &no_libs()).is_err(), "{src:?}");
        }
        for src in ["true // x", "/* c */ false", "// c\ntrue"] {
            assert!(sb.compile(Path::new("t.rhai"), src, &no_libs()).is_ok(), "{src:?}");
        }
    }

    #[test]
    fn large_inputs_stay_readable_field_by_field() {
        // Inputs are not size-checked on entry; only values the script builds or passes whole to
        // a function are (e.g. `resource.data.len()` on this map would deny).
        let mut big: serde_json::Map<String, serde_json::Value> =
            (0..2000).map(|i| (format!("k{i}"), "x".into())).collect();
        big.insert("title".into(), "hi".into());
        big.insert("body".into(), "y".repeat(100_000).into());
        let data = serde_json::Value::Object(big);
        let mut input = sample_input();
        input.resource.data = &data;
        let src = r#"resource.data.title == "hi" && "body" in resource.data"#;
        let d = run_with(&Limits::default(), src, &input).unwrap();
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    }
}
