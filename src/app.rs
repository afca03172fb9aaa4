//! Building and running the server from [`Settings`]: open the store, make sure there is an
//! admin and a signing key, load and watch the policies, bind the listener, serve until told to
//! stop, then flush.
//!
//! Nothing here is global: tests build as many servers as they like on port 0.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use poem::EndpointExt as _;
use rand::RngCore;

use crate::{
    api::{self, AppState},
    auth::{
        keys::{self, KeyRing},
        token::TokenOptions,
        AuthError, Authenticator, Hasher, TokenService,
    },
    config::{Secret, Settings},
    model::{Role, Username},
    plugin::{check_api, DocumentStore, Plugins},
    policy::{self, Limits, PolicyEngine, WatchGuard},
    store::{SledStore, Store, StoreError, UserRecord},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store failed (or is locked by another process).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Keys or hashing failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(String),
    /// The policy watcher could not start.
    #[error("policy watcher: {0}")]
    Policy(String),
    /// The plugins' endpoints clash with each other or with gatehouse's.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}

/// What happened at startup that the operator must be told.
#[derive(Debug, Clone)]
pub enum AdminBootstrap {
    /// Users existed already.
    Existing,
    /// `admin` was created with the configured password.
    CreatedWithConfiguredPassword,
    /// `admin` was created with this generated password (print it once).
    CreatedWithGeneratedPassword(Secret),
}

/// A server ready to run: store open, policies loaded and watched, listener bound, routes
/// (with the plugins' endpoints) assembled.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    admin: AdminBootstrap,
    watch: WatchGuard,
    endpoint: poem::endpoint::BoxEndpoint<'static>,
    plugin_names: Vec<String>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A random secret of `n` bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the signing keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `jwt_secret` or `jwt_private_key`: fixed by configuration, rotated there.
    Configured,
    /// Generated and kept in the store: rotated by `gatehouse keys rotate` or `POST /keys/rotate`.
    Generated,
}

/// Seconds a retired key keeps verifying: the longest a token it signed can stay valid.
pub fn key_keep_seconds(settings: &Settings) -> i64 {
    i64::try_from(settings.access_token_ttl.saturating_add(settings.leeway)).unwrap_or(i64::MAX)
}

/// The configured algorithm.
pub fn algorithm(settings: &Settings) -> Result<jsonwebtoken::Algorithm, AuthError> {
    keys::parse_algorithm(&settings.jwt_algorithm)
        .ok_or_else(|| AuthError::Internal(format!("unsupported jwt_algorithm `{}`", settings.jwt_algorithm)))
}

/// The signing keys: from `jwt_secret`, from `jwt_private_key`, or generated once and kept
/// in the store (retired keys that outlived every token they signed are dropped).
pub async fn key_ring(store: &dyn Store, settings: &Settings) -> Result<(KeyRing, KeySource), AuthError> {
    let alg = algorithm(settings)?;
    if let Some(secret) = &settings.jwt_secret {
        let key = keys::hmac_key(secret.expose().as_bytes())?;
        return Ok((KeyRing::new(vec![key])?, KeySource::Configured));
    }
    if let Some(path) = &settings.jwt_private_key {
        let key = keys::RingKey::from_pem_file(path, alg)?;
        return Ok((KeyRing::new(vec![key])?, KeySource::Configured));
    }
    let stored = keys::load_or_generate(store, alg, key_keep_seconds(settings)).await?;
    Ok((stored_ring(&stored)?, KeySource::Generated))
}

/// Drops retired generated keys whose tokens have all expired (they leave the JWKS).
async fn prune_keys(state: &AppState) -> Result<(), AuthError> {
    if state.key_source != KeySource::Generated {
        return Ok(());
    }
    let _guard = state.key_lock.lock().await;
    let stored = keys::load_or_generate(
        state.store.as_ref(),
        algorithm(&state.settings)?,
        key_keep_seconds(&state.settings),
    )
    .await?;
    let kids: Vec<String> = stored.iter().map(|k| k.kid.clone()).collect();
    let before = state.auth.tokens().ring().kids();
    if kids != before {
        state.auth.tokens().set_ring(stored_ring(&stored)?)?;
        let removed: Vec<&String> = before.iter().filter(|k| !kids.contains(k)).collect();
        tracing::info!(target: "gatehouse::keys", removed = ?removed, "retired signing keys dropped: their tokens have expired");
    }
    Ok(())
}

/// A ring from stored keys.
pub fn stored_ring(stored: &[keys::StoredKey]) -> Result<KeyRing, AuthError> {
    KeyRing::new(stored.iter().map(keys::ring_key).collect::<Result<Vec<_>, _>>()?)
}

/// The script limits from the `policy_*` settings.
pub fn policy_limits(settings: &Settings) -> Limits {
    Limits {
        max_operations: settings.policy_max_operations,
        max_call_levels: settings.policy_max_call_levels,
        max_expr_depth: settings.policy_max_expr_depth,
        max_function_expr_depth: (settings.policy_max_expr_depth / 2).max(4),
        max_string_size: settings.policy_max_string_size,
        max_array_size: settings.policy_max_array_size,
        max_map_size: settings.policy_max_map_size,
        timeout: Duration::from_millis(settings.policy_timeout_ms),
        ..Limits::default()
    }
}

/// Opens the decision log the settings ask for.
pub fn open_decision_log(settings: &Settings) -> Result<crate::decisions::DecisionLog, AppError> {
    let path = settings.decision_log_path();
    crate::decisions::DecisionLog::open(crate::decisions::LogConfig {
        path: path.clone(),
        max_bytes: settings.decision_log_max_bytes,
        keep: settings.decision_log_keep,
        tracing: settings.decision_log_tracing,
        with_data: settings.decision_log_data,
    })
    .map_err(|e| {
        AppError::Io(format!(
            "cannot open the decision log `{}`: {e} (set decision_log = \"off\" to run without it)",
            path.unwrap_or_default().display()
        ))
    })
}

/// Creates `admin` (role `admin`) when the store has no users.
pub async fn bootstrap_admin(
    store: &dyn Store,
    hasher: &Hasher,
    settings: &Settings,
) -> Result<AdminBootstrap, AppError> {
    if store.has_users().await? {
        return Ok(AdminBootstrap::Existing);
    }
    let (password, generated) = match &settings.admin_password {
        Some(pw) => (pw.clone(), false),
        None => (Secret::new(random_token(18)), true),
    };
    let now = api::now_rfc3339();
    let user = UserRecord::new(
        Username::parse("admin").map_err(|e| AppError::Io(e.to_string()))?,
        hasher.hash(&password).await?,
        vec![Role::parse("admin").map_err(|e| AppError::Io(e.to_string()))?],
        now,
    );
    match store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Ok(AdminBootstrap::Existing),
        Err(e) => return Err(e.into()),
    }
    Ok(if generated {
        AdminBootstrap::CreatedWithGeneratedPassword(password)
    } else {
        AdminBootstrap::CreatedWithConfiguredPassword
    })
}

impl Application {
    /// Opens everything and binds the listener, with the plugins of the `gatehouse` binary
    /// ([`crate::plugin::DefaultPlugins`]: the document store). Must run inside a multi-threaded tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        Self::build_with_plugins(settings, (DocumentStore,)).await
    }

    /// As [`Application::build`], over a store of the caller's choice.
    pub async fn build_with_store(settings: Settings, store: Arc<dyn Store>) -> Result<Self, AppError> {
        Self::build_with_store_and_plugins(settings, store, (DocumentStore,)).await
    }

    /// As [`Application::build`], with a plugin set of the caller's choice (see
    /// [`crate::plugin`]; include [`DocumentStore`] to keep `/resources`).
    pub async fn build_with_plugins<P: Plugins>(settings: Settings, plugins: P) -> Result<Self, AppError> {
        // Clashing plugin endpoints and a configured key that cannot be used must fail before
        // anything is written to disk.
        check_api::<P::Api>()?;
        if let Some(path) = &settings.jwt_private_key {
            keys::RingKey::from_pem_file(path, algorithm(&settings)?)?;
        }
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&settings.data_dir)?);
        Self::build_with_store_and_plugins(settings, store, plugins).await
    }

    /// As [`Application::build_with_plugins`], over a store of the caller's choice.
    pub async fn build_with_store_and_plugins<P: Plugins>(
        settings: Settings,
        store: Arc<dyn Store>,
        plugins: P,
    ) -> Result<Self, AppError> {
        check_api::<P::Api>()?;
        // Half the cores hash passwords (at least one): a login flood then leaves the other half
        // to guarded requests, which matter more for a gatekeeper than login throughput.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hasher = Hasher::new((cores / 2).max(1))?;
        let (ring, key_source) = key_ring(store.as_ref(), &settings).await?;
        let tokens = TokenService::with_ring(
            ring,
            TokenOptions {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                ttl: settings.access_token_ttl,
                leeway: settings.leeway,
            },
        )?;
        // Plugins register their Rhai helpers before the sandbox is hardened.
        let policies = Arc::new(PolicyEngine::with_setup(
            settings.policies.clone(),
            policy_limits(&settings),
            |engine| plugins.register_rhai(engine),
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new().map_err(|e| AppError::Io(e.to_string()))?);
        policies.observe_reloads({
            let metrics = metrics.clone();
            move |report| metrics.observe_reload(report)
        });
        let engine = policies.clone();
        tokio::task::spawn_blocking(move || engine.reload())
            .await
            .map_err(|e| AppError::Policy(e.to_string()))?;
        let watch =
            policy::watch(policies.clone(), settings.policy_poll).map_err(|e| AppError::Policy(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .map_err(|e| AppError::Io(format!("cannot listen on {}: {e}", settings.bind)))?;
        let addr = listener.local_addr().map_err(|e| AppError::Io(e.to_string()))?;
        // Last of the fallible steps, so that a start that fails (busy port, missing policy
        // directory) never creates an admin whose generated password nobody saw.
        let decisions = Arc::new(open_decision_log(&settings)?);
        let admin = bootstrap_admin(store.as_ref(), &hasher, &settings).await?;
        let throttle = crate::auth::throttle::LoginThrottle::new(
            settings.login_failure_limit,
            Duration::from_secs(settings.login_failure_window),
        );
        let plugin_names = plugins.names().into_iter().map(str::to_owned).collect();
        let plugin_api = plugins.api();
        let state = Arc::new(AppState {
            auth: Authenticator::new(Arc::new(tokens), store.clone()),
            settings,
            store,
            hasher,
            plugins: Arc::new(plugins),
            policies,
            key_source,
            key_lock: tokio::sync::Mutex::new(()),
            throttle,
            decisions,
            policy_edit_lock: tokio::sync::Mutex::new(()),
            metrics,
        });
        let endpoint = api::routes_with(state.clone(), plugin_api).map_to_response().boxed();
        Ok(Self {
            listener,
            addr,
            state,
            admin,
            watch,
            endpoint,
            plugin_names,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state (store, policies, auth).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The whole HTTP endpoint, to call in process (benchmarks, tests) without the listener.
    pub fn endpoint(&self) -> &poem::endpoint::BoxEndpoint<'static> {
        &self.endpoint
    }

    /// The names of the plugins served, in order.
    pub fn plugin_names(&self) -> &[String] {
        &self.plugin_names
    }

    /// Whether `admin` was created at this start, and how.
    pub fn admin_bootstrap(&self) -> &AdminBootstrap {
        &self.admin
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish (up to
    /// `shutdown_timeout` seconds), stops the watcher, writes out the decision log and flushes
    /// the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        self.run_or_force(shutdown, std::future::pending()).await
    }

    /// As [`run`](Self::run), but when `force` completes while requests are still being
    /// finished, stops waiting for them (then stops the watcher and flushes as usual).
    pub async fn run_or_force(
        self,
        shutdown: impl Future<Output = ()> + Send,
        force: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        let acceptor =
            poem::listener::TcpAcceptor::from_tokio(self.listener).map_err(|e| AppError::Io(e.to_string()))?;
        let store = self.state.store.clone();
        let decisions = self.state.decisions.clone();
        // Revoked `jti`s, revoked families and refresh tokens are kept only until they expire.
        let pruner = tokio::spawn({
            let store = store.clone();
            let state = self.state.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    if let Err(e) = prune_keys(&state).await {
                        tracing::warn!(error = %e, "pruning retired signing keys failed");
                    }
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    match store.prune_expired(now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(pruned = n, "expired revocations pruned"),
                        Err(e) => tracing::warn!(error = %e, "pruning expired revocations failed"),
                    }
                }
            }
        });
        let grace = self.state.settings.shutdown_timeout;
        let metrics = self.state.metrics.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!(
                in_flight = metrics.requests_in_flight(),
                "shutting down: no new connections; in-flight requests get up to {grace} s"
            );
        };
        let server = poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            self.endpoint,
            shutdown,
            Some(Duration::from_secs(grace)),
        );
        let served = tokio::select! {
            served = server => served,
            () = force => {
                tracing::warn!("stopping without waiting for requests in flight");
                Ok(())
            }
        };
        drop(self.watch);
        pruner.abort();
        // Joins the writer thread after it has flushed every queued record.
        let _ = tokio::task::spawn_blocking(move || decisions.close()).await;
        store.flush().await?;
        served.map_err(|e| AppError::Io(e.to_string()))
    }
}
