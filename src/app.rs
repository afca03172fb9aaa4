//! Building and running the server from [`Settings`]: open the store, make sure there is an
//! admin and a signing key, load and watch the policies, bind the listener, serve until told to
//! stop, then flush.
//!
//! Nothing here is global: tests build as many servers as they like on port 0.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use rand::RngCore;

use crate::{
    api::{self, AppState},
    auth::{token::TokenOptions, AuthError, Authenticator, Hasher, TokenService},
    config::{Secret, Settings},
    model::{Role, Username},
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

/// A server ready to run: store open, policies loaded and watched, listener bound.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    admin: AdminBootstrap,
    watch: WatchGuard,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Key of the generated HS256 secret in the store's metadata.
const SECRET_KEY: &str = "jwt_hs256_secret";

/// A random secret of `n` bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The HMAC key: from the settings, or generated once and kept in the store.
pub async fn signing_secret(store: &dyn Store, settings: &Settings) -> Result<Vec<u8>, StoreError> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let mut fresh = vec![0u8; 48];
    rand::rng().fill_bytes(&mut fresh);
    store.init_meta(SECRET_KEY, &fresh).await
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
    /// Opens everything and binds the listener. Must run inside a multi-threaded tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&settings.data_dir)?);
        Self::build_with_store(settings, store).await
    }

    /// As [`Application::build`], over a store of the caller's choice.
    pub async fn build_with_store(settings: Settings, store: Arc<dyn Store>) -> Result<Self, AppError> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hasher = Hasher::new(workers)?;
        let secret = signing_secret(store.as_ref(), &settings).await?;
        let tokens = TokenService::new(
            &secret,
            TokenOptions {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                ttl: settings.access_token_ttl,
                leeway: settings.leeway,
            },
        )?;
        let policies = Arc::new(PolicyEngine::new(settings.policies.clone(), Limits::default()));
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
        let admin = bootstrap_admin(store.as_ref(), &hasher, &settings).await?;
        let settings_limit = (settings.login_failure_limit, settings.login_failure_window);
        let state = Arc::new(AppState {
            auth: Authenticator::new(Arc::new(tokens), store.clone()),
            settings,
            store,
            hasher,
            policies,
            throttle: crate::auth::throttle::LoginThrottle::new(
                settings_limit.0,
                Duration::from_secs(settings_limit.1),
            ),
        });
        Ok(Self {
            listener,
            addr,
            state,
            admin,
            watch,
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

    /// Whether `admin` was created at this start, and how.
    pub fn admin_bootstrap(&self) -> &AdminBootstrap {
        &self.admin
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish (up to 10 s), stops
    /// the watcher and flushes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let acceptor =
            poem::listener::TcpAcceptor::from_tokio(self.listener).map_err(|e| AppError::Io(e.to_string()))?;
        let store = self.state.store.clone();
        // Revoked `jti`s, revoked families and refresh tokens are kept only until they expire.
        let pruner = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    match store.prune_expired(now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(pruned = n, "expired revocations pruned"),
                        Err(e) => tracing::warn!(error = %e, "pruning expired revocations failed"),
                    }
                }
            }
        });
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(api::routes(self.state), shutdown, Some(Duration::from_secs(10)))
            .await;
        drop(self.watch);
        pruner.abort();
        store.flush().await?;
        served.map_err(|e| AppError::Io(e.to_string()))
    }
}
