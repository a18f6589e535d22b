//! The HTTP face of the error catalogue: one status per code, one JSON body shape, and a
//! JSON extractor whose failures are structured errors too (axum's own rejections are
//! plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{Code, Error};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a request body may take to arrive once its headers have, at the least: a client
/// that declares more than it sends is answered, and its connection let go, instead of
/// held. Longer bodies get [`BODY_PACE`] more.
pub(crate) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes per extra second a body may take: a slow link (64 KiB/s) still sends the largest
/// body accepted, in ~74 s.
const BODY_PACE: u64 = 64 * 1024;

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
        // For the request's log line (`request::identify`): what was refused, and why.
        response.extensions_mut().insert(crate::request::Refusal {
            code: self.0.code,
            message: self.0.message.clone(),
        });
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

/// A JSON request body, read within [`MAX_BODY`] and parsed with serde by [`JsonBody::parse`];
/// malformed JSON, a body that is not an object, unknown fields and wrong types are
/// `INVALID_INPUT` (400), an oversized body `TOO_LARGE`. Parsing is the handler's to call
/// once it has checked the caller's key and role: a caller without a key hears 401, and
/// one whose role may not call the route 403, whatever the body.
#[derive(Debug)]
pub struct JsonBody<T> {
    bytes: Result<Bytes, ApiError>,
    wanted: PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    /// The body as text, for a route that also reads another format than JSON.
    pub fn text(self) -> Result<String, ApiError> {
        let bytes = self.bytes?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError(Error::invalid(
                "the request body is not UTF-8 text",
                "send the document as UTF-8",
            ))
        })
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// The body as `T`, or the structured error for what is wrong with it.
    pub fn parse(self) -> Result<T, ApiError> {
        let bytes = self.bytes?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        // serde reads a JSON array into a struct field by field; a body is always an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError(Error::invalid(
                "the request body is not a JSON object",
                "send a JSON object with the documented fields",
            )));
        }
        let refuse = |(code, fault): (Code, String)| {
            ApiError(Error::new(
                code,
                format!("invalid request body: {fault}"),
                "send a JSON object with the documented fields",
            ))
        };
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let value =
            serde_path_to_error::deserialize(&mut reader).map_err(|e| refuse(body_fault(&e)))?;
        // Whatever follows the object (a second value, stray text) is refused too.
        reader
            .end()
            .map_err(|e| refuse((Code::InvalidInput, e.to_string())))?;
        Ok(value)
    }
}

/// What is wrong with a body, said so that any caller can act on it. Malformed JSON keeps
/// serde's line and column (the caller wrote that text); a well-formed body with a field of
/// the wrong type or name names the field by its path (`tasks[2].priority`) instead: an MCP
/// tool's or the CLI's caller never saw the JSON the line and column would point into. A
/// bad duration is `INVALID_DURATION`, wherever it is given.
fn body_fault(e: &serde_path_to_error::Error<serde_json::Error>) -> (Code, String) {
    let inner = e.inner();
    if !inner.is_data() {
        return (Code::InvalidInput, inner.to_string());
    }
    let text = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let what = text.strip_suffix(&position).unwrap_or(&text);
    let code = match baton_core::time::is_duration_fault(what) {
        true => Code::InvalidDuration,
        false => Code::InvalidInput,
    };
    match e.path().to_string().as_str() {
        "." => (code, what.to_string()),
        path => (code, format!("{path}: {what}")),
    }
}

impl<S: Send + Sync, T> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError(Error::new(
                Code::TooLarge,
                format!("request body over {MAX_BODY} bytes"),
                "send less per call",
            ))
        };
        // A declared length over the limit is refused before any of the body is awaited.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = if declared.is_some_and(|n| n > MAX_BODY as u64) {
            Err(too_large())
        } else {
            // Chunked (no declared length): as long as the largest body would have.
            let length = declared.unwrap_or(MAX_BODY as u64);
            let allowed = BODY_TIMEOUT + std::time::Duration::from_secs(length / BODY_PACE);
            match tokio::time::timeout(allowed, Bytes::from_request(req, state)).await {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
                Ok(Err(e)) => Err(ApiError(Error::invalid(
                    format!("the request body could not be read: {}", e.body_text()),
                    "send the body as plain or well-formed chunked HTTP/1.1",
                ))),
                Err(_) => Err(ApiError(Error::invalid(
                    format!(
                        "the request body did not arrive within {} s",
                        allowed.as_secs()
                    ),
                    "send the whole body, as long as its Content-Length says, at 64 KiB/s or faster",
                ))),
            }
        };
        Ok(JsonBody {
            bytes,
            wanted: PhantomData,
        })
    }
}

/// Path parameters, as axum's `Path`, whose failures (an id that is not UTF-8 once
/// percent-decoded, say) are structured `INVALID_INPUT` errors instead of plain text.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(ApiError(Error::invalid(
                format!("invalid path: {}", e.body_text()),
                "send ids as they were given, percent-encoded UTF-8",
            ))),
        }
    }
}

/// For a route that takes no query parameters: a query string is `INVALID_INPUT`, as a
/// parameter a route does not know is on the routes that take some, rather than ignored
/// (`limit=5` on a list that has no pages would look obeyed).
#[derive(Debug)]
pub struct NoQuery;

impl FromRequestParts<crate::AppState> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        match parts.uri.query() {
            // A caller without a valid key hears that first, as on every route.
            Some(query) if !query.is_empty() => Err(match state.authenticate(&parts.headers) {
                Err(unauthorized) => unauthorized,
                Ok(_) => ApiError(Error::invalid(
                    "this route takes no query parameters",
                    "leave the query string out; /openapi.json lists each route's parameters",
                )),
            }),
            _ => Ok(NoQuery),
        }
    }
}
