//! `/users`: live user administration, decided by the system policy `policies/_users.rhai`.
//!
//! Without that file every request here is denied (403): fail closed. Password hashes never
//! leave the server; a script sees a user as `{username, roles, disabled, created_at,
//! updated_at}`, and on update also `resource.changes`, the names of the fields the request
//! changes (e.g. `["password"]`).

use std::sync::Arc;

use poem::{web::Data, Request};
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, Object, OpenApi,
};
use serde_json::{json, Value};

use super::{authorize, now_rfc3339, page_limit, problem::ApiError, security::BearerAuth, ApiTags, AppState, Target};
use crate::{
    auth::password::check_password_rules,
    config::Secret,
    model::{Action, Role, Username},
    store::{new_token_version, UserRecord},
};

/// The policy that governs `/users`.
pub const USERS_POLICY: &str = "_users";

/// A user as the API shows it (never the password or its hash).
#[derive(Debug, Object)]
#[oai(example)]
pub struct UserView {
    /// Login name, the `sub` of the user's tokens.
    pub username: String,
    /// Roles, copied into the `roles` claim.
    pub roles: Vec<String>,
    /// A disabled user cannot log in and their tokens are refused.
    pub disabled: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

impl poem_openapi::types::Example for UserView {
    fn example() -> Self {
        Self {
            username: "ann".into(),
            roles: vec!["user".into()],
            disabled: false,
            created_at: "2026-12-03T17:00:00Z".into(),
            updated_at: "2026-12-03T17:00:00Z".into(),
        }
    }
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            username: u.username.to_string(),
            roles: u.roles.iter().map(|r| r.to_string()).collect(),
            disabled: u.disabled,
            created_at: u.created_at.clone(),
            updated_at: u.updated_at.clone(),
        }
    }
}

fn as_value(u: &UserRecord) -> Value {
    json!({
        "username": u.username.as_str(),
        "roles": u.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "disabled": u.disabled,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

/// A new user.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct NewUser {
    /// 1 to 64 characters from `A-Z a-z 0-9 . _ @ -`, starting with a letter or digit.
    pub username: String,
    /// At least 8 characters. (Never answered; not marked `writeOnly`, so that the example
    /// Swagger UI fills in has a password.)
    pub password: String,
    /// Roles (default: none).
    #[oai(default)]
    pub roles: Vec<String>,
}

impl poem_openapi::types::Example for NewUser {
    fn example() -> Self {
        Self {
            username: "ann".into(),
            password: "correct horse battery".into(),
            roles: vec!["user".into()],
        }
    }
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct UserPatch {
    /// New password (at least 8 characters).
    #[oai(write_only)]
    pub password: Option<String>,
    /// New roles (replace the old ones).
    pub roles: Option<Vec<String>>,
    /// Disable or re-enable the user.
    pub disabled: Option<bool>,
}

/// One page of users.
#[derive(Debug, Object)]
pub struct UserPage {
    /// Users on this page that the policy lets the caller read.
    pub items: Vec<UserView>,
    /// Cursor for the next page (pass as `after`), or `null` at the end.
    pub next: Option<String>,
}

/// Answer of a user creation.
#[derive(Debug, ApiResponse)]
pub enum CreatedUser {
    /// Created.
    #[oai(status = 201)]
    Created(Json<UserView>, #[oai(header = "Location")] String),
}

/// Answer of a token revocation for a user.
#[derive(Debug, ApiResponse)]
pub enum RevokedTokens {
    /// Every access and refresh token issued to the user so far is refused from now on.
    #[oai(status = 204)]
    Revoked,
}

/// Answer of a user deletion.
#[derive(Debug, ApiResponse)]
pub enum DeletedUser {
    /// Deleted; the user's tokens stop working at once.
    #[oai(status = 204)]
    Deleted,
}

fn parse_roles(roles: &[String]) -> Result<Vec<Role>, ApiError> {
    if roles.len() > 64 {
        return Err(ApiError::bad_request("at most 64 roles"));
    }
    let mut out: Vec<Role> = Vec::with_capacity(roles.len());
    for r in roles {
        let role = Role::parse(r).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

fn path_user(name: &str) -> Result<Username, ApiError> {
    Username::parse(name).map_err(|_| ApiError::not_found("no such user"))
}

/// The stored user named in the path, or 404.
async fn stored_user(state: &AppState, name: &Username) -> Result<UserRecord, ApiError> {
    state
        .store
        .get_user(name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

/// The `resource` a user is to `_users.rhai`: `id` and `owner` are the user name.
fn user_target<'a>(name: &'a Username, data: &'a Value) -> Target<'a> {
    Target::new(USERS_POLICY, Some(name.as_str()), Some(name.as_str()), data)
}

/// Stores `new` in place of `old` (409 if it changed meanwhile), stamping `updated_at`.
async fn save_user(state: &AppState, old: &UserRecord, mut new: UserRecord) -> Result<UserRecord, ApiError> {
    new.updated_at = now_rfc3339();
    state.store.update_user(old, &new).await?;
    Ok(new)
}

/// The user endpoints.
pub struct UserApi;

#[OpenApi(tag = "ApiTags::Users")]
impl UserApi {
    /// Create a user
    ///
    /// Decided by `_users.rhai` with `action == "create"`. The password is hashed with argon2id;
    /// neither it nor its hash is ever returned or logged.
    #[oai(path = "/users", method = "post", operation_id = "create_user")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        body: Json<NewUser>,
    ) -> Result<CreatedUser, ApiError> {
        let username = Username::parse(&body.username).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let roles = parse_roles(&body.roles)?;
        check_password_rules(&body.password)?;
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let data = json!({"username": username.as_str(), "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(), "disabled": false});
        authorize(
            &set,
            USERS_POLICY,
            claims,
            Action::Create,
            Target::new(USERS_POLICY, None, None, &data),
            req,
        )?;
        let hash = state.hasher.hash(&Secret::new(body.0.password)).await?;
        let now = now_rfc3339();
        let user = UserRecord::new(username, hash, roles, now);
        state.store.create_user(&user).await.map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                ApiError::conflict(format!("user `{}` already exists", user.username))
            }
            other => other.into(),
        })?;
        tracing::info!(target: "gatehouse::users", user = %user.username, by = %auth.0.username, "user created");
        Ok(CreatedUser::Created(
            Json((&user).into()),
            format!("/users/{}", user.username),
        ))
    }

    /// List users
    ///
    /// Checks `action == "list"`, then shows only users the policy lets the caller `read`.
    #[oai(path = "/users", method = "get", operation_id = "list_users")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<u32>>,
        /// Cursor from the previous page's `next`.
        after: Query<Option<String>>,
    ) -> Result<Json<UserPage>, ApiError> {
        let limit = page_limit(limit.0)?;
        let after = match after.0.as_deref() {
            Some(a) => {
                Some(Username::parse(a).map_err(|_| ApiError::bad_request("`after` is not a cursor from this API"))?)
            }
            None => None,
        };
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let empty = Value::Object(Default::default());
        authorize(
            &set,
            USERS_POLICY,
            claims,
            Action::List,
            Target::new(USERS_POLICY, None, None, &empty),
            req,
        )?;
        let batch = state.store.list_users(after.as_ref(), limit).await?;
        let next = (batch.len() == limit)
            .then(|| batch.last().map(|u| u.username.to_string()))
            .flatten();
        let items = batch
            .iter()
            .filter(|u| {
                let data = as_value(u);
                let target = Target::new(
                    USERS_POLICY,
                    Some(u.username.as_str()),
                    Some(u.username.as_str()),
                    &data,
                );
                authorize(&set, USERS_POLICY, claims, Action::Read, target, req).is_ok()
            })
            .map(UserView::from)
            .collect();
        Ok(Json(UserPage { items, next }))
    }

    /// Read a user
    #[oai(path = "/users/:username", method = "get", operation_id = "get_user")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// User name.
        username: Path<String>,
    ) -> Result<Json<UserView>, ApiError> {
        let name = path_user(&username)?;
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let user = state.store.get_user(&name).await?;
        // A missing user is decided as a record owned by that name, so that a caller who may
        // not read it cannot probe which users exist (403 either way).
        let data = user
            .as_ref()
            .map_or_else(|| json!({"username": name.as_str()}), as_value);
        authorize(&set, USERS_POLICY, claims, Action::Read, user_target(&name, &data), req)?;
        let user = user.ok_or_else(|| ApiError::not_found("no such user"))?;
        Ok(Json((&user).into()))
    }

    /// Change a user
    ///
    /// Any of `password`, `roles`, `disabled`. Decided by `_users.rhai` with `action ==
    /// "update"`, `resource.data` = the user after the change, `resource.old` = before, and
    /// `resource.changes` = the names of the fields sent. Changing the password or roles, or
    /// disabling the user, invalidates the tokens issued to them before.
    #[oai(path = "/users/:username", method = "patch", operation_id = "update_user")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// User name.
        username: Path<String>,
        body: Json<UserPatch>,
    ) -> Result<Json<UserView>, ApiError> {
        let name = path_user(&username)?;
        let patch = body.0;
        let roles = patch.roles.as_deref().map(parse_roles).transpose()?;
        if let Some(pw) = &patch.password {
            check_password_rules(pw)?;
        }
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let old = stored_user(&state, &name).await?;
        let mut new = old.clone();
        let mut changes = Vec::new();
        if let Some(roles) = roles {
            new.roles = roles;
            changes.push("roles");
        }
        if let Some(disabled) = patch.disabled {
            new.disabled = disabled;
            changes.push("disabled");
        }
        if patch.password.is_some() {
            changes.push("password");
        }
        let data = as_value(&new);
        let old_data = as_value(&old);
        let extra = json!({ "changes": changes });
        let mut target = user_target(&name, &data);
        target.old = Some(&old_data);
        target.extra = Some(&extra);
        authorize(&set, USERS_POLICY, claims, Action::Update, target, req)?;
        if let Some(pw) = patch.password {
            new.password_hash = state.hasher.hash(&Secret::new(pw)).await?;
        }
        if new.password_hash != old.password_hash || new.roles != old.roles || (new.disabled && !old.disabled) {
            new.token_version = new_token_version();
        }
        let new = save_user(&state, &old, new).await?;
        tracing::info!(target: "gatehouse::users", user = %name, by = %auth.0.username, changes = ?changes, "user changed");
        Ok(Json((&new).into()))
    }

    /// Revoke every token of a user (log out everywhere)
    ///
    /// Every access and refresh token issued to the user so far stops working at once; they can
    /// log in again. Decided by `_users.rhai` with `action == "update"` and
    /// `resource.changes == ["tokens"]` (the shipped policy lets admins do it for anyone and users
    /// for themselves).
    #[oai(
        path = "/users/:username/revoke-tokens",
        method = "post",
        operation_id = "revoke_user_tokens"
    )]
    async fn revoke_tokens(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// User name.
        username: Path<String>,
    ) -> Result<RevokedTokens, ApiError> {
        let name = path_user(&username)?;
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let old = stored_user(&state, &name).await?;
        let data = as_value(&old);
        let extra = json!({ "changes": ["tokens"] });
        let mut target = user_target(&name, &data);
        target.old = Some(&data);
        target.extra = Some(&extra);
        authorize(&set, USERS_POLICY, claims, Action::Update, target, req)?;
        let new = UserRecord {
            token_version: new_token_version(),
            ..old.clone()
        };
        save_user(&state, &old, new).await?;
        tracing::info!(target: "gatehouse::users", user = %name, by = %auth.0.username, "all tokens revoked");
        Ok(RevokedTokens::Revoked)
    }

    /// Delete a user
    ///
    /// Their tokens stop working at once. Documents they own are kept.
    #[oai(path = "/users/:username", method = "delete", operation_id = "delete_user")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// User name.
        username: Path<String>,
    ) -> Result<DeletedUser, ApiError> {
        let name = path_user(&username)?;
        let set = state.policies.snapshot();
        let claims = auth.0.policy_claims();
        let user = stored_user(&state, &name).await?;
        let data = as_value(&user);
        authorize(
            &set,
            USERS_POLICY,
            claims,
            Action::Delete,
            user_target(&name, &data),
            req,
        )?;
        if !state.store.delete_user(&name).await? {
            return Err(ApiError::not_found("no such user"));
        }
        tracing::info!(target: "gatehouse::users", user = %name, by = %auth.0.username, "user deleted");
        Ok(DeletedUser::Deleted)
    }
}
