//! Workspaces and keys: admin routes.

use crate::{idempotency_key, ApiError, AppState, JsonBody, NoQuery, Path};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_core::access::{KeyGrant, KeyOut, Permission};
use baton_core::api::{WorkspaceOut, WorkspaceSettings};
use baton_core::model::Workspace;
use baton_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace))
        .routes(routes!(create_key))
        .routes(routes!(get_workspace, update_workspace))
        .routes(routes!(whoami))
}

/// Answer of `GET /v1/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Whoami {
    /// The workspace the key acts in.
    workspace_id: String,
    /// The key's id.
    key_id: String,
    /// Its role.
    role: String,
    /// The agent a bound key acts as.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
}

/// Who the key is: its workspace, role and bound agent (so a client can act as it).
#[utoipa::path(get, path = "/v1/whoami", tag = "admin",
    responses((status = 200, description = "The key's identity", body = Whoami)))]
async fn whoami(
    State(s): State<AppState>,
    headers: HeaderMap,
    _: NoQuery,
) -> Result<Json<Whoami>, ApiError> {
    let principal = s.auth(&headers, &[Permission::Read])?;
    Ok(Json(Whoami {
        workspace_id: principal.actor.workspace_id,
        key_id: principal.key.id,
        role: principal.key.role,
        agent: principal.key.agent,
    }))
}

/// Body of `POST /v1/workspaces`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceBody {
    /// Unique name of the new workspace.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

/// Answer of `POST /v1/workspaces`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceCreated {
    /// The workspace.
    workspace: Workspace,
    /// Its first admin key; the token is shown only here.
    key: KeyGrant,
}

/// Create a workspace with a new admin key for it: nothing else reaches into a new
/// workspace. A name in use is `409 ALREADY_EXISTS`, never the existing workspace.
#[utoipa::path(post, path = "/v1/workspaces", tag = "admin", request_body = WorkspaceBody,
    responses((status = 201, description = "The workspace and its first admin key", body = WorkspaceCreated)))]
async fn create_workspace(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<WorkspaceBody>,
) -> Result<Response, ApiError> {
    let caller = s.auth(&headers, &[Permission::Admin])?.actor;
    refuse_replay(&headers)?;
    let req = body.parse()?;
    let (workspace, key) = s.baton.create_new_workspace(&caller, &req.name).await?;
    let key = key.key;
    Ok((
        StatusCode::CREATED,
        Json(WorkspaceCreated { workspace, key }),
    )
        .into_response())
}

/// The routes that answer with a new key's secret refuse an `Idempotency-Key`: a replay
/// would have to store the secret to show it again, and it is shown once. Without the
/// header the caller cannot mistake a second key for the first.
fn refuse_replay(headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::idempotency_key(headers)?.is_some() {
        return Err(Error::invalid(
            "this route creates a key whose secret is shown once, so it cannot be replayed",
            "send it without Idempotency-Key; if an answer was lost, list what exists and \
             create another key (an unused one can simply be left unused)",
        )
        .into());
    }
    Ok(())
}

/// Body of `POST /v1/workspaces/{id}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyBody {
    /// admin, planner, worker, reviewer or observer.
    #[schema(pattern = "^(admin|planner|worker|reviewer|observer)$")]
    role: String,
    /// Bind the key to this agent: its claims are that agent's.
    agent: Option<String>,
}

/// Create a key in the caller's own workspace; the token is shown once.
#[utoipa::path(post, path = "/v1/workspaces/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "The caller's workspace id (`ws_…`)")),
    request_body = KeyBody,
    responses((status = 201, description = "The key with its token", body = KeyOut)))]
async fn create_key(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<KeyBody>,
) -> Result<Response, ApiError> {
    let principal = s.auth(&headers, &[Permission::Admin])?;
    refuse_replay(&headers)?;
    let req = body.parse()?;
    own_workspace(&principal.actor, &id)?; // other workspaces do not exist for this key
    let key = s
        .baton
        .create_key(&principal.actor, &req.role, req.agent)
        .await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// A key sees its own workspace only; any other id is not found.
fn own_workspace(actor: &baton_core::api::Actor, id: &str) -> Result<(), ApiError> {
    baton_core::ops::check_id("workspace id", id)?;
    if actor.workspace_id != id {
        return Err(Error::not_found("workspace", id).into());
    }
    Ok(())
}

/// Read the caller's workspace (its kill switch among its fields).
#[utoipa::path(get, path = "/v1/workspaces/{id}", tag = "admin",
    params(("id" = String, Path, description = "The caller's workspace id (`ws_…`)")),
    responses((status = 200, description = "The workspace", body = WorkspaceOut)))]
async fn get_workspace(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<WorkspaceOut>, ApiError> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    own_workspace(&actor, &id)?;
    Ok(Json(s.baton.workspace(&actor)?))
}

/// Set or lift the workspace's kill switch: setting it revokes every lease in the
/// workspace at once, and while set every claim is refused `KILLED`.
#[utoipa::path(patch, path = "/v1/workspaces/{id}", tag = "admin",
    params(("id" = String, Path, description = "The caller's workspace id (`ws_…`)")),
    request_body = WorkspaceSettings,
    responses((status = 200, description = "The workspace after the change", body = WorkspaceOut)))]
async fn update_workspace(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<WorkspaceSettings>,
) -> Result<Json<WorkspaceOut>, ApiError> {
    let actor = s.auth(&headers, &[Permission::Admin])?.actor;
    own_workspace(&actor, &id)?;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .update_workspace(&actor, key.as_deref(), req)
            .await?,
    ))
}
