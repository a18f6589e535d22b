//! Request ids and request logs (DESIGN §7). Every request has an id: the caller's
//! `X-Request-Id`, or one the server makes up (`req_…`). The response carries it back, the
//! events the request appends record it (through its actor), and its log line names it, so
//! an agent quoting the id of a failed call leads an operator to the server's account of it.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::Code;
use std::time::Instant;

/// The header a request's id travels in, both ways.
pub const HEADER: &str = "x-request-id";

/// Longest request id a caller may give, in bytes.
pub const MAX_LEN: usize = 200;

/// What an error response refused, left in its extensions for the request's log line.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) message: String,
}

/// The request's id, once [`identify`] has seen it.
pub(crate) fn id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Gives the request its id (the caller's, if it gave a usable one), answers with it, and
/// logs the request: at `debug` every one, at `error` those the server failed (5xx). A
/// malformed id is refused (`INVALID_INPUT`), not replaced: a caller that sends one means
/// to find its call by it. A caller without a valid key hears that first, as everywhere
/// (but on the routes that need none).
pub async fn identify(
    State(state): State<crate::AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let (id, response) = match given(request.headers()) {
        Ok(Some(id)) => (id, None),
        Ok(None) => {
            let id = baton_core::id::new_id("req");
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert(HEADER, value);
            }
            (id, None)
        }
        Err(refused) => {
            let public = crate::PUBLIC.contains(&request.uri().path());
            let refused = match state.principal(request.headers()) {
                Err(unauthorized) if !public => unauthorized,
                _ => crate::ApiError(refused),
            };
            (baton_core::id::new_id("req"), Some(refused.into_response()))
        }
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let mut response = match response {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    log(&id, &method, &path, &response, started);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The caller's request id, if it gave one: printable ASCII without spaces, at most
/// [`MAX_LEN`] bytes, given once.
fn given(headers: &HeaderMap) -> Result<Option<String>, baton_core::Error> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let hint = format!(
        "send one X-Request-Id of printable ASCII without spaces, at most {MAX_LEN} bytes \
         (e.g. a UUID), or none and the server makes one up"
    );
    if values.next().is_some() {
        return Err(baton_core::Error::invalid(
            "the X-Request-Id header is given more than once",
            hint,
        ));
    }
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_LEN || !printable {
        return Err(baton_core::Error::invalid(
            "the X-Request-Id header is empty, too long or not printable ASCII",
            hint,
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// One line for a request answered. The task it concerned, when its path names one, is a
/// field of its own (DESIGN §7: logs carry `task_id`), as is the refusal's code.
fn log(id: &str, method: &Method, path: &str, response: &Response, started: Instant) {
    let status = response.status().as_u16();
    let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let task_id = task_of(path);
    let refusal = response.extensions().get::<Refusal>();
    let code = refusal.map(|r| r.code.as_str());
    let error = refusal.map(|r| r.message.as_str());
    if status >= 500 {
        tracing::error!(
            request_id = id, %method, path, status, ms, task_id, code, error,
            "request failed"
        );
    } else {
        tracing::debug!(request_id = id, %method, path, status, ms, task_id, code, "request");
    }
}

/// The task id in a path under `/v1/tasks/`, if there is one.
fn task_of(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v1/tasks/")?.split('/').next()?;
    id.starts_with("tsk_").then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_path_names_its_task() {
        assert_eq!(task_of("/v1/tasks/tsk_01ABC/claim"), Some("tsk_01ABC"));
        assert_eq!(task_of("/v1/tasks/tsk_01ABC"), Some("tsk_01ABC"));
        assert_eq!(task_of("/v1/tasks/claim"), None);
        assert_eq!(task_of("/v1/agents/a"), None);
    }

    #[test]
    fn a_given_id_is_kept_or_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(given(&headers).unwrap(), None);
        headers.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(given(&headers).unwrap().as_deref(), Some("abc-123"));
        headers.insert(HEADER, HeaderValue::from_static("two words"));
        assert_eq!(given(&headers).unwrap_err().code, Code::InvalidInput);
        headers.insert(
            HEADER,
            HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap(),
        );
        assert_eq!(given(&headers).unwrap_err().code, Code::InvalidInput);
        headers.insert(HEADER, HeaderValue::from_static("a"));
        headers.append(HEADER, HeaderValue::from_static("b"));
        assert_eq!(given(&headers).unwrap_err().code, Code::InvalidInput);
    }
}
