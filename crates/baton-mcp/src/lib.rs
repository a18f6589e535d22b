//! Baton as MCP tools (DESIGN §6): `baton mcp` over stdio, and `/mcp` (streamable HTTP) on
//! `baton serve`. Every tool call becomes requests to the HTTP API's own router — in-process
//! on the embedded store and under `baton serve`, over the network when proxying — so the
//! tools answer with the same shapes, rules, roles and errors as HTTP and the CLI.

mod envelope;
mod gateway;
mod query;
mod server;
mod tools;

pub use gateway::Gateway;
pub use server::BatonMcp;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::access::Principal;
use baton_core::model::ApiKey;
use baton_core::{Baton, Code, Error};
use baton_server::{ApiError, AppState};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use std::sync::Arc;

/// Serves MCP on stdin/stdout until the client closes it.
///
/// Lines pass through [`gate`] first: rmcp drops a line that is not JSON (or too long)
/// without a word, so a client waiting for the answer to it would wait for ever; the gate
/// answers such a line itself with a JSON-RPC parse error. Both writers' lines go out
/// through one task, whole.
pub async fn serve_stdio(mcp: BatonMcp) -> Result<(), String> {
    let (to_rmcp, rmcp_in) = tokio::io::duplex(64 * 1024);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(64 * 1024);
    let (refusals, refused) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(gate(tokio::io::stdin(), to_rmcp, refusals));
    let output = tokio::spawn(emit(from_rmcp, refused, tokio::io::stdout()));
    let stopped = match mcp.serve((rmcp_in, rmcp_out)).await {
        Ok(running) => running
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| format!("MCP server stopped: {e}")),
        Err(e) => Err(format!("MCP start-up failed: {e}")),
    };
    // rmcp's end of the output is closed with the service: what it wrote still goes out.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), output).await;
    stopped
}

/// Longest line read from stdin (one JSON-RPC message), as rmcp's own limit.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Forwards each line of `input` that is one JSON-RPC message to rmcp; answers any other
/// (not JSON, two values, not UTF-8, nested too deep, over [`MAX_LINE`]) with a parse error,
/// and one whose envelope rmcp cannot read with [`envelope::refusal`] (its id kept).
async fn gate(
    input: impl tokio::io::AsyncRead + Unpin,
    mut to_rmcp: impl tokio::io::AsyncWrite + Unpin,
    refusals: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let mut input = tokio::io::BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        // One byte past the limit tells an overlong line from one exactly at it.
        let read = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") && line.len() > MAX_LINE {
            // Skip the rest of the line, then say why it went unanswered.
            let mut rest = Vec::new();
            while !rest.ends_with(b"\n") {
                rest.clear();
                match (&mut input)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)
                    .await
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let _ = refusals.send(parse_error(&format!("a message over {MAX_LINE} bytes")));
            continue;
        }
        let message = line.strip_suffix(b"\n").unwrap_or(&line);
        let message = message.strip_suffix(b"\r").unwrap_or(message);
        if message.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(message) {
            Ok(value) => {
                if let Some(answer) = envelope::refusal(&value) {
                    let _ = refusals.send(answer.to_string());
                } else if to_rmcp.write_all(message).await.is_err()
                    || to_rmcp.write_all(b"\n").await.is_err()
                {
                    break;
                }
            }
            Err(e) => {
                let _ = refusals.send(parse_error(&e.to_string()));
            }
        }
    }
    let _ = to_rmcp.shutdown().await;
}

/// A JSON-RPC parse error (-32700) without an id, as JSON 2.0 asks when none can be read.
fn parse_error(why: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32700,
            "message": format!("Parse error: {why}"),
            "data": {"hint": "send one JSON-RPC 2.0 message per line, as UTF-8 JSON"},
        },
    })
    .to_string()
}

/// Writes rmcp's lines and the gate's refusals to `output`, each line whole, until rmcp's
/// side closes.
async fn emit(
    from_rmcp: impl tokio::io::AsyncRead + Unpin,
    mut refused: tokio::sync::mpsc::UnboundedReceiver<String>,
    mut output: impl tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut from_rmcp = tokio::io::BufReader::new(from_rmcp);
    // rmcp's line so far: `read_until` keeps what it read when the other branch wins, and
    // is called again to finish the line.
    let mut pending = Vec::new();
    loop {
        let line = tokio::select! {
            read = from_rmcp.read_until(b'\n', &mut pending) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => std::mem::take(&mut pending),
            },
            Some(refusal) = refused.recv() => format!("{refusal}\n").into_bytes(),
        };
        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let _ = output.write_all(&pending).await;
    }
    // The gate sent its last refusals before it closed rmcp's input, so before rmcp's
    // output closed: they are all here.
    while let Ok(refusal) = refused.try_recv() {
        let _ = output.write_all(format!("{refusal}\n").as_bytes()).await;
    }
    let _ = output.flush().await;
}

/// The gateway of a stdio server on the embedded store: the router in-process, acting for
/// the local user of the store (as the CLI does) in `workspace`, under the agent's name when
/// the server was given one (so its notes and tasks are recorded as that agent's, as its
/// claims are), else as `mcp`.
pub async fn local_gateway(
    baton: Baton,
    workspace: &str,
    agent: Option<&str>,
) -> baton_core::Result<Gateway> {
    let actor = baton.actor(workspace, agent.unwrap_or("mcp")).await?;
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

/// Checks a server's gateway before the first tool call: a key the server refuses, or one
/// bound to another agent than `agent`, stops `baton mcp` at start, where its operator
/// sees why, rather than at the agent's first call (or, for the agent, never). A server
/// that cannot be reached yet is not an error here: the calls say `UNAVAILABLE` until it is.
pub async fn check_gateway(gateway: &Gateway, agent: Option<&str>) -> Result<(), Error> {
    let whoami = gateway.call(Method::GET, "/v1/whoami", None, Default::default());
    let me = match whoami.await {
        Ok(answer) => gateway::ok(answer)?,
        Err(e) if e.code == Code::Unavailable => return Ok(()),
        Err(e) => return Err(e),
    };
    match (me["agent"].as_str(), agent) {
        (Some(bound), Some(agent)) if bound != agent => Err(Error::new(
            Code::Forbidden,
            format!("this key acts as agent {bound}, not {agent}"),
            format!("pass --agent {bound}, or leave --agent out, or use {agent}'s own key"),
        )),
        _ => Ok(()),
    }
}

/// `/mcp` for `baton serve`: streamable HTTP, each session a [`BatonMcp`] that forwards the
/// caller's own bearer key to the API, so keys, roles and workspaces apply unchanged. Call
/// within a Tokio runtime: the sessions end when [`Baton::close`] is called.
pub fn http_service(baton: Baton) -> axum::Router {
    let state = AppState::new(baton.clone());
    let api = baton_server::router(state.clone());
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    // Sessions' streams end when the server begins to shut down, as the API's do.
    let sessions = config.cancellation_token.clone();
    let closing = baton.clone();
    tokio::spawn(async move {
        closing.closing().await;
        // Tool calls in flight answer at once on close (a waiting claim with no claims):
        // give them a moment to be written before their sessions go.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sessions.cancel();
    });
    let manager = Arc::new(LocalSessionManager::default());
    let service = StreamableHttpService::new(
        move || Ok(BatonMcp::new(Gateway::Local(api.clone()), None)),
        manager.clone(),
        config,
    );
    let keyed_state = Keyed {
        api: state,
        sessions: Arc::new(Sessions {
            manager,
            owners: std::sync::Mutex::new(std::collections::HashMap::new()),
        }),
    };
    let api_state = keyed_state.api.clone();
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::map_response(json_rpc_refusals))
        .layer(axum::middleware::from_fn(envelopes))
        .layer(axum::middleware::from_fn_with_state(keyed_state, keyed))
        // Outermost, as on the API: the request's id, answered and logged.
        .layer(axum::middleware::from_fn_with_state(
            api_state,
            baton_server::request::identify,
        ))
}

/// What the key check of `/mcp` needs: the API's state, to authenticate, and the sessions,
/// each bound to the key that opened it.
#[derive(Clone)]
struct Keyed {
    api: AppState,
    sessions: Arc<Sessions>,
}

/// The open sessions and, by session id, the id of the key that opened each: a session's
/// leases and agent are that key's, so no other key may use it (or end it), whatever it
/// knows of the session's id.
struct Sessions {
    manager: Arc<LocalSessionManager>,
    owners: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

const SESSION_HEADER: &str = "mcp-session-id";

/// Every `/mcp` request needs a valid key, as every API route does: without one it is
/// refused at once (401), before a session is made or a tool is listed. A request in a
/// session must come with the key that opened it: another key, or a session no longer
/// open (a `DELETE` too, where the transport says 202), is answered 404 as an unknown
/// session. And a body sent as JSON that does not parse is 400, where the transport says
/// 415.
async fn keyed(State(state): State<Keyed>, request: Request, next: Next) -> Response {
    let key = match state.api.authenticate(request.headers()) {
        Ok(principal) => principal.key.id,
        Err(ApiError(e)) => {
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return json_rpc_error(status, -32600, &e.message, &e.hint);
        }
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let deleting = request.method() == axum::http::Method::DELETE;
    if let Some(id) = &session {
        let owner = state.sessions.owner(id);
        if owner.as_ref().is_some_and(|o| *o != key) || (owner.is_none() && deleting) {
            return json_rpc_error(
                StatusCode::NOT_FOUND,
                -32600,
                "Session not found",
                "send initialize for a new session, then its Mcp-Session-Id header with every \
                 request, with the same key",
            );
        }
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
    match (&session, response.headers().get(SESSION_HEADER)) {
        (None, Some(opened)) => {
            if let Ok(opened) = opened.to_str() {
                state.sessions.bind(opened, key).await;
            }
        }
        (Some(id), _) if deleting && response.status().is_success() => state.sessions.end(id),
        _ => {}
    }
    response
}

impl Sessions {
    /// The key that opened session `id`, if it is known.
    fn owner(&self, id: &str) -> Option<String> {
        self.owners.lock().ok()?.get(id).cloned()
    }

    /// Binds a new session to `key`, and forgets the sessions the transport has since
    /// closed (idle, or their client gone), so the map is as large as the open sessions.
    async fn bind(&self, id: &str, key: String) {
        let open: std::collections::HashSet<String> = self
            .manager
            .sessions
            .read()
            .await
            .keys()
            .map(|s| s.to_string())
            .collect();
        if let Ok(mut owners) = self.owners.lock() {
            owners.retain(|s, _| open.contains(s));
            owners.insert(id.to_string(), key);
        }
    }

    /// Forgets a session its client ended.
    fn end(&self, id: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.remove(id);
        }
    }
}

/// A POSTed message whose envelope rmcp cannot read is refused here with its id kept
/// ([`envelope::refusal`]), 400, where rmcp would answer without it; any other body goes on
/// unchanged (one that is not JSON too: the transport's refusal says so).
async fn envelopes(request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LINE).await else {
        return json_rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("a message over {MAX_LINE} bytes, or a body that was cut off"),
            "send one JSON-RPC message per request, whole",
        );
    };
    if let Ok(message) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if let Some(answer) = envelope::refusal(&message) {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                answer.to_string(),
            )
                .into_response();
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
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
            "send initialize first, then its Mcp-Session-Id header with every request; a \
             session lives on the replica that opened it, so route /mcp by that header",
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
