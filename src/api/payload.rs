//! Payloads of our own: [`EncodedJson`], a JSON answer encoded with serde in one pass, declared
//! in the spec with the schema of a poem-openapi type; and [`TextBody`], a UTF-8 text request
//! body that SDK generators can send.
//!
//! poem-openapi's `Json<T>` turns `T` into a `serde_json::Value` tree and then encodes the tree;
//! on the hot path (a guarded document read) encoding the stored record directly is half the
//! work. A unit test of each use checks that the encoded JSON is exactly what `T` would give.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
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

/// A request body of UTF-8 text (`text/plain`, any `charset` parameter), declared in the spec as
/// `text/plain` with `{type: string, format: binary}`: the raw bytes of the body, which every
/// client generator can send (openapi-python-client cannot send a `text/plain` string, but
/// sends bytes with the media type given; TypeScript clients take a string). The body must be
/// valid UTF-8 (400 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBody(pub String);

impl Payload for TextBody {
    const CONTENT_TYPE: &'static str = "text/plain";

    fn check_content_type(content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("text/plain")
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    }
}

impl ParsePayload for TextBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &poem::Request, body: &mut poem::RequestBody) -> poem::Result<Self> {
        let bytes = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        String::from_utf8(bytes)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("the body must be UTF-8 text: {e}")).into())
    }
}

// What poem-openapi's `impl_apirequest_for_payload!` writes (the macro cannot be called from
// another crate: it recurses without `$crate`).
impl<'a> poem_openapi::ApiExtractor<'a> for TextBody {
    const TYPES: &'static [poem_openapi::ApiExtractorType] = &[poem_openapi::ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: Self::CONTENT_TYPE,
                schema: Self::schema_ref(),
            }],
            required: Self::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a poem::Request,
        body: &mut poem::RequestBody,
        _param_opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(ct) if Self::check_content_type(ct) => <Self as ParsePayload>::from_request(request, body).await,
            Some(ct) => Err(poem_openapi::error::ContentTypeError::NotSupported {
                content_type: ct.to_string(),
            }
            .into()),
            None => Err(poem_openapi::error::ContentTypeError::ExpectContentType.into()),
        }
    }
}
