//! Baton's HTTP API (`/v1`): every route parses its input, calls one [`Baton`] operation and
//! returns its typed response, the same shapes the CLI prints with `--json`. No rules live
//! here.
//!
//! Every route needs `Authorization: Bearer <key>`; the key decides the workspace and the
//! role (DESIGN §8). The OpenAPI document at `/openapi.json` is generated from the handlers'
//! own annotations and types as the routes are registered ([`openapi`]).

mod admin;
mod artifacts;
mod error;
mod openapi;
mod registry;
pub mod request;
pub mod stream;
mod tasks;

pub use error::{ApiError, JsonBody, NoQuery, Path, MAX_BODY};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Router;
use baton_core::access::{Permission, Principal};
use baton_core::Baton;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler gets: the engine.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine.
    pub baton: Baton,
    /// Who a request without `Authorization` acts as, for in-process callers that own the
    /// store (the stdio MCP server on the embedded store). `None` on the network.
    pub local: Option<Principal>,
    /// Recently authenticated keys, so a request costs no store read for its key.
    pub keys: KeyCache,
    /// The live event streams' followers, one per workspace with subscribers.
    pub hub: Arc<stream::Hub>,
}

/// Principals by token for [`KEY_CACHE_TTL`]: an agent's every request carries its key, and
/// looking it up is a store read plus a SHA-256. Keys cannot be revoked yet; when they can,
/// the TTL bounds how long a revoked key keeps working on a replica.
#[derive(Clone, Debug, Default)]
pub struct KeyCache(Arc<Mutex<HashMap<String, (Principal, Instant)>>>);

/// How long an authenticated key is trusted without a store read.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// Most keys kept; the cache starts over when it is full.
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn get(&self, token: &str) -> Option<Principal> {
        let cache = self.0.lock().ok()?;
        let (principal, at) = cache.get(token)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| principal.clone())
    }

    fn put(&self, token: &str, principal: &Principal) {
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.to_string(), (principal.clone(), Instant::now()));
        }
    }
}

impl AppState {
    /// The state of a network server: every request needs a key.
    pub fn new(baton: Baton) -> Self {
        AppState {
            baton,
            local: None,
            keys: KeyCache::default(),
            hub: Arc::default(),
        }
    }

    /// Authenticates the request's bearer token and checks that its role grants one of
    /// `needs`: `UNAUTHORIZED` (401) without a valid key, `FORBIDDEN` (403) for a role that
    /// may not. The actor it returns is scoped to the key's workspace.
    pub fn auth(&self, headers: &HeaderMap, needs: &[Permission]) -> Result<Principal, ApiError> {
        let principal = self.authenticate(headers)?;
        principal.require_any(needs)?;
        Ok(principal)
    }

    /// The principal of the request's bearer token, whatever it may do: `UNAUTHORIZED`
    /// (401) without a valid key. Its actor carries the request's id (set by
    /// [`request::identify`]), so the events the call appends name it.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let mut principal = self.principal(headers)?;
        principal.actor.request_id = request::id_of(headers);
        Ok(principal)
    }

    pub(crate) fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if let (Some(local), None) = (&self.local, headers.get("authorization")) {
            return Ok(local.clone());
        }
        if headers.get_all("authorization").iter().nth(1).is_some() {
            return Err(ApiError(baton_core::Error::new(
                baton_core::Code::Unauthorized,
                "more than one Authorization header",
                "send one Authorization: Bearer <key>",
            )));
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme's name is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError(baton_core::Error::new(
                    baton_core::Code::Unauthorized,
                    match headers.contains_key("authorization") {
                        true => "no API key: the Authorization header is not `Bearer <key>`",
                        false => "no API key",
                    },
                    "send Authorization: Bearer <key>; create one with `baton key create --role ROLE`",
                ))
            })?;
        match self.keys.get(token) {
            Some(p) => Ok(p),
            None => {
                let p = self.baton.authenticate(token)?;
                self.keys.put(token, &p);
                Ok(p)
            }
        }
    }
}

/// The agent a claim acts as: the one it names, or, when it names none, the agent its key
/// is bound to; a key bound to an agent may not act as another (`FORBIDDEN`).
pub(crate) fn claiming_agent(principal: &Principal, agent: &mut String) -> Result<(), ApiError> {
    if agent.is_empty() {
        if let Some(bound) = &principal.key.agent {
            agent.clone_from(bound);
        }
    }
    check_bound(principal, agent)
}

/// Refuses a key bound to an agent when the request acts as another agent (`FORBIDDEN`).
pub(crate) fn check_bound(principal: &Principal, agent: &str) -> Result<(), ApiError> {
    match principal.key.agent.as_deref() {
        Some(bound) if bound != agent => Err(ApiError(baton_core::Error::new(
            baton_core::Code::Forbidden,
            format!("this key acts as agent '{bound}', not '{agent}'"),
            format!("use \"agent\": \"{bound}\", or that agent's own key"),
        ))),
        _ => Ok(()),
    }
}

/// The idempotency key of a request, from `Idempotency-Key`: `INVALID_INPUT` for a key that
/// is not printable ASCII or given twice, rather than a call run without the key's promise.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut keys = headers.get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(None);
    };
    let hint = "send one Idempotency-Key of printable ASCII, e.g. a UUID";
    if keys.next().is_some() {
        return Err(ApiError(baton_core::Error::invalid(
            "the Idempotency-Key header is given more than once",
            hint,
        )));
    }
    match key.to_str() {
        Ok(key) => Ok(Some(key.to_string())),
        Err(_) => Err(ApiError(baton_core::Error::invalid(
            "the Idempotency-Key header is not printable ASCII",
            hint,
        ))),
    }
}

/// The routes that take no key.
pub(crate) const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "ok", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers a read.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ok", content_type = "text/plain", body = String),
        (status = 503, description = "The store cannot be read", body = baton_core::error::ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    s.baton.ready_check()?;
    Ok("ok")
}

/// The key's workspace in Prometheus's text format (DESIGN §7): tasks in each open status
/// (`ready` is the queue's depth) and agents by status, read now; the events this replica
/// committed, by type, and how long its claims took. Any role may read it: a scraper is
/// given an observer's key (`authorization` in its scrape config).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain", body = String)))]
async fn metrics(
    State(s): State<AppState>,
    headers: HeaderMap,
    _: error::NoQuery,
) -> Result<impl IntoResponse, ApiError> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let text = s.baton.metrics(&actor)?.render();
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        serde_json::to_string(&openapi()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(CONTENT_TYPE, "application/json")], document.as_str())
}

/// The OpenAPI document of the whole API, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::finish(routes().split_for_parts().1)
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics))
        .merge(tasks::routes())
        .merge(artifacts::routes())
        .merge(registry::routes())
        .merge(stream::routes())
        .merge(admin::routes())
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(|| async {
            ApiError(baton_core::Error::new(
                baton_core::Code::NotFound,
                "no such route",
                "the API lives under /v1; see /openapi.json and docs/http.md",
            ))
        })
        .method_not_allowed_fallback(|| async {
            ApiError(baton_core::Error::new(
                baton_core::Code::MethodNotAllowed,
                "this route does not take that method",
                "see /openapi.json for the methods of each route",
            ))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            if_match_only_where_honoured,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request::identify,
        ))
        .with_state(state)
}

/// The writes that honour `If-Match` (a task's PATCH and its planner's and reviewer's
/// transitions): on any other write the header is refused (400), not ignored, since a
/// caller that sends a precondition counts on it. Reads may carry it. A caller without a
/// valid key hears that first, as everywhere.
async fn if_match_only_where_honoured(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let method = request.method().clone();
    if !request.headers().contains_key("if-match") || method == axum::http::Method::GET {
        return next.run(request).await;
    }
    let segments: Vec<&str> = request.uri().path().split('/').skip(1).collect();
    let honoured = match (method.as_str(), segments.as_slice()) {
        ("PATCH", ["v1", "tasks", _]) => true,
        ("POST", ["v1", "tasks", _, op]) => {
            ["publish", "cancel", "retry", "unblock", "approve", "reject"].contains(op)
        }
        _ => false,
    };
    if honoured {
        return next.run(request).await;
    }
    if let Err(unauthorized) = state.authenticate(request.headers()) {
        return unauthorized.into_response();
    }
    ApiError(baton_core::Error::invalid(
        "If-Match does not apply to this route",
        "leave it out: a task's PATCH and its publish, cancel, retry, unblock, approve and \
         reject take it; a lease operation is fenced by its lease",
    ))
    .into_response()
}

/// Longest a graceful shutdown waits for the requests in flight before the server exits
/// anyway (their clients see the connection close, as after a crash: nothing acknowledged
/// is lost, and an answer not sent is retried).
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// How often the server's reaper expires lapsed leases.
pub const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (leases stay valid: nothing is released on shutdown); live
/// event streams end and waiting claims answer with no claims at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    baton: Baton,
    workspace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> baton_core::Result<()> {
    let app = router(AppState::new(baton.clone()));
    serve_app(listener, baton, app, workspace, shutdown).await
}

/// Serves `app` (the API, possibly with more routes such as `/mcp`) like [`serve`].
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    baton: Baton,
    app: Router,
    workspace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> baton_core::Result<()> {
    baton.actor(workspace, "http").await?; // the default workspace exists from the start
                                           // The reaper: expires lapsed leases every second, so their tasks go back to the queue
                                           // (with backoff) and wake waiting claimers even when nobody writes.
    let reaper = {
        let baton = baton.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                match baton.reap_all().await {
                    Ok(0) => {}
                    Ok(expired) => tracing::info!(expired, "expired lapsed leases"),
                    Err(e) => tracing::warn!(code = e.code.as_str(), message = %e.message,
                        "the reaper could not expire lapsed leases"),
                }
            }
        })
    };
    // No Nagle: small frames of a live stream must not wait for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Once shutdown begins, live streams and waiting claims end, or the drain would wait
    // for their clients to leave.
    let closing = baton.clone();
    let (began, draining) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: draining the requests in flight");
        closing.close();
        let _ = began.send(());
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    // A connection can still hold the drain for ever (one that sent half a request's
    // headers and nothing more): past `DRAIN_LIMIT` the server exits regardless.
    let limit = async {
        match draining.await {
            Ok(()) => tokio::time::sleep(DRAIN_LIMIT).await,
            Err(_) => std::future::pending().await,
        }
    };
    let served = tokio::select! {
        served = std::future::IntoFuture::into_future(serve) => served,
        _ = limit => Ok(()),
    };
    reaper.abort();
    tracing::info!("stopped");
    served.map_err(|e| baton_core::Error::storage(format!("server: {e}")))
}
