//! `ticket_desk`: a complete gatehouse plugin, and a server that runs it.
//!
//! It shows the three hooks of [`gatehouse::Plugin`]:
//! - **endpoints**: typed `/tickets` operations (open, view, approve) that authenticate with the
//!   same bearer tokens and ask `policies/tickets.rhai` with their own actions (`"open"`,
//!   `"view"`, `"approve"`); they appear in `/openapi.json` and Swagger UI with the built-ins;
//! - **a policy helper**: the Rhai function `priority_rank(p)`;
//! - **a claim**: `department`, from the user's role `dept:<name>`.
//!
//! Run it with the full gatehouse command line and the policies beside it:
//!
//! ```sh
//! GATEHOUSE_ADMIN_PASSWORD=change-me-now cargo run --example ticket_desk -- \
//!     serve --policies examples/ticket_desk/policies --data-dir ./ticket-data
//! ```
//!
//! Tickets are stored as documents of kind `tickets` in gatehouse's own store
//! ([`gatehouse::store::Store`]); the policy denies the document store's actions, so
//! `/resources/tickets` cannot change them behind the desk's back.

use std::{process::ExitCode, sync::Arc};

use gatehouse::{
    model::{DocId, Kind},
    plugin::{self, ApiError, AppState, BearerAuth, ClaimMap, Plugin, Resource, UserRecord},
    store::Document,
    DocumentStore,
};
use poem::{web::Data, Request};
use poem_openapi::{param::Path, payload::Json, ApiResponse, Enum, Object, OpenApi, Tags};
use serde_json::{json, Value};

fn main() -> ExitCode {
    // The gatehouse command line (serve, user, policy, keys, openapi) with two plugins: the
    // built-in document store and the ticket desk.
    gatehouse::cli::main_with((DocumentStore, TicketDesk))
}

/// The policy file that decides every ticket request: `policies/tickets.rhai`.
const KIND: &str = "tickets";

/// The plugin.
struct TicketDesk;

impl Plugin for TicketDesk {
    type Api = TicketApi;

    fn name(&self) -> &str {
        "tickets"
    }

    fn api(&self) -> TicketApi {
        TicketApi
    }

    fn register_rhai(&self, engine: &mut rhai::Engine) {
        // `priority_rank("urgent") == 3`; an unknown priority is an error, so the policy denies.
        engine.register_fn("priority_rank", |p: &str| -> Result<i64, Box<rhai::EvalAltResult>> {
            match p {
                "low" => Ok(1),
                "normal" => Ok(2),
                "urgent" => Ok(3),
                other => Err(format!("unknown ticket priority `{other}`").into()),
            }
        });
    }

    fn claims(&self, user: &UserRecord) -> ClaimMap {
        // The user's department is the name of their first `dept:<name>` role.
        let mut claims = ClaimMap::new();
        if let Some(dept) = user.roles.iter().find_map(|r| r.as_str().strip_prefix("dept:")) {
            claims.insert("department".into(), Value::from(dept));
        }
        claims
    }
}

/// Operation group in the spec and Swagger UI.
#[derive(Tags)]
enum DeskTags {
    /// The ticket desk (an example plugin): open, view and approve tickets.
    Tickets,
}

/// How urgent a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
enum Priority {
    /// Whenever.
    Low,
    /// Soon.
    Normal,
    /// Now (needs a director to approve).
    Urgent,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::Urgent => "urgent",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// A ticket to open.
#[derive(Debug, Object)]
struct NewTicket {
    /// What it is about.
    #[oai(validator(min_length = 1, max_length = 200))]
    title: String,
    /// How urgent it is.
    priority: Priority,
    /// The department that handles it (the policy lets you open tickets for your own).
    #[oai(validator(min_length = 1, max_length = 64))]
    department: String,
}

/// A ticket.
#[derive(Debug, Object)]
struct Ticket {
    /// Unique id.
    id: String,
    /// What it is about.
    title: String,
    /// How urgent it is.
    priority: Priority,
    /// The department that handles it.
    department: String,
    /// Who opened it.
    owner: String,
    /// `open` or `approved`.
    status: String,
    /// Who approved it, once approved.
    approved_by: Option<String>,
    /// RFC 3339 time it was opened.
    created_at: String,
    /// RFC 3339 time of the last change.
    updated_at: String,
}

impl TryFrom<&Document> for Ticket {
    type Error = ApiError;

    fn try_from(doc: &Document) -> Result<Self, ApiError> {
        let text = |key: &str| doc.data.get(key).and_then(Value::as_str).map(str::to_owned);
        let corrupt = || ApiError::internal(&format!("ticket {} is not a ticket record", doc.id));
        Ok(Ticket {
            id: doc.id.to_string(),
            title: text("title").ok_or_else(corrupt)?,
            priority: text("priority")
                .as_deref()
                .and_then(Priority::parse)
                .ok_or_else(corrupt)?,
            department: text("department").ok_or_else(corrupt)?,
            owner: doc.owner.to_string(),
            status: text("status").ok_or_else(corrupt)?,
            approved_by: text("approved_by"),
            created_at: doc.created_at.clone(),
            updated_at: doc.updated_at.clone(),
        })
    }
}

/// Answer of `POST /tickets`.
#[derive(Debug, ApiResponse)]
enum OpenedTicket {
    /// Opened.
    #[oai(status = 201)]
    Created(Json<Ticket>, #[oai(header = "Location")] String),
}

/// The ticket endpoints.
struct TicketApi;

fn kind() -> Result<Kind, ApiError> {
    Kind::parse(KIND).map_err(|e| ApiError::internal(&e))
}

async fn stored(state: &AppState, id: &str) -> Result<Document, ApiError> {
    let id = DocId::parse(id).map_err(|_| ApiError::not_found("no such ticket"))?;
    state
        .store
        .get_doc(&kind()?, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such ticket"))
}

fn data(doc: &Document) -> Value {
    Value::Object(doc.data.clone())
}

#[OpenApi(tag = "DeskTags::Tickets")]
impl TicketApi {
    /// Open a ticket
    ///
    /// Decided by `policies/tickets.rhai` with `action == "open"`.
    #[oai(path = "/tickets", method = "post", operation_id = "open_ticket")]
    async fn open(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        body: Json<NewTicket>,
    ) -> Result<OpenedTicket, ApiError> {
        let data = json!({
            "title": body.title,
            "priority": body.priority.as_str(),
            "department": body.department,
            "status": "open",
        });
        plugin::authorize(req, &auth.0, KIND, "open", Resource::new(&data))?;
        let now = gatehouse::api::now_rfc3339();
        let doc = Document {
            id: DocId::generate(),
            kind: kind()?,
            owner: auth.0.username.clone(),
            data: data.as_object().cloned().unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
        };
        state.store.insert_doc(&doc).await?;
        Ok(OpenedTicket::Created(
            Json(Ticket::try_from(&doc)?),
            format!("/tickets/{}", doc.id),
        ))
    }

    /// Read a ticket
    ///
    /// Decided with `action == "view"`.
    #[oai(path = "/tickets/:id", method = "get", operation_id = "get_ticket")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Ticket id.
        id: Path<String>,
    ) -> Result<Json<Ticket>, ApiError> {
        let doc = stored(&state, &id).await?;
        let data = data(&doc);
        let resource = Resource::new(&data).id(doc.id.as_str()).owner(doc.owner.as_str());
        plugin::authorize(req, &auth.0, KIND, "view", resource)?;
        Ok(Json(Ticket::try_from(&doc)?))
    }

    /// Approve a ticket
    ///
    /// Decided with the desk's own action, `action == "approve"`. 409 when it is approved already.
    #[oai(path = "/tickets/:id/approve", method = "post", operation_id = "approve_ticket")]
    async fn approve(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Ticket id.
        id: Path<String>,
    ) -> Result<Json<Ticket>, ApiError> {
        let old = stored(&state, &id).await?;
        let data = data(&old);
        let resource = Resource::new(&data).id(old.id.as_str()).owner(old.owner.as_str());
        plugin::authorize(req, &auth.0, KIND, "approve", resource)?;
        if old.data.get("status").and_then(Value::as_str) == Some("approved") {
            return Err(ApiError::conflict("the ticket is approved already"));
        }
        let mut new = old.clone();
        new.data.insert("status".into(), "approved".into());
        new.data.insert("approved_by".into(), auth.0.username.as_str().into());
        new.updated_at = gatehouse::api::now_rfc3339();
        state.store.update_doc(&old, &new).await?;
        Ok(Json(Ticket::try_from(&new)?))
    }
}
