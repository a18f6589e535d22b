//! Where tool calls go: the HTTP API's router, in-process (the embedded store, or `/mcp` on
//! `baton serve`), or a Baton server over the network. Either way a tool call is an HTTP
//! request to the same routes, so MCP answers with exactly the HTTP API's shapes, rules,
//! roles and errors.

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use baton_core::{Code, Error};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

/// A route's answer: the status and the JSON body.
pub(crate) type Answer = (u16, Value);

/// What a tool call carries to every request it makes: the caller's key (forwarded from an
/// MCP HTTP client) and the idempotency key the agent gave the call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Via<'a> {
    /// `Authorization` to send instead of the gateway's own.
    pub bearer: Option<&'a str>,
    /// The agent's key for the whole tool call.
    pub idempotency_key: Option<&'a str>,
    /// How many writes the call has sent so far.
    pub writes: Option<&'a AtomicU32>,
    /// The tool call's request id, sent as `X-Request-Id` with each of its requests so the
    /// events they append, and their log lines, name the call.
    pub request_id: Option<&'a str>,
}

impl Via<'_> {
    /// The `Idempotency-Key` of the call's next write: the agent's key itself for the
    /// first (so the same key on another call is refused as the API refuses it), then
    /// `KEY/2`, `KEY/3`… for any more, in the order the call makes them, which a repeat of
    /// the call makes again. Reads carry none.
    fn key_for(&self, method: &Method) -> Option<String> {
        let key = self.idempotency_key?;
        if *method == Method::GET {
            return None;
        }
        let n = self.writes.map_or(0, |w| w.fetch_add(1, Ordering::Relaxed)) + 1;
        Some(match n {
            1 => key.to_string(),
            n => format!("{key}/{n}"),
        })
    }
}

/// The way to the API.
#[derive(Clone, Debug)]
pub enum Gateway {
    /// The router, called in-process (no socket, no serialization beyond the JSON bodies).
    Local(Router),
    /// A Baton server.
    Remote {
        /// HTTP client.
        http: reqwest::Client,
        /// Base URL, e.g. `http://127.0.0.1:7300`.
        base: String,
        /// The API key.
        token: String,
    },
}

impl Gateway {
    /// Sends one request; `via.bearer` (a key forwarded from an MCP HTTP client) overrides
    /// the gateway's own.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        via: Via<'_>,
    ) -> Result<Answer, Error> {
        let bearer = via.bearer;
        let idempotency_key = via.key_for(&method);
        match self {
            Gateway::Local(router) => {
                let mut req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("content-type", "application/json");
                if let Some(b) = bearer {
                    req = req.header("authorization", b);
                }
                if let Some(k) = &idempotency_key {
                    req = req.header("idempotency-key", k);
                }
                if let Some(id) = via.request_id {
                    req = req.header(baton_server::request::HEADER, id);
                }
                let body = body.map(|b| b.to_string()).unwrap_or_default();
                // The arguments make the path: one that http cannot carry (over ~64 KB) is
                // the caller's input, not a fault of the server.
                let req = req.body(Body::from(body)).map_err(|e| {
                    Error::new(
                        Code::TooLarge,
                        format!("the call's ids and filters make no valid request: {e}"),
                        "send shorter ids and filters",
                    )
                })?;
                let res = router.clone().oneshot(req).await.map_err(internal)?;
                let status = res.status().as_u16();
                let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                    .await
                    .map_err(internal)?;
                Ok((status, answer(status, &bytes)?))
            }
            Gateway::Remote { http, base, token } => {
                let mut req = http.request(method, format!("{base}{path}"));
                req = req.header(
                    "authorization",
                    bearer.map_or_else(|| format!("Bearer {token}"), str::to_string),
                );
                if let Some(k) = &idempotency_key {
                    req = req.header("idempotency-key", k);
                }
                if let Some(id) = via.request_id {
                    req = req.header(baton_server::request::HEADER, id);
                }
                if let Some(body) = body {
                    req = req.json(&body);
                }
                let res = req.send().await.map_err(|e| {
                    Error::new(
                        Code::Unavailable,
                        format!("cannot reach the Baton server at {base}: {e}"),
                        "check that `baton serve` runs there, then retry",
                    )
                })?;
                let status = res.status().as_u16();
                let bytes = res.bytes().await.map_err(internal)?;
                Ok((status, answer(status, &bytes)?))
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(Code::Internal, e.to_string(), "retry the call")
}

/// Turns an answer into its body, or the error it carries.
pub(crate) fn ok((status, body): Answer) -> Result<Value, Error> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(Error::from_json(&body).unwrap_or_else(|| {
        // Answered by the HTTP layer before Baton (hyper refuses an overlong URL or
        // header with a bare status): the caller's input when it is a 4xx.
        let (code, hint) = match status {
            413 | 414 | 431 => (Code::TooLarge, "send shorter ids, filters and bodies"),
            400..=499 => (Code::InvalidInput, "check the call's arguments"),
            _ => (Code::Internal, "retry the call"),
        };
        Error::new(code, format!("HTTP {status} without an error body"), hint)
    }))
}

/// An answer's body as JSON. A success that is not JSON is an error, rather than a silent
/// `null` a tool would pass on as its result; a refusal that is not JSON is `null`, for
/// [`ok`] to tell by its status. Read without serde's nesting limit (bounded), as the store
/// reads rows: a value stored before values' depth was checked may nest deeper in an answer.
fn answer(status: u16, bytes: &[u8]) -> Result<Value, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let read = std::str::from_utf8(bytes)
        .map_err(|e| e.to_string())
        .and_then(|text| baton_core::store::from_stored_json(text).map_err(|e| e.to_string()));
    match read {
        Ok(value) => Ok(value),
        Err(_) if !(200..300).contains(&status) => Ok(Value::Null),
        Err(e) => Err(internal(format!("an answer that is not JSON: {e}"))),
    }
}
