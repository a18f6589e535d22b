//! Task routes: creation, reads, updates, the claim, and every operation of the state
//! machine, each one call into the engine. Each handler's `#[utoipa::path]` is its entry in
//! the OpenAPI document, registered together with the route.

use crate::openapi::Leased;
use crate::{idempotency_key, ApiError, AppState, JsonBody, Path};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_core::access::Permission;
use baton_core::api::*;
use baton_core::model::DepKind;
use baton_core::ops::plan::{PlanDoc, PlanOut};
use baton_core::ops::task::{BatchItem, BatchOut};
use baton_core::state::{Op, Status};
use baton_core::store::TaskFilter;
use baton_core::{Error, LeaseOp, LeaseOut};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn bad_query(e: QueryRejection, hint: &str) -> ApiError {
    Error::invalid(format!("invalid query string: {}", e.body_text()), hint).into()
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(claim))
        .routes(routes!(complete_many))
        .routes(routes!(batch))
        .routes(routes!(ready))
        .routes(routes!(read, update))
        .routes(routes!(brief))
        .routes(routes!(add_context))
        .routes(routes!(add_step))
        .routes(routes!(done_step))
        .routes(routes!(add_dependency))
        .routes(routes!(remove_dependency))
        .routes(routes!(start))
        .routes(routes!(heartbeat))
        .routes(routes!(release))
        .routes(routes!(complete))
        .routes(routes!(fail))
        .routes(routes!(block))
        .routes(routes!(wait))
        .routes(routes!(resume))
        .routes(routes!(publish))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(unblock))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(events))
        .routes(routes!(apply_plan))
}

/// The task a route acts on.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TaskId {
    /// The task's id (`tsk_…`).
    #[allow(dead_code)]
    pub(crate) id: String,
}

/// Create a task: ready, blocked while its `blocked_by` are open, or a draft.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, description = "The new task", body = TaskOut)))]
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<CreateTask>,
) -> Result<Response> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    let out = s.baton.create_task(&actor, key.as_deref(), req).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// 1 to 1000 tasks; `parent_id` and `blocked_by` may name the refs of other items.
    #[schema(min_items = 1, max_items = 1000)]
    tasks: Vec<BatchItem>,
}

/// Create a whole graph in one transaction; items refer to each other by ref.
#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", request_body = BatchBody,
    responses((status = 201, description = "The tasks in request order, each with its ref", body = BatchOut)))]
async fn batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<BatchBody>,
) -> Result<Response> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let key = idempotency_key(&headers)?;
    let req: BatchBody = body.parse()?;
    let out = s
        .baton
        .create_batch(&actor, key.as_deref(), req.tasks)
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Query of `GET /v1/tasks/ready`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadyQuery {
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// Tasks claimable now, in claim order, for any capabilities.
#[utoipa::path(get, path = "/v1/tasks/ready", tag = "tasks", params(ReadyQuery),
    responses((status = 200, description = "Claimable tasks in claim order", body = TasksOut)))]
async fn ready(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<ReadyQuery>, QueryRejection>,
) -> Result<Json<TasksOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let Query(q) = query.map_err(|e| bad_query(e, "use limit (1 to 1000)"))?;
    Ok(Json(s.baton.ready(&actor, q.limit.unwrap_or(100))?))
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only tasks in this status.
    status: Option<Status>,
    /// Only children of this task.
    parent: Option<String>,
    /// Only tasks with this label.
    label: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tasks in creation order, a page at a time.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, description = "A page of tasks; next_cursor when more follow", body = TasksOut)))]
async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TasksOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let Query(q) =
        query.map_err(|e| bad_query(e, "use status, parent, label, limit (1 to 1000), cursor"))?;
    let filter = TaskFilter {
        status: q.status,
        parent_id: q.parent,
        label: q.label,
        after_id: q.cursor,
        limit: q.limit.unwrap_or(100),
        ..Default::default()
    };
    Ok(Json(s.baton.list_tasks(&actor, filter)?))
}

/// Query of `GET /v1/tasks/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// The task as it stood once this event (a sequence number of the workspace's log)
    /// was committed, rebuilt from the log.
    as_of: Option<u64>,
}

/// Read a task, as it is or as it stood at an event of the log.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(TaskId, ReadQuery),
    responses((status = 200, description = "The task", body = TaskOut)))]
async fn read(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<TaskOut>> {
    let actor = &s.auth(&headers, &[Permission::Read])?.actor;
    let Query(q) = query.map_err(|e| bad_query(e, "use as_of=SEQ, or no query"))?;
    Ok(Json(match q.as_of {
        Some(seq) => s.baton.get_task_as_of(actor, &id, seq)?,
        None => s.baton.get_task(actor, &id)?,
    }))
}

/// Change a task's fields; `If-Match: <version>` (or `version`) makes it conditional.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks",
    params(TaskId, ("If-Match" = Option<String>, Header, description = "The version the change is based on; another version is 409 VERSION_CONFLICT")),
    request_body = UpdateTask,
    responses((status = 200, description = "The task after the change", body = TaskOut)))]
async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<UpdateTask>,
) -> Result<Json<TaskOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let mut req: UpdateTask = body.parse()?;
    req.version = expected_version(&headers, req.version)?;
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .update_task(&actor, key.as_deref(), &id, req)
            .await?,
    ))
}

/// The version a conditional change is based on: `If-Match: <version>` (bare or as a
/// strong entity tag, `"3"`), or `version` in the body, or both if they agree.
fn expected_version(headers: &HeaderMap, in_body: Option<u64>) -> Result<Option<u64>> {
    if headers.get_all("if-match").iter().nth(1).is_some() {
        return Err(Error::invalid(
            "more than one If-Match header",
            "send the version once, e.g. If-Match: 3",
        )
        .into());
    }
    let Some(tag) = headers.get("if-match") else {
        return Ok(in_body);
    };
    let raw = String::from_utf8_lossy(tag.as_bytes());
    let text = raw.trim();
    // A weak tag (W/"3") never matches: it is not a version.
    let bare = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let version = bare.parse::<u64>().map_err(|_| {
        Error::invalid(
            format!("If-Match {raw:?} is not a task version"),
            "send the task's version number, e.g. If-Match: 3 (or \"3\")",
        )
    })?;
    if let Some(other) = in_body.filter(|v| *v != version) {
        return Err(Error::invalid(
            format!("If-Match says version {version} and the body's version {other}"),
            "send the version once, in If-Match or in the body",
        )
        .into());
    }
    Ok(Some(version))
}

/// Query of `GET /v1/tasks/{id}/brief`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct BriefQuery {
    /// Trim the briefing to this many bytes of JSON (at least 512), least relevant first.
    max_bytes: Option<usize>,
}

/// The briefing: everything needed to pick the task up, most relevant first.
#[utoipa::path(get, path = "/v1/tasks/{id}/brief", tag = "tasks", params(TaskId, BriefQuery),
    responses((status = 200, description = "The briefing", body = BriefOut)))]
async fn brief(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: std::result::Result<Query<BriefQuery>, QueryRejection>,
) -> Result<Json<BriefOut>> {
    let Query(q) = query.map_err(|e| bad_query(e, "use max_bytes"))?;
    let max = q.max_bytes;
    Ok(Json(s.baton.brief(
        &s.auth(&headers, &[Permission::Read])?.actor,
        &id,
        max,
    )?))
}

/// Claim the next tasks for an agent, in priority order; with `wait`, long-poll until work
/// appears (woken by the commit that makes it claimable) or the wait runs out.
#[utoipa::path(post, path = "/v1/tasks/claim", tag = "lease", request_body = ClaimRequest,
    responses((status = 200, description = "The claims made (empty when nothing is claimable)", body = Claims)))]
async fn claim(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<ClaimRequest>,
) -> Result<Json<Claims>> {
    let principal = s.auth(&headers, &[Permission::Work])?;
    let key = idempotency_key(&headers)?;
    let mut req: ClaimRequest = body.parse()?;
    // A key bound to an agent claims only as that agent; the claim is recorded under its name.
    crate::claiming_agent(&principal, &mut req.agent)?;
    let mut actor = principal.actor;
    actor.name = req.agent.clone();
    Ok(Json(s.baton.claim(&actor, key.as_deref(), req).await?))
}

/// Body of `POST /v1/tasks/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteManyBody {
    /// 1 to 100 leased tasks, each with its lease token and result.
    #[serde(deserialize_with = "baton_core::object::list")]
    #[schema(min_items = 1, max_items = 100)]
    completions: Vec<Completion>,
    /// Claim the agent's next work in the same call, after the completions (a claim
    /// request, as for `POST /v1/tasks/claim`): one round trip per task for an agent that
    /// loops.
    #[serde(default, deserialize_with = "baton_core::object::optional")]
    next: Option<ClaimRequest>,
}

/// The answer of `POST /v1/tasks/complete`: one result per completion, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompletionsOut {
    /// `{"task": ...}` for a completion made, `{"error": ...}` for one refused (a lost
    /// lease, a wrong state): the others stand.
    results: Vec<CompletionResult>,
    /// When the call asked for `next`: `{"claims": [...]}`, or `{"error": ...}` when the
    /// claim was refused (the completions stand).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<NextClaim>,
}

/// The outcome of the claim a completion call carried.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum NextClaim {
    /// The claims made (empty when nothing is claimable).
    Claimed(Claims),
    /// Why the claim was refused.
    Refused(baton_core::error::ErrorBody),
}

/// The outcome of one completion.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CompletionResult {
    /// The task, done or in review.
    Completed(Box<TaskOut>),
    /// Why this one was refused.
    Refused(baton_core::error::ErrorBody),
}

/// Complete several leased tasks in one call, acknowledged after one group commit, and
/// optionally claim the next work (`next`). Each completion stands or fails alone: the
/// answer holds one result per item, in order.
#[utoipa::path(post, path = "/v1/tasks/complete", tag = "lease", request_body = CompleteManyBody,
    responses((status = 200, description = "One result per completion, in request order", body = CompletionsOut)))]
async fn complete_many(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<CompleteManyBody>,
) -> Result<Json<CompletionsOut>> {
    let principal = s.auth(&headers, &[Permission::Work])?;
    let key = idempotency_key(&headers)?;
    let mut req: CompleteManyBody = body.parse()?;
    if let Some(next) = &mut req.next {
        crate::claiming_agent(&principal, &mut next.agent)?;
    }
    let done = s
        .baton
        .complete_many(&principal.actor, key.as_deref(), req.completions, req.next)
        .await?;
    let results = done
        .results
        .into_iter()
        .map(|r| match r {
            Ok(task) => CompletionResult::Completed(Box::new(task)),
            Err(e) => CompletionResult::Refused(e.body()),
        })
        .collect();
    let next = done.next.map(|r| match r {
        Ok(claims) => NextClaim::Claimed(claims),
        Err(e) => NextClaim::Refused(e.body()),
    });
    Ok(Json(CompletionsOut { results, next }))
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

/// Runs a lease operation for a handler: authenticates, checks the token is there, calls.
async fn leased(
    s: &AppState,
    actor: Actor,
    headers: &HeaderMap,
    id: &str,
    lease: Option<Value>,
    op: LeaseOp,
) -> Result<Json<LeaseOut>> {
    let Some(token) = text(lease, "lease")? else {
        return Err(Error::invalid(
            "lease is required",
            "send the lease token from your claim as \"lease\"",
        )
        .into());
    };
    let key = idempotency_key(headers)?;
    Ok(Json(
        s.baton
            .lease_op(&actor, key.as_deref(), id, &token, op)
            .await?,
    ))
}

/// Lease operation bodies, named for the OpenAPI document.
type LeasedEmpty = Leased<Empty>;
type LeasedHeartbeat = Leased<Heartbeat>;
type LeasedComplete = Leased<Complete>;
type LeasedFail = Leased<Fail>;
type LeasedReason = Leased<Reason>;

/// A body with no fields of its own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

/// A body with a required reason.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reason {
    /// What the task is blocked on or waiting for.
    #[schema(min_length = 1)]
    reason: String,
}

/// Declares a lease operation route: its handler and its OpenAPI entry.
macro_rules! lease_route {
    ($name:ident, $path:literal, $body:ty, |$b:ident| $op:expr, $doc:literal, $answer:ty, $outcome:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "lease", params(TaskId),
                            request_body = $body,
                            responses((status = 200, description = $outcome, body = $answer)))]
        async fn $name(
            State(s): State<AppState>,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: JsonBody<$body>,
        ) -> Result<Json<LeaseOut>> {
            let actor = s.auth(&headers, &[Permission::Work])?.actor;
            let $b: $body = body.parse()?;
            let lease = $b.lease;
            leased(&s, actor, &headers, &id, lease, $op).await
        }
    };
}

lease_route!(
    start,
    "/v1/tasks/{id}/start",
    LeasedEmpty,
    |b| LeaseOp::Start,
    "Start work on a claimed task: claimed → in_progress.",
    TaskOut,
    "The task, now in_progress"
);
lease_route!(
    heartbeat,
    "/v1/tasks/{id}/heartbeat",
    LeasedHeartbeat,
    |b| LeaseOp::Heartbeat(b.body),
    "Extend the lease and report progress and cost; the answer carries signals to act on.",
    HeartbeatAck,
    "The new expiry and signals"
);
lease_route!(
    release,
    "/v1/tasks/{id}/release",
    LeasedEmpty,
    |b| LeaseOp::Release,
    "Give the task back to the queue without it counting as a failure.",
    TaskOut,
    "The task, ready again"
);
lease_route!(
    complete,
    "/v1/tasks/{id}/complete",
    LeasedComplete,
    |b| LeaseOp::Complete(b.body),
    "Finish the task with its output: → done, or review when review is required.",
    TaskOut,
    "The task, done or in review"
);
lease_route!(
    fail,
    "/v1/tasks/{id}/fail",
    LeasedFail,
    |b| LeaseOp::Fail(b.body),
    "Report a failure: retried after backoff while attempts remain, else failed.",
    TaskOut,
    "The task, ready (retry) or failed"
);
lease_route!(
    block,
    "/v1/tasks/{id}/block",
    LeasedReason,
    |b| LeaseOp::Block {
        reason: b.body.reason
    },
    "Report a blocker: in_progress → blocked; the lease ends.",
    TaskOut,
    "The task, blocked"
);
lease_route!(
    wait,
    "/v1/tasks/{id}/wait",
    LeasedReason,
    |b| LeaseOp::Wait {
        reason: b.body.reason
    },
    "Wait on something outside (a human, a CI run) while keeping the lease.",
    TaskOut,
    "The task, waiting"
);
lease_route!(
    resume,
    "/v1/tasks/{id}/resume",
    LeasedEmpty,
    |b| LeaseOp::Resume,
    "Go back to work after waiting: waiting → in_progress.",
    TaskOut,
    "The task, in_progress"
);

/// Body of the planner and reviewer transitions.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonBody {
    /// Why: recorded on the task as `reason` by cancel, approve and reject; checked but
    /// not recorded by publish, unblock and retry.
    reason: Option<String>,
    /// A reviewer's comment; same as `reason`.
    comment: Option<String>,
    /// Only if the task is still at this version (as `If-Match`); another is 409
    /// `VERSION_CONFLICT`.
    version: Option<u64>,
}

/// Runs a planner or reviewer transition for a handler.
async fn transition(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    op: Op,
    body: JsonBody<ReasonBody>,
) -> Result<Json<TaskOut>> {
    let need: &[Permission] = match op {
        Op::Approve | Op::Reject => &[Permission::Review],
        // A worker may lift a block an agent set (the core says which).
        Op::Unblock => &[Permission::Plan, Permission::Work],
        _ => &[Permission::Plan],
    };
    let principal = s.auth(headers, need)?;
    let body: ReasonBody = body.parse()?;
    let version = expected_version(headers, body.version)?;
    let key = idempotency_key(headers)?;
    let reason = match (body.reason, body.comment) {
        (Some(_), Some(_)) => {
            return Err(ApiError(Error::invalid(
                "both reason and comment are given",
                "give one of them: comment is another name for reason",
            )))
        }
        (reason, comment) => reason.or(comment),
    };
    let actor = &principal.actor;
    if op == Op::Unblock && principal.require(Permission::Plan).is_err() {
        if let Some(r) = &reason {
            baton_core::ops::check_len("reason", r, baton_core::ops::MAX_TEXT)?;
        }
        let agent = principal.key.agent.clone();
        let out = s
            .baton
            .unblock_as_worker(actor, key.as_deref(), id, agent, version);
        return Ok(Json(out.await?));
    }
    Ok(Json(
        s.baton
            .transition_at(actor, key.as_deref(), op, id, reason, version)
            .await?,
    ))
}

/// Declares a planner or reviewer transition route: its handler and its OpenAPI entry.
macro_rules! transition_route {
    ($name:ident, $op:expr, $path:literal, $doc:literal, $outcome:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "review", params(TaskId),
                            request_body = ReasonBody,
                            responses((status = 200, description = $outcome, body = TaskOut)))]
        async fn $name(
            State(s): State<AppState>,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: JsonBody<ReasonBody>,
        ) -> Result<Json<TaskOut>> {
            transition(&s, &headers, &id, $op, body).await
        }
    };
}

transition_route!(
    publish,
    Op::Publish,
    "/v1/tasks/{id}/publish",
    "Publish a draft: draft → ready, or blocked while dependencies are open.",
    "The task, published"
);
transition_route!(
    cancel,
    Op::Cancel,
    "/v1/tasks/{id}/cancel",
    "Cancel a task that is not finished; a live lease ends.",
    "The task, canceled"
);
transition_route!(
    retry,
    Op::Retry,
    "/v1/tasks/{id}/retry",
    "Retry a failed task with a fresh attempt budget (a canceled task stays canceled).",
    "The task, ready"
);
transition_route!(
    unblock,
    Op::Unblock,
    "/v1/tasks/{id}/unblock",
    "Unblock a task blocked by an agent (a planner, or a worker: with a bound key, the agent that blocked it) or by a failed dependency (a planner, overriding it).",
    "The task, ready"
);
transition_route!(
    approve,
    Op::Approve,
    "/v1/tasks/{id}/approve",
    "Approve a task in review: review → done.",
    "The task, done"
);
transition_route!(
    reject,
    Op::Reject,
    "/v1/tasks/{id}/reject",
    "Reject a task in review: back to ready for another attempt, or failed when none remain.",
    "The task, ready or failed"
);

/// Record typed knowledge on a task (decision, discovery, blocker...); `supersedes` replaces
/// an older entry.
#[utoipa::path(post, path = "/v1/tasks/{id}/context", tag = "knowledge", params(TaskId),
    request_body = AddContext,
    responses((status = 201, description = "The new entry", body = ContextOut)))]
async fn add_context(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<AddContext>,
) -> Result<Response> {
    let need = [Permission::Plan, Permission::Work, Permission::Review];
    let actor = s.auth(&headers, &need)?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    let out = s
        .baton
        .add_context(&actor, key.as_deref(), &id, req)
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/{id}/steps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    /// What the step is.
    #[schema(min_length = 1, max_length = 1000)]
    title: String,
    /// More about it.
    details: Option<String>,
    /// The holder's lease, when the agent working the task adds it: no `context_changed`
    /// for itself.
    lease: Option<String>,
}

/// Append a step to a task's plan.
#[utoipa::path(post, path = "/v1/tasks/{id}/steps", tag = "knowledge", params(TaskId),
    request_body = StepBody,
    responses((status = 201, description = "The new step", body = StepOut)))]
async fn add_step(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<StepBody>,
) -> Result<Response> {
    let actor = s
        .auth(&headers, &[Permission::Plan, Permission::Work])?
        .actor;
    let req: StepBody = body.parse()?;
    let key = idempotency_key(&headers)?;
    let out = s
        .baton
        .add_step(
            &actor,
            key.as_deref(),
            &id,
            req.title,
            req.details,
            req.lease,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Body of `POST /v1/tasks/{id}/steps/{step}/done`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DoneBody {
    /// Notes on how it went.
    notes: Option<String>,
    /// The holder's lease, when the agent working the task marks it: no
    /// `context_changed` for itself.
    lease: Option<String>,
}

/// Mark a step done.
#[utoipa::path(post, path = "/v1/tasks/{id}/steps/{step}/done", tag = "knowledge",
    params(TaskId, ("step" = String, Path, description = "The step's id (`stp_…`)")),
    request_body = DoneBody,
    responses((status = 200, description = "The step, done", body = StepOut)))]
async fn done_step(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: JsonBody<DoneBody>,
) -> Result<Json<StepOut>> {
    let actor = s
        .auth(&headers, &[Permission::Plan, Permission::Work])?
        .actor;
    let req: DoneBody = body.parse()?;
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .done_step(&actor, key.as_deref(), &id, &step, req.notes, req.lease)
            .await?,
    ))
}

/// Body of `POST /v1/tasks/{id}/dependencies`: the task waits on `blocker_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DepBody {
    /// The task that must finish first.
    blocker_id: String,
    /// The edge kind (default `blocks`).
    kind: Option<DepKind>,
}

/// Add a dependency: the task waits on `blocker_id` (`blocks`), or a soft link.
#[utoipa::path(post, path = "/v1/tasks/{id}/dependencies", tag = "knowledge", params(TaskId),
    request_body = DepBody,
    responses((status = 200, description = "The edge and the blocked task after it", body = DepOut)))]
async fn add_dependency(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<DepBody>,
) -> Result<Json<DepOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let req: DepBody = body.parse()?;
    let kind = req.kind.unwrap_or(DepKind::Blocks);
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .dependency(&actor, key.as_deref(), &req.blocker_id, &id, kind, true)
            .await?,
    ))
}

/// Query of `DELETE /v1/tasks/{id}/dependencies/{blocker}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct KindQuery {
    /// The edge kind (default `blocks`).
    kind: Option<DepKind>,
}

/// Remove a dependency; a task blocked only by it becomes ready.
#[utoipa::path(delete, path = "/v1/tasks/{id}/dependencies/{blocker}", tag = "knowledge",
    params(TaskId, ("blocker" = String, Path, description = "The blocker's task id"), KindQuery),
    responses((status = 200, description = "The removed edge and the blocked task after it", body = DepOut)))]
async fn remove_dependency(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, blocker)): Path<(String, String)>,
    query: std::result::Result<Query<KindQuery>, QueryRejection>,
) -> Result<Json<DepOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let Query(q) =
        query.map_err(|e| bad_query(e, "use kind: blocks, relates_to or discovered_from"))?;
    let kind = q.kind.unwrap_or(DepKind::Blocks);
    let key = idempotency_key(&headers)?;
    Ok(Json(
        s.baton
            .dependency(&actor, key.as_deref(), &blocker, &id, kind, false)
            .await?,
    ))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Events after this sequence number (default 0: from the start).
    after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
    /// Instead of `after`: the newest this many events (1 to 1000), oldest first.
    last: Option<u32>,
}

/// A page of the workspace's event log, in sequence order.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "Events in sequence order", body = EventsOut)))]
async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let Query(q) =
        query.map_err(|e| bad_query(e, "use after (a sequence number) and limit (1 to 1000)"))?;
    if q.last.is_some() && (q.after.is_some() || q.limit.is_some()) {
        return Err(Error::invalid(
            "last is an alternative to after and limit; both were given",
            "send after (and limit) to read on from an event, or last for the newest events",
        )
        .into());
    }
    let (after, limit) = match q.last {
        Some(last) => {
            let last = baton_core::ops::check_limit("last", last)?;
            (
                s.baton.last_seq(&actor)?.saturating_sub(u64::from(last)),
                last,
            )
        }
        None => (
            s.baton.check_resume(&actor, q.after.unwrap_or(0))?,
            q.limit.unwrap_or(100),
        ),
    };
    Ok(Json(s.baton.events(&actor, after, limit)?))
}

/// Apply a plan: a task tree with refs, context and steps, in one transaction; applying
/// the same plan again changes only what differs. JSON, or the YAML of a plan file with
/// `Content-Type: application/yaml`.
#[utoipa::path(post, path = "/v1/plans", tag = "knowledge", request_body = PlanDoc,
    responses((status = 200, description = "Every task of the plan and what was done to it", body = PlanOut)))]
async fn apply_plan(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<PlanDoc>,
) -> Result<Json<PlanOut>> {
    let actor = s.auth(&headers, &[Permission::Plan])?.actor;
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            matches!(
                t.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml"
            )
        });
    let doc = match yaml {
        true => baton_core::ops::plan::parse(&body.text()?)?,
        false => body
            .parse()
            .map_err(|e| ApiError(baton_core::ops::plan::as_plan_error(e.0)))?,
    };
    let key = idempotency_key(&headers)?;
    Ok(Json(s.baton.apply_plan(&actor, key.as_deref(), doc).await?))
}
