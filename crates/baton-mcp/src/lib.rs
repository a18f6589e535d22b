//! Baton as MCP tools (DESIGN §6): `baton mcp` over stdio, and `/mcp` (streamable HTTP) on
//! `baton serve`. Every tool call becomes requests to the HTTP API's own router — in-process
//! on the embedded store and under `baton serve`, over the network when proxying — so the
//! tools answer with the same shapes, rules, roles and errors as HTTP and the CLI.

mod gateway;
mod query;
mod server;
mod tools;

pub use gateway::Gateway;
pub use server::BatonMcp;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::access::Principal;
use baton_core::model::ApiKey;
use baton_core::Baton;
use baton_server::{ApiError, AppState};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use std::sync::Arc;

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(mcp: BatonMcp) -> Result<(), String> {
    let running = mcp
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP start-up failed: {e}"))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| format!("MCP server stopped: {e}"))
}

/// The gateway of a stdio server on the embedded store: the router in-process, acting for
/// the local user of the store (as the CLI does) in `workspace`.
pub async fn local_gateway(baton: Baton, workspace: &str) -> baton_core::Result<Gateway> {
    let actor = baton.actor(workspace, "mcp").await?;
    let key = ApiKey {
        id: "local".into(),
        workspace_id: actor.workspace_id.clone(),
        role: "admin".into(),
        agent: None,
        token_sha256: String::new(),
        created_at: 0,
    };
    let state = AppState {
        local: Some(Principal { actor, key }),
        ..AppState::new(baton)
    };
    Ok(Gateway::Local(baton_server::router(state)))
}

/// `/mcp` for `baton serve`: streamable HTTP, each session a [`BatonMcp`] that forwards the
/// caller's own bearer key to the API, so keys, roles and workspaces apply unchanged.
pub fn http_service(baton: Baton) -> axum::Router {
    let state = AppState::new(baton);
    let api = baton_server::router(state.clone());
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(BatonMcp::new(Gateway::Local(api.clone()), None)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::map_response(json_rpc_refusals))
        .layer(axum::middleware::from_fn_with_state(state, keyed))
}

/// Every `/mcp` request needs a valid key, as every API route does: without one it is
/// refused at once (401), before a session is made or a tool is listed. And a body sent as
/// JSON that does not parse is 400, where the transport says 415.
async fn keyed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(ApiError(e)) = state.authenticate(request.headers()) {
        let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return json_rpc_error(status, -32600, &e.message, &e.hint);
    }
    let sent_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut response = next.run(request).await;
    if sent_json && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

/// A JSON-RPC error without an id, as the streamable HTTP transport allows, with `status`.
fn json_rpc_error(status: StatusCode, code: i64, message: &str, hint: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message, "data": {"hint": hint}},
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// rmcp's transport refuses some requests in plain text (a body that is not JSON-RPC, no
/// session, an `Accept` header without both JSON and SSE), where an MCP client reads
/// JSON-RPC. Such a refusal becomes a JSON-RPC error without an id, as the streamable HTTP
/// transport allows, with the HTTP status kept, the transport's text as the message, and a
/// hint on what to send instead.
async fn json_rpc_refusals(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let (code, hint) = match status.as_u16() {
        415 => (
            -32700,
            "send one JSON-RPC 2.0 message as JSON, with Content-Type: application/json",
        ),
        406 => (-32600, "send Accept: application/json, text/event-stream"),
        _ if message.contains("Session") || message.contains("session") => (
            -32600,
            "send initialize first, then its Mcp-Session-Id header with every request",
        ),
        _ => (
            -32600,
            "check the request against the MCP streamable HTTP transport",
        ),
    };
    let mut refusal = json_rpc_error(status, code, &message, hint);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    refusal.headers_mut().extend(parts.headers);
    refusal
}

/// The byte size of the `tools/list` result as JSON (the budget every agent pays).
pub fn tools_list_bytes() -> usize {
    serde_json::to_string(&rmcp::model::ListToolsResult::with_all_items(
        BatonMcp::tools(),
    ))
    .map(|s| s.len())
    .unwrap_or(0)
}
