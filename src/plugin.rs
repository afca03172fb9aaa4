//! The extension point: a crate adds script helpers, token claims and typed endpoints to
//! gatehouse without forking it.
//!
//! A [`Plugin`] has three hooks, each optional except the API:
//! 1. [`Plugin::register_rhai`] registers Rhai functions and modules for policies. It runs once,
//!    on the policy engine, *before* the sandbox is hardened, so a plugin cannot loosen the
//!    limits (operations, call depth, sizes, no `eval`, imports only from `policies/lib/`, no `sleep`).
//! 2. [`Plugin::claims`] adds claims to every access token issued from a user record, by the
//!    password grant and by the refresh grant (which re-reads the current record). Claims named
//!    in [`RESERVED_CLAIMS`] (`sub`, `roles`, `iat`, `exp`, `nbf`, `iss`, `aud`, `jti`, `uver`,
//!    `typ`) are never taken from a plugin: they are dropped with a warning in the log. When two
//!    plugins set the same claim, the first in the set wins (also with a warning).
//! 3. [`Plugin::api`] returns the plugin's poem-openapi endpoints (any `#[OpenApi]` type). They
//!    are served next to the built-in ones and appear in the same OpenAPI document
//!    (`/openapi.json`, `/openapi.yaml`, `gatehouse openapi`) and Swagger UI.
//!
//! Handlers reach the shared state as the built-in ones do, with a `Data<&Arc<AppState>>`
//! parameter ([`AppState::store`] has the document API for plugins that want storage),
//! authenticate with a [`BearerAuth`] parameter (which gives the [`Caller`] and its verified
//! claims), and ask the policy of a kind with one call to [`authorize`], with any action name
//! (e.g. `"approve"`).
//!
//! A server runs a *set* of plugins, a tuple implementing [`Plugins`]: `()`, `(A,)`, `(A, B)`,
//! ... up to eight. The `gatehouse` binary is `cli::main_with((DocumentStore,))`: the built-in
//! document store (`/resources/...`) is itself the first plugin. A program of your own:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     gatehouse::cli::main_with((gatehouse::DocumentStore, MyPlugin::new()))
//! }
//! ```
//!
//! `examples/ticket_desk/` is a complete plugin: typed `/tickets` endpoints with a custom
//! `approve` action, a Rhai helper and a claim from the user record.
//!
//! Why an associated type and not `Box<dyn Plugin>`: poem-openapi's `OpenApi` trait is not
//! object-safe (the spec is built from the types), so plugin sets are composed as tuples, whose
//! API is the tuple of their APIs.

use std::{collections::HashSet, sync::Arc};

use poem::Request;
use poem_openapi::OpenApi;
use serde_json::{Map, Value};

pub use crate::api::{problem::ApiError, security::BearerAuth, AppState};
pub use crate::auth::{token::RESERVED_CLAIMS, Caller};
use crate::{
    api::{self, resources::ResourceApi, Target},
    auth::token::is_reserved_claim,
    policy::PolicySet,
};
pub use crate::{store::UserRecord, Settings};

/// Claims a plugin adds to a token: claim name to JSON value.
pub type ClaimMap = Map<String, Value>;

/// One plugin: script helpers, token claims and typed endpoints.
///
/// Only [`Plugin::name`] and [`Plugin::api`] are required. A plugin must be cheap to call: the
/// hooks run at startup ([`Plugin::register_rhai`], [`Plugin::api`]) or on each token issue
/// ([`Plugin::claims`]), inside the async runtime, so they must not block.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's endpoints: any `#[poem_openapi::OpenApi]` type, or `()` for none.
    type Api: OpenApi + 'static;

    /// A short name for logs and the startup banner (e.g. `"tickets"`).
    fn name(&self) -> &str;

    /// The endpoints to mount. Called once when the server is built (and by `gatehouse openapi`).
    fn api(&self) -> Self::Api;

    /// Registers Rhai functions, types or static modules for policies. Runs before the sandbox
    /// settings are applied, so they cannot be loosened here. Registered functions run inside
    /// the policy's budget only between script operations: keep them fast and non-blocking.
    fn register_rhai(&self, engine: &mut rhai::Engine) {
        let _ = engine;
    }

    /// Extra claims for an access token issued to `user` (password and refresh grants).
    /// Reserved names ([`RESERVED_CLAIMS`]) are dropped with a warning. Policies see the claims
    /// as `claims.<name>`. Keep them small: a token over 8 KiB cannot be issued.
    fn claims(&self, user: &UserRecord) -> ClaimMap {
        let _ = user;
        ClaimMap::new()
    }
}

/// A set of plugins, composed as a tuple: `()`, `(A,)`, `(A, B)`, ... up to eight
/// [`Plugin`]s. Its API is the tuple of the plugins' APIs, in order.
pub trait Plugins: Send + Sync + 'static {
    /// The endpoints of every plugin in the set.
    type Api: OpenApi + 'static;

    /// The endpoints of every plugin in the set, in order.
    fn api(&self) -> Self::Api;

    /// The plugins' names, in order.
    fn names(&self) -> Vec<&str>;

    /// Runs every plugin's [`Plugin::register_rhai`], in order.
    fn register_rhai(&self, engine: &mut rhai::Engine);

    /// Adds every plugin's [`Plugin::claims`] to `claims`, in order.
    fn collect_claims(&self, user: &UserRecord, claims: &mut ClaimSet);
}

/// The runtime side of a plugin set that the token endpoint needs, without its API type
/// (kept in [`AppState::plugins`]). Implemented for every [`Plugins`].
pub trait PluginHooks: Send + Sync + 'static {
    /// The plugins' claims for a token issued to `user`, reserved names dropped.
    fn extra_claims(&self, user: &UserRecord) -> ClaimMap;
}

impl<P: Plugins> PluginHooks for P {
    fn extra_claims(&self, user: &UserRecord) -> ClaimMap {
        let mut set = ClaimSet::default();
        self.collect_claims(user, &mut set);
        set.into_map()
    }
}

/// Claims gathered from plugins for one token. Refuses reserved names and names an earlier
/// plugin set already, with a warning naming the plugin.
#[derive(Debug, Default)]
pub struct ClaimSet {
    claims: ClaimMap,
    owners: Vec<(String, String)>,
}

impl ClaimSet {
    /// Adds `plugin`'s claims; returns how many were taken.
    pub fn add(&mut self, plugin: &str, claims: ClaimMap) -> usize {
        let mut taken = 0;
        for (name, value) in claims {
            if name.is_empty() || is_reserved_claim(&name) {
                tracing::warn!(
                    target: "gatehouse::plugin",
                    plugin,
                    claim = %name,
                    "plugin claim ignored: `{name}` is reserved for gatehouse"
                );
                continue;
            }
            if let Some((_, first)) = self.owners.iter().find(|(n, _)| *n == name) {
                tracing::warn!(
                    target: "gatehouse::plugin",
                    plugin,
                    claim = %name,
                    "plugin claim ignored: plugin `{first}` set `{name}` already"
                );
                continue;
            }
            self.owners.push((name.clone(), plugin.to_owned()));
            self.claims.insert(name, value);
            taken += 1;
        }
        taken
    }

    /// The gathered claims.
    pub fn into_map(self) -> ClaimMap {
        self.claims
    }
}

impl Plugins for () {
    type Api = ();

    fn api(&self) -> Self::Api {}

    fn names(&self) -> Vec<&str> {
        Vec::new()
    }

    fn register_rhai(&self, _engine: &mut rhai::Engine) {}

    fn collect_claims(&self, _user: &UserRecord, _claims: &mut ClaimSet) {}
}

// poem-openapi implements `OpenApi` for tuples of two or more, so a one-plugin set's API is the
// plugin's own (which also keeps the default spec exactly what it was before plugins).
impl<A: Plugin> Plugins for (A,) {
    type Api = A::Api;

    fn api(&self) -> Self::Api {
        self.0.api()
    }

    fn names(&self) -> Vec<&str> {
        vec![self.0.name()]
    }

    fn register_rhai(&self, engine: &mut rhai::Engine) {
        self.0.register_rhai(engine);
    }

    fn collect_claims(&self, user: &UserRecord, claims: &mut ClaimSet) {
        claims.add(self.0.name(), self.0.claims(user));
    }
}

macro_rules! plugins_for_tuple {
    ($($p:ident $i:tt),+) => {
        impl<$($p: Plugin),+> Plugins for ($($p,)+) {
            type Api = ($($p::Api,)+);

            fn api(&self) -> Self::Api {
                ($(self.$i.api(),)+)
            }

            fn names(&self) -> Vec<&str> {
                vec![$(self.$i.name()),+]
            }

            fn register_rhai(&self, engine: &mut rhai::Engine) {
                $(self.$i.register_rhai(engine);)+
            }

            fn collect_claims(&self, user: &UserRecord, claims: &mut ClaimSet) {
                $(claims.add(self.$i.name(), self.$i.claims(user));)+
            }
        }
    };
}

plugins_for_tuple!(A 0, B 1);
plugins_for_tuple!(A 0, B 1, C 2);
plugins_for_tuple!(A 0, B 1, C 2, D 3);
plugins_for_tuple!(A 0, B 1, C 2, D 3, E 4);
plugins_for_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
plugins_for_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
plugins_for_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// The built-in document store (`/resources/{kind}` and `/resources/{kind}/{id}`) as a plugin.
/// The `gatehouse` binary runs `(DocumentStore,)`; leave it out of a set to serve only your
/// own endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentStore;

impl Plugin for DocumentStore {
    type Api = ResourceApi;

    fn name(&self) -> &str {
        "documents"
    }

    fn api(&self) -> ResourceApi {
        ResourceApi
    }
}

/// The plugin set of the `gatehouse` binary.
pub type DefaultPlugins = (DocumentStore,);

/// Why a plugin set cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin API: {0}")]
pub struct PluginError(pub String);

/// Checks the whole API of a server with the plugin API `A`: every operation id is unique,
/// no two operations share a path and method, and no operation sits on `/docs`,
/// `/openapi.json` or `/openapi.yaml`. (poem-openapi would panic on the first, and routing
/// would silently shadow the others.)
pub fn check_api<A: OpenApi>() -> Result<(), PluginError> {
    let mut ids = HashSet::new();
    let mut routes = HashSet::new();
    for path in <api::FullApi<A> as OpenApi>::meta().into_iter().flat_map(|m| m.paths) {
        if path.path == "/openapi.json"
            || path.path == "/openapi.yaml"
            || path.path == "/docs"
            || path.path.starts_with("/docs/")
        {
            return Err(PluginError(format!(
                "`{}` is served by gatehouse itself (spec and Swagger UI)",
                path.path
            )));
        }
        for op in &path.operations {
            if !routes.insert((path.path.clone(), op.method.clone())) {
                return Err(PluginError(format!(
                    "two operations answer {} {}",
                    op.method, path.path
                )));
            }
            if let Some(id) = op.operation_id {
                if !ids.insert(id) {
                    return Err(PluginError(format!("operation id `{id}` is used twice")));
                }
            }
        }
    }
    Ok(())
}

/// The OpenAPI document (pretty JSON) of a server running `plugins`: what `gatehouse openapi`
/// prints and `/openapi.json` serves.
pub fn spec_json<P: Plugins>(plugins: &P) -> Result<String, PluginError> {
    check_api::<P::Api>()?;
    Ok(api::spec_json_of(&api::openapi_service_with(plugins.api())))
}

/// What a policy decides about, besides its kind: the script's `resource` map.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// `resource.id` (`()` when `None`, e.g. before creation).
    pub id: Option<&'a str>,
    /// `resource.owner` (`()` when `None`).
    pub owner: Option<&'a str>,
    /// `resource.data`: the stored or incoming data.
    pub data: &'a Value,
    /// `resource.old`: the stored data before a change (`()` when `None`).
    pub old: Option<&'a Value>,
    /// Extra entries merged into `resource` when this is a JSON object.
    pub extra: Option<&'a Value>,
}

impl<'a> Resource<'a> {
    /// A resource with only `data`.
    pub fn new(data: &'a Value) -> Self {
        Self {
            id: None,
            owner: None,
            data,
            old: None,
            extra: None,
        }
    }

    /// Sets `resource.id`.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets `resource.owner`.
    pub fn owner(mut self, owner: &'a str) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Sets `resource.old`.
    pub fn old(mut self, old: &'a Value) -> Self {
        self.old = Some(old);
        self
    }

    /// Sets extra `resource` entries (a JSON object).
    pub fn extra(mut self, extra: &'a Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

/// The policy set in force for this request. Take it once and pass it to [`authorize_in`] when
/// one request makes several decisions (e.g. filtering a list), so all of them see one version.
pub fn policies(req: &Request) -> Result<Arc<PolicySet>, ApiError> {
    req.data::<Arc<AppState>>()
        .map(|state| state.policies.snapshot())
        .ok_or_else(|| ApiError::internal(&"application state missing"))
}

/// Asks `policies/<kind>.rhai` whether `caller` may do `action` to `resource`, exactly as the
/// built-in endpoints do. `Ok(())` allows; otherwise the error is the answer to return:
/// 404 when `kind` is not a loaded resource kind (as `/resources/{kind}` does), 403 when the
/// policy denies, fails, or (for system names starting with `_`) is missing. Fail closed.
pub fn authorize(
    req: &Request,
    caller: &Caller,
    kind: &str,
    action: impl AsRef<str>,
    resource: Resource<'_>,
) -> Result<(), ApiError> {
    let set = policies(req)?;
    authorize_in(&set, req, caller, kind, action, resource)
}

/// As [`authorize`], against a policy set taken with [`policies`].
pub fn authorize_in(
    set: &PolicySet,
    req: &Request,
    caller: &Caller,
    kind: &str,
    action: impl AsRef<str>,
    resource: Resource<'_>,
) -> Result<(), ApiError> {
    if !kind.starts_with('_') {
        api::resources::known_kind(set, kind)?;
    }
    let claims = caller.policy_claims();
    let target = Target {
        kind,
        id: resource.id,
        owner: resource.owner,
        data: resource.data,
        old: resource.old,
        extra: resource.extra,
    };
    api::authorize(set, kind, claims, action, target, req)
}

#[cfg(test)]
mod tests {
    use poem_openapi::{param::Path, payload::PlainText, OpenApi};
    use serde_json::json;

    use super::*;
    use crate::{
        auth::Claims,
        model::{Role, Username},
        policy::{Limits, PolicyEngine},
    };

    fn user(roles: &[&str]) -> UserRecord {
        UserRecord::new(
            Username::parse("ann").unwrap(),
            String::new(),
            roles.iter().map(|r| Role::parse(r).unwrap()).collect(),
            String::new(),
        )
    }

    struct HelloApi;

    #[OpenApi]
    impl HelloApi {
        /// Say hello
        #[oai(path = "/hello/:name", method = "get", operation_id = "hello")]
        async fn hello(&self, name: Path<String>) -> PlainText<String> {
            PlainText(format!("hello {}", name.0))
        }
    }

    struct EchoApi;

    #[OpenApi]
    impl EchoApi {
        /// Echo
        #[oai(path = "/echo", method = "get", operation_id = "echo")]
        async fn echo(&self) -> PlainText<String> {
            PlainText("echo".into())
        }
    }

    /// Same operation id as the built-in `get_document`.
    struct ClashApi;

    #[OpenApi]
    impl ClashApi {
        /// Clash
        #[oai(path = "/clash", method = "get", operation_id = "get_document")]
        async fn clash(&self) -> PlainText<String> {
            PlainText("clash".into())
        }
    }

    struct OnDocs;

    #[OpenApi]
    impl OnDocs {
        /// Shadowed
        #[oai(path = "/docs/mine", method = "get", operation_id = "mine")]
        async fn mine(&self) -> PlainText<String> {
            PlainText("mine".into())
        }
    }

    /// A plugin with a helper, a claim from the roles, and an attempt at reserved claims.
    struct Hello;

    impl Plugin for Hello {
        type Api = HelloApi;
        fn name(&self) -> &str {
            "hello"
        }
        fn api(&self) -> HelloApi {
            HelloApi
        }
        fn register_rhai(&self, engine: &mut rhai::Engine) {
            engine.register_fn("double", |x: i64| x * 2);
            let mut module = rhai::Module::new();
            module.set_native_fn("greeting", |name: &str| Ok(format!("hello {name}")));
            engine.register_static_module("hello", module.into());
        }
        fn claims(&self, user: &UserRecord) -> ClaimMap {
            let mut m = ClaimMap::new();
            m.insert("role_count".into(), json!(user.roles.len()));
            m.insert("sub".into(), json!("root"));
            m.insert("roles".into(), json!(["admin"]));
            m.insert("exp".into(), json!(i64::MAX));
            m.insert("shared".into(), json!("hello"));
            m
        }
    }

    struct Echo;

    impl Plugin for Echo {
        type Api = EchoApi;
        fn name(&self) -> &str {
            "echo"
        }
        fn api(&self) -> EchoApi {
            EchoApi
        }
        fn register_rhai(&self, engine: &mut rhai::Engine) {
            engine.register_fn("triple", |x: i64| x * 3);
        }
        fn claims(&self, _user: &UserRecord) -> ClaimMap {
            let mut m = ClaimMap::new();
            m.insert("shared".into(), json!("echo"));
            m.insert("echo".into(), json!(true));
            m
        }
    }

    struct Clash;

    impl Plugin for Clash {
        type Api = ClashApi;
        fn name(&self) -> &str {
            "clash"
        }
        fn api(&self) -> ClashApi {
            ClashApi
        }
    }

    #[test]
    fn reserved_claims_are_never_taken_from_plugins() {
        let claims = (Hello,).extra_claims(&user(&["user"]));
        assert_eq!(claims.get("role_count"), Some(&json!(1)));
        for name in RESERVED_CLAIMS {
            assert!(!claims.contains_key(name), "{name}");
        }
        let mut set = ClaimSet::default();
        let mut all = ClaimMap::new();
        for name in RESERVED_CLAIMS {
            all.insert(name.into(), json!("x"));
        }
        all.insert(String::new(), json!("x"));
        assert_eq!(set.add("evil", all), 0);
        assert!(set.into_map().is_empty());
    }

    #[test]
    fn tuples_compose_names_claims_and_apis_in_order() {
        let plugins = (DocumentStore, Hello, Echo);
        assert_eq!(plugins.names(), ["documents", "hello", "echo"]);
        let claims = plugins.extra_claims(&user(&["a", "b"]));
        assert_eq!(claims.get("shared"), Some(&json!("hello")), "the first plugin wins");
        assert_eq!(claims.get("echo"), Some(&json!(true)));
        assert_eq!(claims.get("role_count"), Some(&json!(2)));

        let spec: Value = serde_json::from_str(&spec_json(&plugins).unwrap()).unwrap();
        let ops: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for id in ["hello", "echo", "get_document", "issue_token", "list_users"] {
            assert!(ops.contains(&id), "{id} missing from {ops:?}");
        }
        assert_eq!(().names(), Vec::<&str>::new());
        assert!(spec_json(&()).is_ok());
    }

    #[test]
    fn the_default_set_serves_the_default_spec() {
        assert_eq!(spec_json(&(DocumentStore,)).unwrap(), api::spec_json());
    }

    #[test]
    fn clashing_apis_are_refused_not_panicked_on() {
        let err = spec_json(&(DocumentStore, Clash)).unwrap_err();
        assert!(err.0.contains("get_document"), "{err}");
        assert!(check_api::<(HelloApi, HelloApi)>().is_err());
        assert!(check_api::<OnDocs>().unwrap_err().0.contains("/docs/mine"));
        assert!(check_api::<(ResourceApi, HelloApi, EchoApi)>().is_ok());
    }

    fn engine_with<P: Plugins>(plugins: &P, files: &[(&str, &str)]) -> (tempfile::TempDir, PolicyEngine) {
        let dir = tempfile::tempdir().unwrap();
        for (name, src) in files {
            std::fs::write(dir.path().join(format!("{name}.rhai")), src).unwrap();
        }
        let engine = PolicyEngine::with_setup(dir.path(), Limits::default(), |e| plugins.register_rhai(e));
        let report = engine.reload();
        assert!(report.failed.is_empty() && report.error.is_none(), "{report:?}");
        assert_eq!(report.loaded.len(), files.len(), "{report:?}");
        (dir, engine)
    }

    fn status(e: ApiError) -> u16 {
        poem::IntoResponse::into_response(e).status().as_u16()
    }

    fn caller(extra: Value) -> Caller {
        Caller::new(
            Username::parse("ann").unwrap(),
            Claims {
                sub: "ann".into(),
                roles: vec!["user".into()],
                iat: 0,
                exp: 0,
                iss: "gatehouse".into(),
                jti: "j".into(),
                uver: String::new(),
                extra: extra.as_object().cloned().unwrap_or_default(),
            },
        )
    }

    #[test]
    fn rhai_helpers_of_every_plugin_reach_policies_and_claims_and_actions_too() {
        let (_dir, engine) = engine_with(
            &(Hello, Echo),
            &[(
                "things",
                r#"
                if action == "approve" && double(21) == 42 && triple(2) == 6
                    && hello::greeting(claims.sub) == "hello ann" && claims.team == resource.data.team {
                    true
                } else {
                    #{ allow: false, reason: "no " + action }
                }
                "#,
            )],
        );
        let set = engine.snapshot();
        let req = Request::builder().uri_str("/things/1/approve").finish();
        let ann = caller(json!({"team": "red"}));
        let red = json!({"team": "red"});
        let blue = json!({"team": "blue"});
        assert!(authorize_in(&set, &req, &ann, "things", "approve", Resource::new(&red).id("1")).is_ok());
        let denied = authorize_in(&set, &req, &ann, "things", "approve", Resource::new(&blue)).unwrap_err();
        assert_eq!(status(denied), 403);
        let denied = authorize_in(&set, &req, &ann, "things", "delete", Resource::new(&red)).unwrap_err();
        assert_eq!(status(denied), 403);
        // Unknown kinds are 404, as on /resources; a missing system policy denies.
        let missing = authorize_in(&set, &req, &ann, "nothing", "approve", Resource::new(&red)).unwrap_err();
        assert_eq!(status(missing), 404);
        let bad = authorize_in(&set, &req, &ann, "Not A Kind", "approve", Resource::new(&red)).unwrap_err();
        assert_eq!(status(bad), 404);
        let system = authorize_in(&set, &req, &ann, "_things", "approve", Resource::new(&red)).unwrap_err();
        assert_eq!(status(system), 403);
    }

    #[test]
    fn without_the_plugin_the_helper_is_missing_and_the_policy_denies() {
        let (_dir, engine) = engine_with(&(), &[("things", "double(21) == 42")]);
        let req = Request::builder().finish();
        let err = authorize_in(
            &engine.snapshot(),
            &req,
            &caller(json!({})),
            "things",
            "read",
            Resource::new(&json!({})),
        )
        .unwrap_err();
        assert_eq!(status(err), 403);
    }

    #[test]
    fn plugins_cannot_loosen_the_sandbox() {
        struct Loose;
        impl Plugin for Loose {
            type Api = ();
            fn name(&self) -> &str {
                "loose"
            }
            fn api(&self) {}
            fn register_rhai(&self, engine: &mut rhai::Engine) {
                engine.set_max_operations(0).set_strict_variables(false);
            }
        }
        let (_dir, engine) = engine_with(&(Loose,), &[("spin", "let n = 0; loop { n += 1; }")]);
        let req = Request::builder().finish();
        let err = authorize_in(
            &engine.snapshot(),
            &req,
            &caller(json!({})),
            "spin",
            "read",
            Resource::new(&json!({})),
        )
        .unwrap_err();
        assert_eq!(status(err), 403);
    }

    #[test]
    fn authorize_without_state_is_an_error_not_a_panic() {
        let req = Request::builder().finish();
        let err = authorize(&req, &caller(json!({})), "things", "read", Resource::new(&json!({}))).unwrap_err();
        assert_eq!(status(err), 500);
    }
}
