//! [`EncodedJson`]: a JSON answer encoded with serde in one pass, declared in the spec with the
//! schema of a poem-openapi type.
//!
//! poem-openapi's `Json<T>` turns `T` into a `serde_json::Value` tree and then encodes the tree;
//! on the hot path (a guarded document read) encoding the stored record directly is half the
//! work. A unit test of each use checks that the encoded JSON is exactly what `T` would give.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
    ApiResponse,
};
use serde::Serialize;

use super::problem::ApiError;

/// An `application/json` answer whose body is already encoded; its spec schema is `T`'s.
pub struct EncodedJson<T> {
    body: Vec<u8>,
    schema: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for EncodedJson<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedJson").field("bytes", &self.body.len()).finish()
    }
}

impl<T: Type> EncodedJson<T> {
    /// Encodes `value`, which must serialize as `T` does.
    pub fn encode(value: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
        Ok(Self {
            body,
            schema: PhantomData,
        })
    }
}

impl<T: Type> Payload for EncodedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> IntoResponse for EncodedJson<T> {
    fn into_response(self) -> Response {
        Response::builder().content_type(Self::CONTENT_TYPE).body(self.body)
    }
}

impl<T: Type> ApiResponse for EncodedJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
