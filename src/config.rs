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
        if let Some(pw) = &self.admin_password {
            if pw.expose().len() < 8 {
                return invalid("admin_password", "must be at least 8 characters");
            }
        }
        Ok(())
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
