//! The command line: `serve`, `user ...`, `policy check|test|eval|replay`, `keys ...`, `openapi`.
//!
//! `main.rs` only calls [`main`], which is [`main_with`] the default plugin set (the document
//! store). A program with plugins of its own calls [`main_with`] with its set and gets the same
//! command line, serving and printing the spec with its endpoints. User commands open the store directly and therefore refuse,
//! with a plain message and a non-zero exit, while a server holds the data directory.

mod policy;

use std::{io::Read, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    api,
    app::policy_limits,
    app::{random_token, AdminBootstrap, AppError, Application},
    auth::password::{check_password_rules, hash_blocking},
    config::{Settings, SettingsArgs},
    model::{Role, Username},
    plugin::{DocumentStore, Plugins},
    store::{new_token_version, SledStore, Store, StoreError, UserRecord},
};

/// gatehouse: JWT-secured HTTP APIs whose access rules are hot-reloaded Rhai scripts.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage users while the server is stopped.
    #[command(subcommand)]
    User(UserCommand),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the OpenAPI document (JSON).
    Openapi,
    /// Manage generated signing keys while the server is stopped.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new key sign from now on; the old one verifies until its tokens expire.
    Rotate,
    /// List the keys (newest last).
    List,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (the password is generated and printed unless --password-stdin).
    Add {
        /// User name.
        name: String,
        /// Role (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user.
    Remove {
        /// User name.
        name: String,
    },
    /// Set a user's password, read from standard input.
    Passwd {
        /// User name.
        name: String,
        /// Read the password from standard input (first line). Required.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Compile policy files without serving; print errors as file:line:col: message.
    Check {
        /// A .rhai file or a directory [default: the policies setting].
        path: Option<std::path::PathBuf>,
    },
    /// Run the policy tests (DIR/tests/*.toml); exit 1 on any failure.
    Test {
        /// The policy directory [default: the policies setting].
        dir: Option<std::path::PathBuf>,
    },
    /// Decide one request from JSON input without a server; print the decision.
    /// Exit 0 allowed, 2 denied.
    Eval {
        /// The policy (kind or system policy such as `_users`).
        kind: String,
        /// JSON `{"claims": {..}, "action": "..", "resource": {..}, "request": {..}}`; `-` for stdin.
        #[arg(long, value_name = "FILE")]
        input: std::path::PathBuf,
        /// Evaluate this source instead of `<policies>/<kind>.rhai`.
        #[arg(long, value_name = "FILE")]
        source: Option<std::path::PathBuf>,
    },
    /// Replay logged decisions of KIND with a candidate policy; print each that would change.
    /// Exit 0 when none would, 2 when some would.
    Replay {
        /// The policy whose decisions to replay.
        kind: String,
        /// The candidate `.rhai` file.
        candidate: std::path::PathBuf,
        /// How many of the most recent decisions (1-1000000).
        #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        last: u32,
    },
}

/// Parses the command line and runs it: the `gatehouse` binary, whose only plugin is the
/// document store.
pub fn main() -> ExitCode {
    main_with((DocumentStore,))
}

/// Parses the command line and runs it with the plugin set `plugins` (see [`crate::plugin`]):
/// `serve` serves their endpoints and `openapi` prints them.
pub fn main_with<P: Plugins>(plugins: P) -> ExitCode {
    let cli = Cli::parse();
    // Resolved once: the settings file may be a pipe (`--config <(...)`) that reads only once.
    let settings = Settings::resolve(&cli.settings).map_err(|e| e.to_string());
    // The server reports what it loads; offline commands print their own results and only
    // need warnings on top. The log format is a setting; settings that do not resolve are
    // reported by the command itself, in the default format.
    let format = settings.as_ref().map(|s| s.log_format).unwrap_or_default();
    crate::telemetry::init_with(
        if matches!(cli.command, Command::Serve) {
            "info"
        } else {
            "warn"
        },
        format,
    );
    match run(cli, settings, plugins) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run<P: Plugins>(cli: Cli, settings: Result<Settings, String>, plugins: P) -> Result<ExitCode, String> {
    match cli.command {
        Command::Openapi => {
            use std::io::Write as _;
            let spec = crate::plugin::spec_json(&plugins).map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`gatehouse openapi | head`) is not an error worth a panic.
            let _ = writeln!(out, "{spec}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(cmd) => {
            let settings = settings?;
            let limits = policy_limits(&settings);
            match cmd {
                PolicyCommand::Check { path } => {
                    let path = path.unwrap_or_else(|| settings.policies.clone());
                    Ok(policy::check(&path, &limits, |e| plugins.register_rhai(e)))
                }
                PolicyCommand::Test { dir } => {
                    Ok(policy::test(&policy::dir_or_default(dir, &settings), &limits, |e| {
                        plugins.register_rhai(e)
                    }))
                }
                PolicyCommand::Eval { kind, input, source } => {
                    policy::eval(&settings, &limits, &kind, &input, source.as_deref(), |e| {
                        plugins.register_rhai(e)
                    })
                }
                PolicyCommand::Replay { kind, candidate, last } => {
                    policy::replay_cmd(&settings, &limits, &kind, &candidate, last as usize, |e| {
                        plugins.register_rhai(e)
                    })
                }
            }
        }
        Command::Serve => {
            let settings = settings?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let served = rt.block_on(serve(settings, plugins));
            // Blocking work still running after a forced stop (a replay, a reload) is not
            // waited for long.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            served.map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => {
            let settings = settings?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(keys_command(settings, cmd))
        }
        Command::User(cmd) => {
            let settings = settings?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(user(settings, cmd))
        }
    }
}

/// Builds the server with `plugins`, prints the startup banner (address, docs, admin password
/// when generated, policies loaded and failed) and serves until SIGINT or SIGTERM (a second
/// signal stops it without waiting for requests in flight). This is
/// `gatehouse serve`; call it from your own `#[tokio::main]` (multi-threaded runtime) when you
/// do not want the whole command line.
pub async fn serve<P: Plugins>(settings: Settings, plugins: P) -> Result<(), AppError> {
    let signals = Signals::listen();
    // A signal during startup stops the server once it is up; a second one abandons the start.
    let app = tokio::select! {
        app = Application::build_with_plugins(settings.clone(), plugins) => app?,
        () = signals.clone().count(2) => {
            eprintln!("gatehouse: start abandoned (second signal)");
            return Ok(());
        }
    };
    let addr = app.local_addr();
    match app.admin_bootstrap() {
        AdminBootstrap::Existing => {}
        AdminBootstrap::CreatedWithConfiguredPassword => {
            println!("created user `admin` (role admin) with the password from GATEHOUSE_ADMIN_PASSWORD");
        }
        AdminBootstrap::CreatedWithGeneratedPassword(pw) => {
            println!(
                "created user `admin` (role admin) with the generated password: {}",
                pw.expose()
            );
            println!("  it is shown only this once; change it with PATCH /users/admin");
        }
    }
    let status = app.state().policies.status();
    let loaded: Vec<_> = status
        .iter()
        .filter(|s| s.version.is_some())
        .map(|s| s.name.as_str())
        .collect();
    let failed: Vec<_> = status.iter().filter(|s| s.error.is_some()).collect();
    println!("gatehouse {} listening on http://{addr}", env!("CARGO_PKG_VERSION"));
    println!("  docs:     http://{addr}/docs  (log in with Authorize: user `admin`)");
    println!("  token:    curl -d 'grant_type=password&username=admin&password=...' http://{addr}/token");
    println!("  data:     {}", settings.data_dir.display());
    println!(
        "  policies: {} — {} loaded ({}), {} failed",
        settings.policies.display(),
        loaded.len(),
        loaded.join(", "),
        failed.len()
    );
    for f in failed {
        println!("  policy error: {}", f.error.as_deref().unwrap_or_default());
    }
    println!("  plugins:  {}", app.plugin_names().join(", "));
    // The first signal stops gracefully; a second one stops without waiting for requests.
    app.run_or_force(signals.clone().count(1), signals.count(2)).await?;
    println!("gatehouse stopped");
    Ok(())
}

/// SIGINT and SIGTERM, listened to from the moment this is made (inside a tokio runtime), so
/// that a signal during startup stops the server as soon as it is up instead of killing it.
#[derive(Debug, Clone)]
pub struct Signals(tokio::sync::watch::Receiver<u32>);

impl Signals {
    /// Starts listening.
    pub fn listen() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind, name| {
                signal(kind)
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen to {name}; it will not stop the server"))
                    .ok()
            };
            let mut term = listen(SignalKind::terminate(), "SIGTERM");
            let mut int = listen(SignalKind::interrupt(), "SIGINT");
            tokio::spawn(async move {
                loop {
                    let got = tokio::select! {
                        Some(()) = async { term.as_mut()?.recv().await } => true,
                        Some(()) = async { int.as_mut()?.recv().await } => true,
                        else => false,
                    };
                    if !got {
                        break;
                    }
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Self(rx)
    }

    /// Completes once `n` signals have arrived in all (never, when no signal can be received).
    pub async fn count(mut self, n: u32) {
        if self.0.wait_for(|got| *got >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    Signals::listen().count(1).await;
}

async fn keys_command(settings: Settings, cmd: KeysCommand) -> Result<ExitCode, String> {
    if settings.jwt_secret.is_some() || settings.jwt_private_key.is_some() {
        return Err("the signing key comes from `jwt_secret` or `jwt_private_key`; change it there".into());
    }
    if matches!(cmd, KeysCommand::List) && !settings.data_dir.join("db").exists() {
        return Err(format!("no database in `{}`", settings.data_dir.display()));
    }
    let store = open_store(&settings)?;
    let alg = crate::app::algorithm(&settings).map_err(|e| e.to_string())?;
    let keep = crate::app::key_keep_seconds(&settings);
    let stored = match cmd {
        KeysCommand::Rotate => crate::auth::keys::rotate(&store, alg, keep).await,
        KeysCommand::List => crate::auth::keys::load(&store).await,
    }
    .map_err(|e| e.to_string())?;
    println!("{:<24} {:<6} STATUS", "KID", "ALG");
    for k in &stored {
        let status = match k.retired_at {
            None => "signing".to_owned(),
            Some(t) => format!("retired, verifies until {}", t.saturating_add(keep)),
        };
        println!("{:<24} {:<6} {status}", k.kid, k.alg);
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn read_password_stdin() -> Result<String, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let pw = input.lines().next().unwrap_or_default().to_owned();
    check_password_rules(&pw).map_err(|e| e.to_string())?;
    Ok(pw)
}

fn open_store(settings: &Settings) -> Result<SledStore, String> {
    SledStore::open(&settings.data_dir).map_err(|e| match e {
        StoreError::Locked(dir) => format!(
            "the data directory `{dir}` is in use by a running gatehouse server; stop the server first, or use its HTTP API (/users, /keys/rotate)"
        ),
        other => other.to_string(),
    })
}

async fn user(settings: Settings, cmd: UserCommand) -> Result<ExitCode, String> {
    let store = open_store(&settings)?;
    let parse_name = |n: &str| Username::parse(n).map_err(|e| e.to_string());
    match cmd {
        UserCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            let username = parse_name(&name)?;
            let roles = roles
                .iter()
                .map(|r| Role::parse(r).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let (password, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (random_token(18), true)
            };
            let now = api::now_rfc3339();
            let hash = hash_blocking(&password).map_err(|e| e.to_string())?;
            let user = UserRecord::new(username, hash, roles, now);
            store.create_user(&user).await.map_err(|e| match e {
                StoreError::Conflict => format!("user `{name}` already exists"),
                other => other.to_string(),
            })?;
            if generated {
                println!("added user `{name}` with the generated password: {password}");
            } else {
                println!("added user `{name}`");
            }
        }
        UserCommand::List => {
            let mut after: Option<Username> = None;
            println!("{:<32} {:<9} ROLES", "USERNAME", "STATUS");
            loop {
                let page = store.list_users(after.as_ref(), 500).await.map_err(|e| e.to_string())?;
                for u in &page {
                    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
                    println!(
                        "{:<32} {:<9} {}",
                        u.username.as_str(),
                        if u.disabled { "disabled" } else { "active" },
                        roles.join(",")
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.username.clone()),
                    _ => break,
                }
            }
        }
        UserCommand::Remove { name } => {
            let username = parse_name(&name)?;
            if !store.delete_user(&username).await.map_err(|e| e.to_string())? {
                return Err(format!("no user `{name}`"));
            }
            println!("removed user `{name}`");
        }
        UserCommand::Passwd { name, .. } => {
            let username = parse_name(&name)?;
            let old = store
                .get_user(&username)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no user `{name}`"))?;
            let password = read_password_stdin()?;
            let mut new = old.clone();
            new.password_hash = hash_blocking(&password).map_err(|e| e.to_string())?;
            new.updated_at = api::now_rfc3339();
            new.token_version = new_token_version();
            store.update_user(&old, &new).await.map_err(|e| e.to_string())?;
            println!("changed the password of `{name}`");
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
