//! The bearer-token security scheme, declared as OAuth2 password flow so that Swagger UI's
//! Authorize dialog logs in through `POST /token`.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{auth::Bearer, SecurityScheme};

use super::{problem::ApiError, AppState};
use crate::auth::Caller;

/// `Authorization: Bearer <access token>`; get one from `POST /token`.
#[derive(SecurityScheme)]
#[oai(
    rename = "OAuth2",
    ty = "oauth2",
    flows(password(token_url = "/token")),
    checker = "check_bearer"
)]
pub struct BearerAuth(pub Caller);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let Some(state) = req.data::<Arc<AppState>>() else {
        return Err(ApiError::internal(&"application state missing").into());
    };
    if bearer.token.is_empty() {
        return Err(ApiError::missing_token().into());
    }
    state
        .auth
        .authenticate(&bearer.token)
        .await
        .map_err(|e| ApiError::from(e).into())
}
