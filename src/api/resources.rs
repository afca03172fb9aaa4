//! `/resources/{kind}`: the built-in document store. A kind exists exactly while
//! `policies/<kind>.rhai` is loaded; every operation is decided by that script.

use std::{collections::BTreeMap, sync::Arc};

use poem::{web::Data, Request};
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, Object, OpenApi,
};
use serde_json::Value;

use super::{
    authorize, page_limit, payload::EncodedJson, problem::ApiError, security::BearerAuth, ApiTags, AppState, Target,
};
use crate::{
    model::{Action, DocId, Kind},
    policy::PolicySet,
    store::Document,
};

/// Listing reads at most this many documents per request, however few the policy lets
/// through; the `next` cursor continues from where it stopped.
const MAX_SCAN: usize = 10_000;

/// A stored document.
#[derive(Debug, Object)]
#[oai(example)]
pub struct DocumentView {
    /// Unique id within the kind (time-ordered).
    pub id: String,
    /// The resource kind.
    pub kind: String,
    /// User name of the creator.
    pub owner: String,
    /// The document's content: any JSON object.
    pub data: BTreeMap<String, Value>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

impl poem_openapi::types::Example for DocumentView {
    fn example() -> Self {
        Self {
            id: "019a7c2e-3b1f-7cc0-9a51-2f0c6b7d8e90".into(),
            kind: "notes".into(),
            owner: "ann".into(),
            data: BTreeMap::from([("title".to_owned(), Value::from("groceries"))]),
            created_at: "2026-12-03T17:00:00Z".into(),
            updated_at: "2026-12-03T17:00:00Z".into(),
        }
    }
}

impl From<Document> for DocumentView {
    fn from(d: Document) -> Self {
        Self {
            id: d.id.to_string(),
            kind: d.kind.to_string(),
            owner: d.owner.to_string(),
            data: d.data.into_iter().collect(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// One page of documents.
#[derive(Debug, Object)]
pub struct DocumentPage {
    /// The documents on this page that the policy lets the caller read.
    pub items: Vec<DocumentView>,
    /// Cursor for the next page (pass as `after`), or `null` at the end.
    pub next: Option<String>,
}

/// [`DocumentPage`] as encoded: the stored documents themselves (a `Document` serializes as a
/// [`DocumentView`]; `tests::stored_documents_encode_as_the_api_shape` checks it).
#[derive(serde::Serialize)]
struct EncodedPage<'a> {
    items: &'a [Document],
    next: Option<String>,
}

/// The object `Value::Object(map)` held (documents are always objects).
fn into_object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Answer of a create.
#[derive(Debug, ApiResponse)]
pub enum CreatedDocument {
    /// Created.
    #[oai(status = 201)]
    Created(Json<DocumentView>, #[oai(header = "Location")] String),
}

/// Answer of a delete.
#[derive(Debug, ApiResponse)]
pub enum DeletedDocument {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// The document endpoints.
pub struct ResourceApi;

fn now_rfc3339() -> String {
    super::now_rfc3339()
}

/// The kind named in the path, if its policy is loaded in `set`.
pub(crate) fn known_kind(set: &PolicySet, kind: &str) -> Result<Kind, ApiError> {
    match Kind::parse(kind) {
        Ok(k) if set.has(k.as_str()) => Ok(k),
        Ok(k) if set.status().iter().any(|s| s.name == k.as_str()) => Err(ApiError::not_found(format!(
            "no resource kind `{k}`: policies/{k}.rhai has never compiled; GET /policies shows its error"
        ))),
        _ => Err(ApiError::not_found(format!(
            "no resource kind `{}`: a kind exists while policies/<kind>.rhai does",
            kind.chars().take(64).collect::<String>()
        ))),
    }
}

/// A cursor is the id of the last document of a page: a lowercase hyphenated UUID.
fn parse_cursor(after: &str) -> Result<DocId, ApiError> {
    let bad = || ApiError::bad_request("`after` is not a cursor from this API (pass the previous page's `next`)");
    let uuid = uuid::Uuid::parse_str(after).map_err(|_| bad())?;
    if uuid.hyphenated().to_string() != after {
        return Err(bad());
    }
    DocId::parse(after).map_err(|_| bad())
}

fn doc_id(id: &str) -> Result<DocId, ApiError> {
    DocId::parse(id).map_err(|_| ApiError::not_found("no such document"))
}

fn object(data: &BTreeMap<String, Value>) -> Value {
    Value::Object(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[OpenApi(tag = "ApiTags::Resources")]
impl ResourceApi {
    /// Create a document
    ///
    /// The body is any JSON object; the caller becomes its `owner`. Decided by
    /// `policies/{kind}.rhai` with `action == "create"` and `resource.data` = the body.
    #[oai(path = "/resources/:kind", method = "post", operation_id = "create_document")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Resource kind (the policy file's name).
        kind: Path<String>,
        body: Json<BTreeMap<String, Value>>,
    ) -> Result<CreatedDocument, ApiError> {
        let set = state.policies.snapshot();
        let kind = known_kind(&set, &kind)?;
        let claims = auth.0.policy_claims();
        let data = object(&body);
        authorize(
            &set,
            kind.as_str(),
            claims,
            Action::Create,
            Target::new(kind.as_str(), None, None, &data),
            req,
        )?;
        let now = now_rfc3339();
        let doc = Document {
            id: DocId::generate(),
            kind: kind.clone(),
            owner: auth.0.username.clone(),
            data: body.0.into_iter().collect(),
            created_at: now.clone(),
            updated_at: now,
        };
        state.store.insert_doc(&doc).await?;
        let location = format!("/resources/{}/{}", doc.kind, doc.id);
        Ok(CreatedDocument::Created(Json(doc.into()), location))
    }

    /// List documents
    ///
    /// Checks `action == "list"` once, then lists in creation order only the documents the
    /// policy lets the caller `read`. Pages hold at most `limit` items; a page may hold fewer
    /// when the policy hides some, so follow `next` until it is `null`.
    #[oai(path = "/resources/:kind", method = "get", operation_id = "list_documents")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Resource kind.
        kind: Path<String>,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<u32>>,
        /// Cursor from the previous page's `next`.
        after: Query<Option<String>>,
    ) -> Result<EncodedJson<DocumentPage>, ApiError> {
        let set = state.policies.snapshot();
        let kind = known_kind(&set, &kind)?;
        let limit = page_limit(limit.0)?;
        let mut cursor = match after.0.as_deref() {
            Some(a) => Some(parse_cursor(a)?),
            None => None,
        };
        let claims = auth.0.policy_claims();
        let empty = Value::Object(Default::default());
        authorize(
            &set,
            kind.as_str(),
            claims,
            Action::List,
            Target::new(kind.as_str(), None, None, &empty),
            req,
        )?;
        let mut items = Vec::new();
        let mut scanned = 0;
        let next = loop {
            let batch = state.store.list_docs(&kind, cursor.as_ref(), limit).await?;
            let exhausted = batch.len() < limit;
            for mut doc in batch {
                scanned += 1;
                cursor = Some(doc.id.clone());
                let data = Value::Object(std::mem::take(&mut doc.data));
                let target = Target::new(kind.as_str(), Some(doc.id.as_str()), Some(doc.owner.as_str()), &data);
                let allowed = authorize(&set, kind.as_str(), claims, Action::Read, target, req).is_ok();
                if allowed {
                    doc.data = into_object(data);
                    items.push(doc);
                    if items.len() == limit {
                        break;
                    }
                }
            }
            if items.len() == limit || scanned >= MAX_SCAN {
                break if exhausted && items.len() < limit {
                    None
                } else {
                    cursor.map(|c| c.to_string())
                };
            }
            if exhausted {
                break None;
            }
        };
        EncodedJson::encode(&EncodedPage { items: &items, next })
    }

    /// Read a document
    #[oai(path = "/resources/:kind/:id", method = "get", operation_id = "get_document")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Resource kind.
        kind: Path<String>,
        /// Document id.
        id: Path<String>,
    ) -> Result<EncodedJson<DocumentView>, ApiError> {
        let set = state.policies.snapshot();
        let kind = known_kind(&set, &kind)?;
        let id = doc_id(&id)?;
        let mut doc = state
            .store
            .get_doc(&kind, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such document"))?;
        let claims = auth.0.policy_claims();
        let data = Value::Object(std::mem::take(&mut doc.data));
        authorize(
            &set,
            kind.as_str(),
            claims,
            Action::Read,
            Target::new(kind.as_str(), Some(id.as_str()), Some(doc.owner.as_str()), &data),
            req,
        )?;
        doc.data = into_object(data);
        EncodedJson::encode(&doc)
    }

    /// Replace a document's data
    ///
    /// Decided with `action == "update"`, `resource.data` = the new body and `resource.old` =
    /// the stored data. 409 when the document changed while the request was being decided.
    #[oai(path = "/resources/:kind/:id", method = "put", operation_id = "replace_document")]
    async fn replace(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Resource kind.
        kind: Path<String>,
        /// Document id.
        id: Path<String>,
        body: Json<BTreeMap<String, Value>>,
    ) -> Result<Json<DocumentView>, ApiError> {
        let set = state.policies.snapshot();
        let kind = known_kind(&set, &kind)?;
        let id = doc_id(&id)?;
        let old = state
            .store
            .get_doc(&kind, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such document"))?;
        let claims = auth.0.policy_claims();
        let data = object(&body);
        let old_data = Value::Object(old.data.clone());
        let mut target = Target::new(kind.as_str(), Some(id.as_str()), Some(old.owner.as_str()), &data);
        target.old = Some(&old_data);
        authorize(&set, kind.as_str(), claims, Action::Update, target, req)?;
        let new = Document {
            data: body.0.into_iter().collect(),
            updated_at: now_rfc3339(),
            ..old.clone()
        };
        state.store.update_doc(&old, &new).await?;
        Ok(Json(new.into()))
    }

    /// Delete a document
    #[oai(path = "/resources/:kind/:id", method = "delete", operation_id = "delete_document")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: BearerAuth,
        /// Resource kind.
        kind: Path<String>,
        /// Document id.
        id: Path<String>,
    ) -> Result<DeletedDocument, ApiError> {
        let set = state.policies.snapshot();
        let kind = known_kind(&set, &kind)?;
        let id = doc_id(&id)?;
        let doc = state
            .store
            .get_doc(&kind, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such document"))?;
        let claims = auth.0.policy_claims();
        let data = Value::Object(doc.data.clone());
        authorize(
            &set,
            kind.as_str(),
            claims,
            Action::Delete,
            Target::new(kind.as_str(), Some(id.as_str()), Some(doc.owner.as_str()), &data),
            req,
        )?;
        if !state.store.delete_doc(&doc).await? {
            return Err(ApiError::not_found("no such document"));
        }
        Ok(DeletedDocument::Deleted)
    }
}
