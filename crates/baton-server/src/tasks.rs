//! Task routes: creation, reads, updates, the claim, and every operation of the state
//! machine, each one call into the engine.

use crate::{idempotency_key, ApiError, AppState, JsonBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use baton_core::access::Permission;
use baton_core::api::*;
use baton_core::model::DepKind;
use baton_core::ops::plan::PlanDoc;
use baton_core::state::{Op, Status};
use baton_core::store::TaskFilter;
use baton_core::{Error, LeaseOp};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, ApiError>;

fn bad_query(e: QueryRejection, hint: &str) -> ApiError {
    Error::invalid(format!("invalid query string: {}", e.body_text()), hint).into()
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(create).get(list))
        .route("/v1/tasks/claim", post(claim))
        .route("/v1/tasks/batch", post(batch))
        .route("/v1/tasks/ready", get(ready))
        .route("/v1/tasks/{id}", get(read).patch(update))
        .route("/v1/tasks/{id}/brief", get(brief))
        .route("/v1/tasks/{id}/context", post(add_context))
        .route("/v1/tasks/{id}/steps", post(add_step))
        .route("/v1/tasks/{id}/steps/{step}/done", post(done_step))
        .route("/v1/tasks/{id}/dependencies", post(add_dependency))
        .route(
            "/v1/tasks/{id}/dependencies/{blocker}",
            delete(remove_dependency),
        )
        .route("/v1/tasks/{id}/{op}", post(operation))
        .route("/v1/events", get(events))
        .route("/v1/plans", post(apply_plan))
}

async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateTask>,
) -> Result<Response> {
    let key = idempotency_key(&headers);
    let out = s
        .baton
        .create_task(
            &s.auth(&headers, &[Permission::Plan])?.actor,
            key.as_deref(),
            req,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    tasks: Vec<baton_core::ops::task::BatchItem>,
}

async fn batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<BatchBody>,
) -> Result<Response> {
    let key = idempotency_key(&headers);
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let out = s
        .baton
        .create_batch(&actor, key.as_deref(), req.tasks)
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Query of `GET /v1/tasks/ready`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyQuery {
    limit: Option<u32>,
}

async fn ready(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<ReadyQuery>, QueryRejection>,
) -> Result<Json<TasksOut>> {
    let Query(q) = query.map_err(|e| bad_query(e, "use limit (1 to 1000)"))?;
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.ready(&actor, q.limit.unwrap_or(100))?))
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    parent: Option<String>,
    label: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TasksOut>> {
    let Query(q) =
        query.map_err(|e| bad_query(e, "use status, parent, label, limit (1 to 1000), cursor"))?;
    let filter = TaskFilter {
        status: q.status.as_deref().map(Status::parse).transpose()?,
        parent_id: q.parent,
        label: q.label,
        after_id: q.cursor,
        limit: q.limit.unwrap_or(100),
        ..Default::default()
    };
    Ok(Json(s.baton.list_tasks(
        &s.auth(&headers, &[Permission::Read])?.actor,
        filter,
    )?))
}

async fn read(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TaskOut>> {
    Ok(Json(s.baton.get_task(
        &s.auth(&headers, &[Permission::Read])?.actor,
        &id,
    )?))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(mut req): JsonBody<UpdateTask>,
) -> Result<Json<TaskOut>> {
    if let Some(tag) = headers.get("if-match") {
        let text = tag.to_str().unwrap_or("").trim().trim_matches('"');
        let version = text.parse::<u64>().map_err(|_| {
            Error::invalid(
                format!("If-Match '{text}' is not a task version"),
                "send the task's version number, e.g. If-Match: 3",
            )
        })?;
        req.version = Some(version);
    }
    let key = idempotency_key(&headers);
    Ok(Json(
        s.baton
            .update_task(
                &s.auth(&headers, &[Permission::Plan])?.actor,
                key.as_deref(),
                &id,
                req,
            )
            .await?,
    ))
}

/// Query of `GET /v1/tasks/{id}/brief`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BriefQuery {
    max_bytes: Option<usize>,
}

async fn brief(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: std::result::Result<Query<BriefQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query.map_err(|e| bad_query(e, "use max_bytes"))?;
    let max = q.max_bytes;
    Ok(Json(s.baton.brief(
        &s.auth(&headers, &[Permission::Read])?.actor,
        &id,
        max,
    )?))
}

async fn claim(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ClaimRequest>,
) -> Result<Json<Claims>> {
    let key = idempotency_key(&headers);
    let principal = s.auth(&headers, &[Permission::Work])?;
    // A key bound to an agent claims only as that agent; the claim is recorded under its name.
    if let Some(bound) = principal.key.agent.as_deref().filter(|a| *a != req.agent) {
        return Err(Error::new(
            baton_core::Code::Forbidden,
            format!("this key acts as agent '{bound}', not '{}'", req.agent),
            format!("claim with \"agent\": \"{bound}\", or use that agent's own key"),
        )
        .into());
    }
    let mut actor = principal.actor;
    actor.name = req.agent.clone();
    Ok(Json(s.baton.claim(&actor, key.as_deref(), req).await?))
}

/// Reads `field` out of a JSON object body, then the rest as `T` (unknown fields refused).
fn split<T: DeserializeOwned>(
    mut body: Map<String, Value>,
    field: &str,
) -> std::result::Result<(Option<Value>, T), Error> {
    let taken = body.remove(field);
    let rest = serde_json::from_value(Value::Object(body)).map_err(|e| {
        Error::invalid(
            format!("invalid request body: {e}"),
            "send the documented fields only",
        )
    })?;
    Ok((taken, rest))
}

fn text(v: Option<Value>, field: &str) -> std::result::Result<Option<String>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(
            format!("{field} must be a string"),
            format!("send {field} as a JSON string"),
        )),
    }
}

/// Body of the operations that take only a reason or comment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
    comment: Option<String>,
}

async fn operation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, op)): Path<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response> {
    let need = match op.as_str() {
        "approve" | "reject" => Permission::Review,
        "publish" | "cancel" | "retry" | "unblock" => Permission::Plan,
        _ => Permission::Work,
    };
    let actor = s.auth(&headers, &[need])?.actor;
    let key = idempotency_key(&headers);
    let key = key.as_deref();
    let planner_op = match op.as_str() {
        "publish" => Some(Op::Publish),
        "cancel" => Some(Op::Cancel),
        "retry" => Some(Op::Retry),
        "unblock" => Some(Op::Unblock),
        "approve" => Some(Op::Approve),
        "reject" => Some(Op::Reject),
        _ => None,
    };
    if let Some(op) = planner_op {
        let body: ReasonBody = split::<ReasonBody>(body, "_none")?.1;
        let reason = body.reason.or(body.comment);
        let out = s.baton.transition(&actor, key, op, &id, reason).await?;
        return Ok(Json(out).into_response());
    }
    let (lease, lease_op) = match op.as_str() {
        "start" => split::<Empty>(body, "lease").map(|(l, _)| (l, LeaseOp::Start))?,
        "release" => split::<Empty>(body, "lease").map(|(l, _)| (l, LeaseOp::Release))?,
        "resume" => split::<Empty>(body, "lease").map(|(l, _)| (l, LeaseOp::Resume))?,
        "heartbeat" => split::<Heartbeat>(body, "lease").map(|(l, hb)| (l, LeaseOp::Heartbeat(hb)))?,
        "complete" => split::<Complete>(body, "lease").map(|(l, c)| (l, LeaseOp::Complete(c)))?,
        "fail" => split::<Fail>(body, "lease").map(|(l, f)| (l, LeaseOp::Fail(f)))?,
        "block" => split::<Reason>(body, "lease").map(|(l, r)| (l, LeaseOp::Block { reason: r.reason }))?,
        "wait" => split::<Reason>(body, "lease").map(|(l, r)| (l, LeaseOp::Wait { reason: r.reason }))?,
        other => {
            return Err(Error::new(
                baton_core::Code::NotFound,
                format!("no task operation '{other}'"),
                "use start, heartbeat, release, complete, fail, block, wait, resume, publish, cancel, retry, unblock, approve or reject",
            )
            .into())
        }
    };
    let Some(token) = text(lease, "lease")? else {
        return Err(Error::invalid(
            "lease is required",
            "send the lease token from your claim as \"lease\"",
        )
        .into());
    };
    Ok(Json(s.baton.lease_op(&actor, key, &id, &token, lease_op).await?).into_response())
}

/// A body with no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// A body with a required reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn add_context(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddContext>,
) -> Result<Response> {
    let key = idempotency_key(&headers);
    let out = s
        .baton
        .add_context(
            &s.auth(
                &headers,
                &[Permission::Plan, Permission::Work, Permission::Review],
            )?
            .actor,
            key.as_deref(),
            &id,
            req,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/{id}/steps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    title: String,
    details: Option<String>,
}

async fn add_step(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<StepBody>,
) -> Result<Response> {
    let key = idempotency_key(&headers);
    let out = s
        .baton
        .add_step(
            &s.auth(&headers, &[Permission::Plan, Permission::Work])?
                .actor,
            key.as_deref(),
            &id,
            req.title,
            req.details,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/{id}/steps/{step}/done`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneBody {
    notes: Option<String>,
}

async fn done_step(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    JsonBody(req): JsonBody<DoneBody>,
) -> Result<Json<StepOut>> {
    let key = idempotency_key(&headers);
    Ok(Json(
        s.baton
            .done_step(
                &s.auth(&headers, &[Permission::Plan, Permission::Work])?
                    .actor,
                key.as_deref(),
                &id,
                &step,
                req.notes,
            )
            .await?,
    ))
}

/// Body of `POST /v1/tasks/{id}/dependencies`: the task waits on `blocker_id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DepBody {
    blocker_id: String,
    kind: Option<String>,
}

async fn add_dependency(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<DepBody>,
) -> Result<Json<DepOut>> {
    let kind = DepKind::parse(req.kind.as_deref().unwrap_or("blocks"))?;
    let key = idempotency_key(&headers);
    Ok(Json(
        s.baton
            .dependency(
                &s.auth(&headers, &[Permission::Plan])?.actor,
                key.as_deref(),
                &req.blocker_id,
                &id,
                kind,
                true,
            )
            .await?,
    ))
}

/// Query of `DELETE /v1/tasks/{id}/dependencies/{blocker}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindQuery {
    kind: Option<String>,
}

async fn remove_dependency(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, blocker)): Path<(String, String)>,
    query: std::result::Result<Query<KindQuery>, QueryRejection>,
) -> Result<Json<DepOut>> {
    let Query(q) =
        query.map_err(|e| bad_query(e, "use kind: blocks, relates_to or discovered_from"))?;
    let kind = q.kind.unwrap_or_else(|| "blocks".into());
    let kind = DepKind::parse(&kind)?;
    let key = idempotency_key(&headers);
    Ok(Json(
        s.baton
            .dependency(
                &s.auth(&headers, &[Permission::Plan])?.actor,
                key.as_deref(),
                &blocker,
                &id,
                kind,
                false,
            )
            .await?,
    ))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsOut>> {
    let Query(q) =
        query.map_err(|e| bad_query(e, "use after (a sequence number) and limit (1 to 1000)"))?;
    Ok(Json(s.baton.events(
        &s.auth(&headers, &[Permission::Read])?.actor,
        q.after.unwrap_or(0),
        q.limit.unwrap_or(100),
    )?))
}

async fn apply_plan(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(doc): JsonBody<PlanDoc>,
) -> Result<Json<Value>> {
    let key = idempotency_key(&headers);
    Ok(Json(
        s.baton
            .apply_plan(
                &s.auth(&headers, &[Permission::Plan])?.actor,
                key.as_deref(),
                doc,
            )
            .await?,
    ))
}
