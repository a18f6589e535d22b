//! Baton's HTTP API (`/v1`): every route parses its input, calls one [`Baton`] operation and
//! returns its typed response, the same shapes the CLI prints with `--json`. No rules live
//! here.
//!
//! Not yet here (see the HTTP issue): API keys and roles (requests act in the default
//! workspace as the actor named by `X-Baton-Actor`), WebSocket, OpenAPI, batch creation.

mod error;
mod stream;
mod tasks;

pub use error::{ApiError, JsonBody, MAX_BODY};

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use baton_core::api::Actor;
use baton_core::Baton;
use std::sync::Arc;

/// What every handler gets: the engine and the workspace requests act in.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine.
    pub baton: Baton,
    /// The workspace id requests act in.
    pub workspace_id: Arc<str>,
}

impl AppState {
    /// The actor of a request: `X-Baton-Actor`, or `http`.
    pub fn actor(&self, headers: &HeaderMap) -> Actor {
        let name = headers
            .get("x-baton-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .unwrap_or("http");
        Actor {
            workspace_id: self.workspace_id.to_string(),
            name: name.to_string(),
        }
    }
}

/// The idempotency key of a request, from `Idempotency-Key`.
pub fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .merge(tasks::routes())
        .merge(stream::routes())
        .fallback(|| async {
            ApiError(baton_core::Error::new(
                baton_core::Code::NotFound,
                "no such route",
                "the API lives under /v1; see docs/http.md",
            ))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (leases stay valid: nothing is released on shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    baton: Baton,
    workspace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> baton_core::Result<()> {
    let actor = baton.actor(workspace, "http").await?;
    let state = AppState {
        baton,
        workspace_id: actor.workspace_id.into(),
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| baton_core::Error::storage(format!("server: {e}")))
}
