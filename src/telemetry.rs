//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as human-readable
//! lines or as JSON lines (`log_format = "json"`).
//!
//! Every HTTP request runs in a span named `request` with `request_id` (the `X-Request-Id` the
//! answer carries), `method` and `path`; every line logged while handling it carries them. Each
//! answered request is logged at `debug` under the target `gatehouse::access`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once (level `info` unless `RUST_LOG` says otherwise, human
/// format); later calls do nothing.
pub fn init() {
    init_with("info", LogFormat::Human);
}

/// Like [`init`], with another default level (the offline commands log only warnings).
pub fn init_with_default(level: &str) {
    init_with(level, LogFormat::Human);
}

/// Like [`init`], with another default level and a format.
pub fn init_with(level: &str, format: LogFormat) {
    // An unset or empty `RUST_LOG` means the default; one that does not parse is reported and
    // replaced by the default (never silently by something quieter).
    let filter = match std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()) {
        None => EnvFilter::new(level),
        Some(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG=`{v}` is not a valid filter ({e}); logging at `{level}`");
            EnvFilter::new(level)
        }),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // `spans` lists every open span, so the request's id stays on lines logged inside
            // spans of their own.
            .with_span_list(true)
            .try_init(),
    };
}
