//! Settings: what the server and the CLI are built from.
//!
//! Every setting has a default, may be set in a TOML file (`--config FILE`), by an environment
//! variable `GATEHOUSE_<KEY>` and by a flag `--<key>` (with `-` for `_`). Flags beat env beat
//! file beat defaults. clap reads the flags and the environment (raw strings, so a numeric
//! password keeps its leading zeros); serde reads the file; [`Settings::resolve`] layers them.
//! This module knows nothing of HTTP, storage or policies.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// A secret string: never printed by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Resolved settings for one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`127.0.0.1:8080`; port 0 picks a free port).
    pub bind: SocketAddr,
    /// Directory of the database and generated keys.
    pub data_dir: PathBuf,
    /// Policy directory, watched for changes.
    pub policies: PathBuf,
    /// HMAC signing key (at least 32 bytes); generated and stored when `None`.
    pub jwt_secret: Option<Secret>,
    /// JWT algorithm: `HS256`, `EdDSA`, `ES256` or `RS256`.
    pub jwt_algorithm: String,
    /// PKCS#8 PEM private key for `EdDSA`, `ES256` or `RS256` (generated and stored when `None`).
    pub jwt_private_key: Option<PathBuf>,
    /// Base URL of this server as clients reach it (for the discovery document); derived from
    /// the request's `Host` when `None`.
    pub public_url: Option<String>,
    /// `iss` of issued tokens, required on verify.
    pub issuer: String,
    /// `aud` to issue and require, when set.
    pub audience: Option<String>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl: u64,
    /// Refresh-token lifetime in seconds (reserved for the refresh grant).
    pub refresh_token_ttl: u64,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Password of the `admin` user created on first start; generated and printed when `None`.
    pub admin_password: Option<Secret>,
    /// Poll the policy directory instead of relying on file-system events (network mounts).
    pub policy_poll: bool,
    /// Failed logins per user name within `login_failure_window` before 429 (per client
    /// address: five times as many).
    pub login_failure_limit: u32,
    /// Seconds of the login-failure window.
    pub login_failure_window: u64,
    /// Where the decision log goes: a file path, or `off` (any case); `None` (or empty) means
    /// `<data_dir>/decisions.jsonl`.
    pub decision_log: Option<String>,
    /// Size at which the decision log is rotated (`decisions.jsonl.1`, ...).
    pub decision_log_max_bytes: u64,
    /// Rotated decision-log files kept.
    pub decision_log_keep: u32,
    /// Also write each decision to the tracing log (target `gatehouse::decision`).
    pub decision_log_tracing: bool,
    /// Include document data (`resource.data`, `resource.old`) and request headers in decision records; off by default, so the log holds no document content (replay then sees empty data).
    pub decision_log_data: bool,
    /// Rhai operations one policy evaluation may run.
    pub policy_max_operations: u64,
    /// Depth of nested function calls in a policy.
    pub policy_max_call_levels: usize,
    /// Expression nesting depth in a policy (functions: half of it).
    pub policy_max_expr_depth: usize,
    /// Longest string a policy may build, in bytes.
    pub policy_max_string_size: usize,
    /// Largest array a policy may build.
    pub policy_max_array_size: usize,
    /// Largest object map a policy may build.
    pub policy_max_map_size: usize,
    /// Wall-clock budget of one policy evaluation, in milliseconds.
    pub policy_timeout_ms: u64,
    /// Serve `GET /metrics` (Prometheus text format, no authentication).
    pub metrics: bool,
    /// Log line format on stderr: `human` or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the server stops
    /// anyway.
    pub shutdown_timeout: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain text, one event per line (colour on a terminal).
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields, and the
    /// request span (`request_id`, `method`, `path`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "human" | "text" | "" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format `{other}`: use `human` or `json`")),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            policies: PathBuf::from("./policies"),
            jwt_secret: None,
            jwt_algorithm: "HS256".to_owned(),
            jwt_private_key: None,
            public_url: None,
            issuer: "gatehouse".to_owned(),
            audience: None,
            access_token_ttl: 900,
            refresh_token_ttl: 1_209_600,
            leeway: 30,
            max_body_bytes: 1_048_576,
            admin_password: None,
            policy_poll: false,
            login_failure_limit: 10,
            login_failure_window: 300,
            decision_log: None,
            decision_log_max_bytes: 10_485_760,
            decision_log_keep: 5,
            decision_log_tracing: false,
            decision_log_data: false,
            policy_max_operations: 100_000,
            policy_max_call_levels: 32,
            policy_max_expr_depth: 64,
            policy_max_string_size: 16_384,
            policy_max_array_size: 1024,
            policy_max_map_size: 256,
            policy_timeout_ms: 250,
            metrics: true,
            log_format: LogFormat::Human,
            shutdown_timeout: 10,
        }
    }
}

/// Settings given by flags or environment (clap fills this; `None` = not given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// TOML settings file.
    #[arg(long, env = "GATEHOUSE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "GATEHOUSE_BIND", global = true, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "GATEHOUSE_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Policy directory [default: ./policies].
    #[arg(long, env = "GATEHOUSE_POLICIES", global = true, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// HMAC signing key, at least 32 bytes [default: generated, kept in the data dir].
    #[arg(long, env = "GATEHOUSE_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWT signing algorithm: HS256, EdDSA, ES256 or RS256 [default: HS256].
    #[arg(long, env = "GATEHOUSE_JWT_ALGORITHM", global = true)]
    pub jwt_algorithm: Option<String>,
    /// PKCS#8 PEM private key for EdDSA/ES256/RS256 [default: generated, kept in the data dir].
    #[arg(long, env = "GATEHOUSE_JWT_PRIVATE_KEY", global = true, value_name = "FILE")]
    pub jwt_private_key: Option<PathBuf>,
    /// Base URL clients use to reach this server, for the discovery document [default: from Host].
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL", global = true, value_name = "URL")]
    pub public_url: Option<String>,
    /// `iss` claim of issued tokens [default: gatehouse].
    #[arg(long, env = "GATEHOUSE_ISSUER", global = true)]
    pub issuer: Option<String>,
    /// `aud` claim to issue and require [default: none].
    #[arg(long, env = "GATEHOUSE_AUDIENCE", global = true)]
    pub audience: Option<String>,
    /// Access-token lifetime in seconds [default: 900].
    #[arg(long, env = "GATEHOUSE_ACCESS_TOKEN_TTL", global = true, value_name = "SECONDS")]
    pub access_token_ttl: Option<u64>,
    /// Refresh-token lifetime in seconds [default: 1209600].
    #[arg(long, env = "GATEHOUSE_REFRESH_TOKEN_TTL", global = true, value_name = "SECONDS")]
    pub refresh_token_ttl: Option<u64>,
    /// Clock skew allowed on exp/nbf in seconds [default: 30].
    #[arg(long, env = "GATEHOUSE_LEEWAY", global = true, value_name = "SECONDS")]
    pub leeway: Option<u64>,
    /// Request body limit in bytes [default: 1048576].
    #[arg(long, env = "GATEHOUSE_MAX_BODY_BYTES", global = true, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Password of the first-start admin user [default: generated and printed once].
    #[arg(long, env = "GATEHOUSE_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Poll the policy directory every second instead of using file-system events.
    #[arg(long, env = "GATEHOUSE_POLICY_POLL", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub policy_poll: Option<bool>,
    /// Failed logins per user name within the window before 429 [default: 10].
    #[arg(long, env = "GATEHOUSE_LOGIN_FAILURE_LIMIT", global = true, value_name = "COUNT")]
    pub login_failure_limit: Option<u32>,
    /// Seconds of the login-failure window [default: 300].
    #[arg(long, env = "GATEHOUSE_LOGIN_FAILURE_WINDOW", global = true, value_name = "SECONDS")]
    pub login_failure_window: Option<u64>,
    /// Decision log file, or `off` [default: <data_dir>/decisions.jsonl].
    #[arg(long, env = "GATEHOUSE_DECISION_LOG", global = true, value_name = "PATH|off")]
    pub decision_log: Option<String>,
    /// Rotate the decision log at this size [default: 10485760].
    #[arg(long, env = "GATEHOUSE_DECISION_LOG_MAX_BYTES", global = true, value_name = "BYTES")]
    pub decision_log_max_bytes: Option<u64>,
    /// Rotated decision-log files kept [default: 5].
    #[arg(long, env = "GATEHOUSE_DECISION_LOG_KEEP", global = true, value_name = "COUNT")]
    pub decision_log_keep: Option<u32>,
    /// Also write decisions to the tracing log [default: false].
    #[arg(long, env = "GATEHOUSE_DECISION_LOG_TRACING", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub decision_log_tracing: Option<bool>,
    /// Include document data and headers in decision records [default: false].
    #[arg(long, env = "GATEHOUSE_DECISION_LOG_DATA", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub decision_log_data: Option<bool>,
    /// Rhai operations per policy evaluation [default: 100000].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_OPERATIONS", global = true, value_name = "COUNT")]
    pub policy_max_operations: Option<u64>,
    /// Nested function call depth in policies [default: 32].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_CALL_LEVELS", global = true, value_name = "COUNT")]
    pub policy_max_call_levels: Option<usize>,
    /// Expression nesting depth in policies [default: 64].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_EXPR_DEPTH", global = true, value_name = "COUNT")]
    pub policy_max_expr_depth: Option<usize>,
    /// Longest string a policy may build [default: 16384].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_STRING_SIZE", global = true, value_name = "BYTES")]
    pub policy_max_string_size: Option<usize>,
    /// Largest array a policy may build [default: 1024].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_ARRAY_SIZE", global = true, value_name = "COUNT")]
    pub policy_max_array_size: Option<usize>,
    /// Largest object map a policy may build [default: 256].
    #[arg(long, env = "GATEHOUSE_POLICY_MAX_MAP_SIZE", global = true, value_name = "COUNT")]
    pub policy_max_map_size: Option<usize>,
    /// Wall-clock budget per policy evaluation in ms [default: 250].
    #[arg(long, env = "GATEHOUSE_POLICY_TIMEOUT_MS", global = true, value_name = "MS")]
    pub policy_timeout_ms: Option<u64>,
    /// Serve GET /metrics (Prometheus text format) [default: true].
    #[arg(long, env = "GATEHOUSE_METRICS", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub metrics: Option<bool>,
    /// Log format on stderr: human or json [default: human].
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", global = true, value_name = "human|json")]
    pub log_format: Option<String>,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT [default: 10].
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_TIMEOUT", global = true, value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
}

/// The TOML file: the same keys, all optional; unknown keys are an error (a typo must not pass).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    policies: Option<PathBuf>,
    jwt_secret: Option<String>,
    jwt_algorithm: Option<String>,
    jwt_private_key: Option<PathBuf>,
    public_url: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    access_token_ttl: Option<u64>,
    refresh_token_ttl: Option<u64>,
    leeway: Option<u64>,
    max_body_bytes: Option<usize>,
    admin_password: Option<String>,
    policy_poll: Option<bool>,
    login_failure_limit: Option<u32>,
    login_failure_window: Option<u64>,
    decision_log: Option<String>,
    decision_log_max_bytes: Option<u64>,
    decision_log_keep: Option<u32>,
    decision_log_tracing: Option<bool>,
    decision_log_data: Option<bool>,
    policy_max_operations: Option<u64>,
    policy_max_call_levels: Option<usize>,
    policy_max_expr_depth: Option<usize>,
    policy_max_string_size: Option<usize>,
    policy_max_array_size: Option<usize>,
    policy_max_map_size: Option<usize>,
    policy_timeout_ms: Option<u64>,
    metrics: Option<bool>,
    log_format: Option<String>,
    shutdown_timeout: Option<u64>,
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The setting's key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

impl Settings {
    /// Layers flags/env over the file (if any) over the defaults, then validates.
    pub fn resolve(args: &SettingsArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let d = Settings::default();
        let bind_text = args.bind.clone().or(file.bind);
        let bind = match bind_text {
            Some(text) => parse_bind(&text)?,
            None => d.bind,
        };
        let settings = Settings {
            bind,
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or(d.data_dir),
            policies: args.policies.clone().or(file.policies).unwrap_or(d.policies),
            jwt_secret: non_empty(args.jwt_secret.clone().or(file.jwt_secret)).map(Secret),
            jwt_algorithm: args
                .jwt_algorithm
                .clone()
                .or(file.jwt_algorithm)
                .unwrap_or(d.jwt_algorithm),
            jwt_private_key: args.jwt_private_key.clone().or(file.jwt_private_key),
            public_url: non_empty(args.public_url.clone().or(file.public_url))
                .map(|u| u.trim_end_matches('/').to_owned()),
            issuer: args.issuer.clone().or(file.issuer).unwrap_or(d.issuer),
            audience: non_empty(args.audience.clone().or(file.audience)),
            access_token_ttl: args
                .access_token_ttl
                .or(file.access_token_ttl)
                .unwrap_or(d.access_token_ttl),
            refresh_token_ttl: args
                .refresh_token_ttl
                .or(file.refresh_token_ttl)
                .unwrap_or(d.refresh_token_ttl),
            leeway: args.leeway.or(file.leeway).unwrap_or(d.leeway),
            max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(d.max_body_bytes),
            admin_password: non_empty(args.admin_password.clone().or(file.admin_password)).map(Secret),
            policy_poll: args.policy_poll.or(file.policy_poll).unwrap_or(d.policy_poll),
            login_failure_limit: args
                .login_failure_limit
                .or(file.login_failure_limit)
                .unwrap_or(d.login_failure_limit),
            login_failure_window: args
                .login_failure_window
                .or(file.login_failure_window)
                .unwrap_or(d.login_failure_window),
            decision_log: non_empty(args.decision_log.clone().or(file.decision_log)),
            decision_log_max_bytes: args
                .decision_log_max_bytes
                .or(file.decision_log_max_bytes)
                .unwrap_or(d.decision_log_max_bytes),
            decision_log_keep: args
                .decision_log_keep
                .or(file.decision_log_keep)
                .unwrap_or(d.decision_log_keep),
            decision_log_tracing: args
                .decision_log_tracing
                .or(file.decision_log_tracing)
                .unwrap_or(d.decision_log_tracing),
            decision_log_data: args
                .decision_log_data
                .or(file.decision_log_data)
                .unwrap_or(d.decision_log_data),
            policy_max_operations: args
                .policy_max_operations
                .or(file.policy_max_operations)
                .unwrap_or(d.policy_max_operations),
            policy_max_call_levels: args
                .policy_max_call_levels
                .or(file.policy_max_call_levels)
                .unwrap_or(d.policy_max_call_levels),
            policy_max_expr_depth: args
                .policy_max_expr_depth
                .or(file.policy_max_expr_depth)
                .unwrap_or(d.policy_max_expr_depth),
            policy_max_string_size: args
                .policy_max_string_size
                .or(file.policy_max_string_size)
                .unwrap_or(d.policy_max_string_size),
            policy_max_array_size: args
                .policy_max_array_size
                .or(file.policy_max_array_size)
                .unwrap_or(d.policy_max_array_size),
            policy_max_map_size: args
                .policy_max_map_size
                .or(file.policy_max_map_size)
                .unwrap_or(d.policy_max_map_size),
            policy_timeout_ms: args
                .policy_timeout_ms
                .or(file.policy_timeout_ms)
                .unwrap_or(d.policy_timeout_ms),
            metrics: args.metrics.or(file.metrics).unwrap_or(d.metrics),
            log_format: match args.log_format.clone().or(file.log_format) {
                None => d.log_format,
                Some(f) => f.parse().map_err(|message| ConfigError::Invalid {
                    key: "log_format",
                    message,
                })?,
            },
            shutdown_timeout: args
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(d.shutdown_timeout),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if let Some(secret) = &self.jwt_secret {
            if secret.expose().len() < 32 {
                return invalid("jwt_secret", "must be at least 32 bytes");
            }
        }
        if !matches!(self.jwt_algorithm.as_str(), "HS256" | "EdDSA" | "ES256" | "RS256") {
            return invalid("jwt_algorithm", "use HS256, EdDSA, ES256 or RS256");
        }
        if self.jwt_algorithm == "HS256" && self.jwt_private_key.is_some() {
            return invalid("jwt_private_key", "is for EdDSA, ES256 or RS256; HS256 uses jwt_secret");
        }
        if self.jwt_algorithm != "HS256" && self.jwt_secret.is_some() {
            return invalid(
                "jwt_secret",
                "is for HS256 only; set jwt_algorithm = \"HS256\" or remove it",
            );
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("public_url", "must start with http:// or https://");
            }
        }
        if self.issuer.is_empty() {
            return invalid("issuer", "must not be empty");
        }
        if self.access_token_ttl == 0 || self.access_token_ttl > 86_400 * 7 {
            return invalid("access_token_ttl", "must be between 1 and 604800 seconds");
        }
        if self.refresh_token_ttl < 60 || self.refresh_token_ttl > 86_400 * 366 {
            return invalid("refresh_token_ttl", "must be between 60 and 31622400 seconds");
        }
        if self.login_failure_limit == 0 {
            return invalid("login_failure_limit", "must be at least 1");
        }
        if self.login_failure_window == 0 || self.login_failure_window > 86_400 {
            return invalid("login_failure_window", "must be between 1 and 86400 seconds");
        }
        if self.leeway > 600 {
            return invalid("leeway", "must be at most 600 seconds");
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.decision_log_max_bytes < 4096 {
            return invalid("decision_log_max_bytes", "must be at least 4096");
        }
        if self.decision_log_keep > 100 {
            return invalid("decision_log_keep", "must be at most 100");
        }
        for (key, value, min) in [
            ("policy_max_operations", self.policy_max_operations, 1000),
            ("policy_max_call_levels", self.policy_max_call_levels as u64, 1),
            ("policy_max_expr_depth", self.policy_max_expr_depth as u64, 8),
            ("policy_max_string_size", self.policy_max_string_size as u64, 256),
            ("policy_max_array_size", self.policy_max_array_size as u64, 16),
            ("policy_max_map_size", self.policy_max_map_size as u64, 16),
        ] {
            if value < min {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("must be at least {min}"),
                });
            }
        }
        if self.policy_timeout_ms == 0 || self.policy_timeout_ms > 10_000 {
            return invalid("policy_timeout_ms", "must be between 1 and 10000");
        }
        if self.shutdown_timeout > 3600 {
            return invalid("shutdown_timeout", "must be at most 3600 seconds");
        }
        if let Some(pw) = &self.admin_password {
            if pw.expose().len() < 8 {
                return invalid("admin_password", "must be at least 8 characters");
            }
        }
        Ok(())
    }
}

impl Settings {
    /// The decision log file: `decision_log`, or `<data_dir>/decisions.jsonl` when unset;
    /// `None` when it is `off`.
    pub fn decision_log_path(&self) -> Option<PathBuf> {
        match self.decision_log.as_deref() {
            None => Some(self.data_dir.join("decisions.jsonl")),
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(path) => Some(PathBuf::from(path)),
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn parse_bind(text: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let mut addrs = text.to_socket_addrs().map_err(|e| ConfigError::Invalid {
        key: "bind",
        message: format!("`{text}` is not an address such as 127.0.0.1:8080 ({e})"),
    })?;
    addrs.next().ok_or_else(|| ConfigError::Invalid {
        key: "bind",
        message: format!("`{text}` resolves to no address"),
    })
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::resolve(&SettingsArgs::default()).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.leeway, 30);
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:9000\"\nleeway = 5\nissuer = \"file\"\n").unwrap();
        let args = SettingsArgs {
            config: Some(path),
            issuer: Some("flag".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.leeway, 5);
        assert_eq!(s.issuer, "flag");
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "lewaey = 5\n").unwrap();
        let args = SettingsArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = Settings::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("lewaey"), "{err}");
    }

    #[test]
    fn short_secret_is_refused() {
        let args = SettingsArgs {
            jwt_secret: Some("short".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&args).is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
