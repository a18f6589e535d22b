//! The HTTP face of the error catalogue: one status per code, one JSON body shape, and a
//! JSON extractor whose failures are structured errors too (axum's own rejections are
//! plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{Code, Error};
use serde::de::DeserializeOwned;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// An operation error as an HTTP response: `{"error": {...}}` with the code's status.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.to_json())).into_response();
        // A refusal that says when to come back says it in the header HTTP clients know too.
        let retry_after_ms = self
            .0
            .details
            .as_ref()
            .and_then(|d| d["retry_after_ms"].as_u64());
        if let Some(ms) = retry_after_ms.filter(|_| self.0.code == Code::RateLimited) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
        }
        response
    }
}

/// A JSON request body, read within [`MAX_BODY`] and parsed with serde; malformed JSON,
/// unknown fields and wrong types are `INVALID_INPUT` (400), an oversized body `TOO_LARGE`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError(Error::new(
                Code::TooLarge,
                format!("request body over {MAX_BODY} bytes"),
                "send less per call",
            ))
        })?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            ApiError(Error::invalid(
                format!("invalid request body: {e}"),
                "send a JSON object with the documented fields",
            ))
        })
    }
}
