//! Workspaces and keys: admin routes.

use crate::{ApiError, AppState, JsonBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use baton_core::access::Permission;
use baton_core::api::Actor;
use baton_core::Error;
use serde::Deserialize;
use serde_json::json;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces", post(create_workspace))
        .route("/v1/workspaces/{id}/keys", post(create_key))
}

/// Body of `POST /v1/workspaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceBody {
    name: String,
}

/// Creates a workspace and its first admin key (nothing else reaches into a new workspace).
async fn create_workspace(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<WorkspaceBody>,
) -> Result<Response, ApiError> {
    s.auth(&headers, &[Permission::Admin])?;
    let ws = s.baton.create_workspace(&req.name).await?;
    let admin = Actor {
        workspace_id: ws.id.clone(),
        name: "admin".into(),
    };
    let key = s.baton.create_key(&admin, "admin", None).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "workspace": ws, "key": key.key })),
    )
        .into_response())
}

/// Body of `POST /v1/workspaces/{id}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    role: String,
    agent: Option<String>,
}

async fn create_key(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<KeyBody>,
) -> Result<Response, ApiError> {
    let principal = s.auth(&headers, &[Permission::Admin])?;
    if principal.actor.workspace_id != id {
        return Err(Error::not_found("workspace", &id).into()); // other workspaces do not exist for this key
    }
    let key = s
        .baton
        .create_key(&principal.actor, &req.role, req.agent)
        .await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}
