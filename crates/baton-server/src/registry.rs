//! Projects and agents: the containers of default policies and the workers that claim.

use crate::{idempotency_key, ApiError, AppState, JsonBody, NoQuery, Path};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_core::access::Permission;
use baton_core::api::*;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project))
        .routes(routes!(register_agent))
        .routes(routes!(agent_heartbeat))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, update_agent))
}

/// Create a project with its default policies.
#[utoipa::path(post, path = "/v1/projects", tag = "registry", request_body = CreateProject,
    responses((status = 201, description = "The new project", body = ProjectOut)))]
async fn create_project(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<CreateProject>,
) -> Result<Response> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    let out = s.baton.create_project(&actor, key.as_deref(), req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Every project of the workspace, by name.
#[utoipa::path(get, path = "/v1/projects", tag = "registry",
    responses((status = 200, description = "The projects", body = ProjectsOut)))]
async fn list_projects(
    State(s): State<AppState>,
    headers: HeaderMap,
    _: NoQuery,
) -> Result<Json<ProjectsOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.projects(&actor)?))
}

/// Read a project by id or name.
#[utoipa::path(get, path = "/v1/projects/{id}", tag = "registry",
    params(("id" = String, Path, description = "The project's id (`prj_…`) or name")),
    responses((status = 200, description = "The project", body = ProjectOut)))]
async fn get_project(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<ProjectOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.project(&actor, &id)?))
}

/// Change a project's policies, or set its kill switch (no claims while killed).
#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "registry",
    params(("id" = String, Path, description = "The project's id (`prj_…`) or name")),
    request_body = ProjectSettings,
    responses((status = 200, description = "The project after the change", body = ProjectOut)))]
async fn update_project(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<ProjectSettings>,
) -> Result<Json<ProjectOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .update_project(&actor, key.as_deref(), &id, req)
            .await?,
    ))
}

/// Register an agent (or update its capabilities). Claims register agents on first use;
/// registering first makes an agent visible before it works.
#[utoipa::path(post, path = "/v1/agents/register", tag = "registry", request_body = RegisterAgent,
    responses((status = 200, description = "The agent", body = AgentOut)))]
async fn register_agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<RegisterAgent>,
) -> Result<Json<AgentOut>> {
    let principal = s.auth(&headers, &[Permission::Work, Permission::Plan])?;
    let req: RegisterAgent = body.parse()?;
    crate::check_bound(&principal, &req.agent)?;
    if req.max_concurrency.is_some() {
        // A limit is a planner's decision about an agent, as on `PATCH /v1/agents/{name}`:
        // an agent may not lift its own.
        principal.require_any(&[Permission::Plan]).map_err(|e| {
            let e = baton_core::Error {
                message: format!("{}: max_concurrency is set by a planner", e.message),
                ..e
            };
            ApiError(e)
        })?;
    }
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .register_agent(&principal.actor, key.as_deref(), req)
            .await?,
    ))
}

/// Body of `POST /v1/agents/heartbeat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentHeartbeat {
    /// The agent's name.
    #[schema(min_length = 1, max_length = 200)]
    agent: String,
}

/// Say an agent is alive, between tasks (a lease's own heartbeat also counts). Its
/// `last_seen_at` moves at most once a minute.
#[utoipa::path(post, path = "/v1/agents/heartbeat", tag = "registry", request_body = AgentHeartbeat,
    responses((status = 200, description = "The agent", body = AgentOut)))]
async fn agent_heartbeat(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<AgentHeartbeat>,
) -> Result<Json<AgentOut>> {
    let principal = s.auth(&headers, &[Permission::Work])?;
    let req: AgentHeartbeat = body.parse()?;
    crate::check_bound(&principal, &req.agent)?;
    let key = crate::idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .agent_heartbeat(&principal.actor, key.as_deref(), &req.agent)
            .await?,
    ))
}

/// Every agent of the workspace, by name.
#[utoipa::path(get, path = "/v1/agents", tag = "registry",
    responses((status = 200, description = "The agents", body = AgentsOut)))]
async fn list_agents(
    State(s): State<AppState>,
    headers: HeaderMap,
    _: NoQuery,
) -> Result<Json<AgentsOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.agents(&actor)?))
}

/// Read an agent by name or id.
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "registry",
    params(("name" = String, Path, description = "The agent's name or id (`agt_…`)")),
    responses((status = 200, description = "The agent", body = AgentOut)))]
async fn get_agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    _: NoQuery,
) -> Result<Json<AgentOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.agent(&actor, &name)?))
}

/// Change an agent's status: `disabled` stops its claims; `killed`, its kill switch, also
/// revokes every lease it holds at once; `active` lets it claim again.
#[utoipa::path(patch, path = "/v1/agents/{name}", tag = "registry",
    params(("name" = String, Path, description = "The agent's name or id (`agt_…`)")),
    request_body = AgentSettings,
    responses((status = 200, description = "The agent after the change", body = AgentOut)))]
async fn update_agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: JsonBody<AgentSettings>,
) -> Result<Json<AgentOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .update_agent(&actor, key.as_deref(), &name, req)
            .await?,
    ))
}
