//! Creating, shaping and ending tasks: the planner's operations.

use super::{
    check_json, check_len, check_line, check_tags, graph, project, snap, Ctx, MAX_TEXT, MAX_TITLE,
};
use crate::api::{CreateTask, TaskOut, TasksOut, UpdateTask};
use crate::error::{Code, Error, Result};
use crate::id::new_id;
use crate::model::*;
use crate::state::{self, BlockedReason, Op, Status};
use crate::store::TaskFilter;
use serde_json::{json, Value};
use std::collections::HashSet;

fn check_schema(field: &str, schema: &Option<Value>) -> Result<()> {
    check_json(field, schema)?;
    if let Some(schema) = schema {
        crate::schema::compile(schema).map_err(|e| {
            Error::invalid(
                format!("{field} is not a valid JSON Schema: {e}"),
                "give a JSON Schema object, e.g. {\"type\": \"object\"}",
            )
        })?;
    }
    Ok(())
}

fn check_kind(kind: &str) -> Result<()> {
    if kind.is_empty()
        || kind.len() > 64
        || !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::invalid(
            format!("'{kind}' is not a valid task type"),
            "use a short word: epic, feature, bug, investigation, chore, task",
        ));
    }
    Ok(())
}

/// Validates a create request without touching storage.
pub fn validate_create(req: &CreateTask) -> Result<()> {
    check_line("title", &req.title, MAX_TITLE)?;
    if let Some(parent) = &req.parent_id {
        super::check_ref("parent_id", parent)?;
    }
    for blocker in &req.blocked_by {
        super::check_ref("blocked_by", blocker)?;
    }
    for (field, value) in [
        ("intent", &req.intent),
        ("description", &req.description),
        ("plan", &req.plan),
    ] {
        if let Some(v) = value {
            check_len(field, v, MAX_TEXT)?;
        }
    }
    if let Some(kind) = &req.kind {
        check_kind(kind)?;
    }
    check_tags("labels", &req.labels)?;
    super::scope::check_paths(&req.paths)?;
    super::concurrency::check(req.concurrency_key.as_deref(), req.concurrency_limit)?;
    check_tags("required_capabilities", &req.required_capabilities)?;
    check_json("input", &req.input)?;
    super::check_object("budget", &req.budget, &["max_cost"])?;
    if let Some(policy) = &req.retry_policy {
        super::check_retry_policy(policy)?;
    }
    super::check_duration("timeout", req.timeout)?;
    check_schema("input_schema", &req.input_schema)?;
    check_schema("output_schema", &req.output_schema)?;
    if let Some(max) = req.max_attempts {
        super::check_max_attempts(max)?;
    }
    super::check_duration("lease_ttl", req.lease_ttl)?;
    if let (Some(schema), Some(input)) = (&req.input_schema, &req.input) {
        crate::schema::validate("input", schema, input)?;
    }
    for ms in [req.due_at, req.not_before].into_iter().flatten() {
        crate::time::check_timestamp(ms)?;
    }
    Ok(())
}

/// Creates a task (and its `blocks` edges) as `ready`, `blocked` or `draft`.
pub fn create(
    ctx: &mut Ctx<'_>,
    req: CreateTask,
    idempotency_key: Option<String>,
) -> Result<TaskOut> {
    validate_create(&req)?;
    let project = project(ctx, req.project.as_deref())?;
    if let Some(parent_id) = &req.parent_id {
        let parent = ctx.task(parent_id)?;
        // A parent in review was completed with its children finished: approving it would
        // finish it over a child added now.
        if parent.status.is_closed_to_children() {
            let hint = match parent.status {
                Status::Review => "reject the parent first (it goes back to ready) to add work under it, or create the task without a parent",
                _ => "create the task without a parent, or under an open task",
            };
            return Err(Error::new(
                Code::InvalidTransition,
                format!(
                    "parent {parent_id} is {}; it cannot take new children",
                    parent.status.as_str()
                ),
                hint,
            )
            .with_details(
                json!({ "parent_id": parent_id, "parent_status": parent.status.as_str() }),
            ));
        }
    }
    for blocker in &req.blocked_by {
        ctx.task(blocker)?;
    }
    let mut retry_policy = req.retry_policy.unwrap_or(project.retry_policy);
    if let Some(max) = req.max_attempts {
        retry_policy.max_attempts = max;
    }
    let mut warnings = Vec::new();
    if req.review_required == Some(false) && project.review_required {
        warnings.push(review_not_waived(&project.name));
    }
    let concurrency =
        super::concurrency::check(req.concurrency_key.as_deref(), req.concurrency_limit)?;
    let (concurrency_key, concurrency_limit) = concurrency.unzip();
    let mut task = Task {
        id: new_id("tsk"),
        workspace_id: ctx.ws.to_string(),
        project_id: project.id.clone(),
        parent_id: req.parent_id,
        title: req.title.trim().to_string(),
        intent: req.intent,
        description: req.description,
        plan: req.plan,
        kind: req.kind.unwrap_or_else(|| "task".into()),
        status: Status::Draft,
        blocked_reason: None,
        reason: None,
        priority: req.priority.unwrap_or(0),
        due_at: req.due_at,
        budget: req.budget,
        required_capabilities: check_tags("required_capabilities", &req.required_capabilities)?,
        labels: check_tags("labels", &req.labels)?,
        paths: super::scope::check_paths(&req.paths)?,
        concurrency_key,
        concurrency_limit,
        input: req.input,
        input_schema: req.input_schema,
        output_schema: req.output_schema,
        output: None,
        outcome: None,
        idempotency_key,
        retry_policy,
        timeout: req.timeout,
        lease_ttl: req.lease_ttl.unwrap_or(project.lease_ttl),
        // A project that requires review requires it of every task: a task may add the
        // requirement, not waive it (DESIGN §3).
        review_required: req.review_required.unwrap_or(false) || project.review_required,
        attempts: 0,
        not_before: req.not_before,
        epoch: 0,
        lease: None,
        version: 1,
        created_by: ctx.actor.to_string(),
        updated_by: ctx.actor.to_string(),
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    let mut deps = Vec::new();
    for blocker in req.blocked_by {
        if deps.iter().any(|d: &Dependency| d.blocker_id == blocker) {
            continue;
        }
        deps.push(Dependency {
            workspace_id: ctx.ws.to_string(),
            blocker_id: blocker,
            blocked_id: task.id.clone(),
            kind: DepKind::Blocks,
            created_at: ctx.now,
        });
    }
    // The task is new, so only its parent waits on it: its edges close a cycle only if a
    // blocker waits on the parent. Stored before settling.
    if task.parent_id.is_some() && !deps.is_empty() {
        let blockers: Vec<&str> = deps.iter().map(|d| d.blocker_id.as_str()).collect();
        graph::check_new_blockers(ctx, &task.id, task.parent_id.as_deref(), &blockers)?;
    }
    for dep in &deps {
        ctx.tx.put_dep(dep)?;
    }
    if !req.draft {
        graph::settle(ctx, &mut task)?;
    }
    task.updated_at = ctx.now;
    let body = ctx.put_task(&task)?;
    let deps_json =
        serde_json::to_string(&deps).map_err(|e| Error::new(Code::Internal, e.to_string(), ""))?;
    ctx.emit_raw(
        "task.created",
        Some(&task.id),
        &format!("{{\"task\":{body},\"dependencies\":{deps_json}}}"),
    )?;
    warnings.extend(graph::born_dependency_failed(ctx, &task)?);
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// The warning for `review_required: false` on a task of a project that requires review.
pub(crate) fn review_not_waived(project: &str) -> String {
    format!(
        "review_required stays true: project {project} requires review of all its tasks \
         (turn it off on the project to waive it)"
    )
}

/// Reads a task as it stood once event `seq` was committed (DESIGN §7): the snapshot the
/// newest event about it up to `seq` carries. `NOT_FOUND` if the task did not exist yet
/// (or never did); `INVALID_INPUT` for a number past the newest event.
pub fn get_as_of(ctx: &mut Ctx<'_>, id: &str, seq: u64) -> Result<TaskOut> {
    let last = ctx.tx.last_seq(ctx.ws)?;
    if seq > last {
        return Err(Error::invalid(
            format!("as_of is {seq}, beyond the newest event ({last})"),
            "give the sequence number of an event of this workspace (the events listing shows them)",
        )
        .with_details(json!({ "last_seq": last })));
    }
    super::check_id("task id", id)?;
    let not_yet = || {
        Error::not_found("task", id).with_hint(format!(
            "no event up to {seq} is about task {id}: it was created later, or never"
        ))
    };
    let (at, data) = ctx.tx.task_event_at(ctx.ws, id, seq)?.ok_or_else(not_yet)?;
    let mut data: Value = serde_json::from_str(&data).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("event {at}: {e}"),
            "the event log is damaged",
        )
    })?;
    let task: Task = serde_json::from_value(data["task"].take()).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("event {at} holds no task {id}: {e}"),
            "the event log is damaged",
        )
    })?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// Reads a task.
pub fn get(ctx: &mut Ctx<'_>, id: &str) -> Result<TaskOut> {
    let task = ctx.read_task(id)?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// Lists tasks by filter, a page at a time.
pub fn list(ctx: &mut Ctx<'_>, filter: TaskFilter) -> Result<TasksOut> {
    let limit = super::check_limit("limit", filter.limit)? as usize;
    for (field, value) in [
        ("parent", &filter.parent_id),
        ("label", &filter.label),
        ("project", &filter.project_id),
        ("cursor", &filter.after_id),
    ] {
        if let Some(v) = value {
            super::check_ref(field, v)?;
            // An empty filter, or a label with the separator labels cannot hold, matches
            // nothing by construction: refused, as the event stream refuses it.
            if v.is_empty() || (field == "label" && v.contains(',')) {
                return Err(Error::invalid(
                    format!("{field} filter {v:?} can match no task"),
                    format!("give one {field}, or leave the filter out"),
                ));
            }
        }
    }
    if let Some(cursor) = &filter.after_id {
        if !crate::id::has_prefix(cursor, "tsk") {
            return Err(Error::invalid(
                format!("cursor {cursor} is not one this listing gave"),
                "pass the next_cursor of the previous page, or no cursor for the first",
            ));
        }
    }
    // One past the page tells a full last page from one that has more after it.
    let probe = TaskFilter {
        limit: filter.limit + 1,
        ..filter
    };
    let mut tasks: Vec<Task> = ctx
        .tx
        .list_tasks(ctx.ws, &probe)?
        .into_iter()
        .map(|t| t.view())
        .collect();
    let next_cursor = if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(|t| t.id.clone())
    } else {
        None
    };
    Ok(TasksOut { tasks, next_cursor })
}

/// Refuses a change based on another version of the task than its current one
/// (`VERSION_CONFLICT`, with the current version). The version is read as the caller could
/// have read it: before `Ctx::task` expires a lapsed lease (which bumps the version, and is
/// undone if the call fails).
pub fn check_version(ctx: &mut Ctx<'_>, id: &str, expected: Option<u64>) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let task = ctx.read_task(id)?;
    if expected != task.version {
        return Err(Error::new(
            Code::VersionConflict,
            format!("task {id} is at version {}, not {expected}", task.version),
            "read the task again, decide again, and send the new version",
        )
        .with_details(json!({ "current_version": task.version })));
    }
    Ok(())
}

/// Changes a task's fields. `intent` is immutable; a stale `version` is `VERSION_CONFLICT`.
pub fn update(ctx: &mut Ctx<'_>, id: &str, req: UpdateTask) -> Result<TaskOut> {
    // The version is checked against what the caller could have read: before `Ctx::task`
    // expires a lapsed lease (which bumps the version, and is undone if this call fails).
    check_version(ctx, id, req.version)?;
    let mut task = ctx.task(id)?;
    let before = task.clone();
    state::check_task(&task, Op::Update)?;
    if req.intent.is_some() {
        return Err(Error::invalid(
            "intent is immutable once a task is created",
            "record a changed understanding as a context entry (type decision or rationale)",
        ));
    }
    if let Some(title) = req.title {
        check_line("title", &title, MAX_TITLE)?;
        task.title = title.trim().to_string();
    }
    for (field, value, slot) in [
        ("description", req.description, &mut task.description),
        ("plan", req.plan, &mut task.plan),
    ] {
        if let Some(v) = value {
            if let Some(text) = &v {
                check_len(field, text, MAX_TEXT)?;
            }
            *slot = v;
        }
    }
    if let Some(kind) = req.kind {
        check_kind(&kind)?;
        task.kind = kind;
    }
    if let Some(p) = req.priority {
        task.priority = p;
    }
    if let Some(due) = req.due_at {
        task.due_at = due.map(crate::time::check_timestamp).transpose()?;
    }
    if let Some(paths) = req.paths {
        task.paths = super::scope::check_paths(&paths)?;
    }
    super::concurrency::update(&mut task, req.concurrency_key, req.concurrency_limit)?;
    if let Some(labels) = req.labels {
        task.labels = check_tags("labels", &labels)?;
    }
    if let Some(caps) = req.required_capabilities {
        task.required_capabilities = check_tags("required_capabilities", &caps)?;
    }
    super::check_duration("lease_ttl", req.lease_ttl)?;
    if let Some(ttl) = req.lease_ttl {
        task.lease_ttl = ttl;
    }
    if let Some(timeout) = req.timeout {
        super::check_duration("timeout", timeout)?;
        task.timeout = timeout;
    }
    if let Some(max) = req.max_attempts {
        super::check_max_attempts(max)?;
        // A task not running (nor in review, which may simply be approved) begins attempt
        // `attempts + 1` when next claimed; an ended one starts over if it is retried.
        let waits_for_another = !task.status.is_leased() && task.status != Status::Review;
        let least = task.attempts + u32::from(waits_for_another);
        if max < least && !task.status.is_terminal() {
            return Err(Error::invalid(
                format!(
                    "max_attempts {max} is below what the task has used: {} attempts made{}",
                    task.attempts,
                    if waits_for_another {
                        ", and it waits for another"
                    } else {
                        ""
                    }
                ),
                format!("give max_attempts {least} or more; to stop the task, cancel it"),
            ));
        }
        task.retry_policy.max_attempts = max;
    }
    let mut warnings = Vec::new();
    warnings.extend(super::concurrency::over_limit(ctx, &before, &task)?);
    if let Some(r) = req.review_required {
        // Only a waiver needs the project: adding review is always allowed.
        let requiring = match r {
            true => None,
            false => ctx
                .tx
                .project(ctx.ws, &task.project_id)?
                .filter(|p| p.review_required),
        };
        match requiring {
            Some(p) => warnings.push(review_not_waived(&p.name)),
            None => task.review_required = r,
        }
    }
    if let Some(input) = req.input {
        check_json("input", &input)?;
        // Checked as at creation: an input the task's schema refuses is never stored.
        if let (Some(schema), Some(input)) = (&task.input_schema, &input) {
            crate::schema::validate("input", schema, input)?;
        }
        task.input = input;
    }
    if let Some(schema) = req.output_schema {
        check_schema("output_schema", &schema)?;
        task.output_schema = schema;
    }
    if let Some(budget) = req.budget {
        super::check_object("budget", &budget, &["max_cost"])?;
        task.budget = budget;
    }
    // A change to what the task already is changes nothing: no new version, no event.
    if task != before {
        ctx.save(&mut task, "task.updated", &[])?;
    }
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// draft → ready, or blocked while a blocker is not done.
pub fn publish(ctx: &mut Ctx<'_>, id: &str) -> Result<TaskOut> {
    let mut task = ctx.task(id)?;
    state::check_task(&task, Op::Publish)?;
    graph::settle(ctx, &mut task)?;
    ctx.save(&mut task, "task.published", &[])?;
    let warnings = graph::born_dependency_failed(ctx, &task)?
        .into_iter()
        .collect();
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// Any non-terminal state → canceled, ending any live run. The task's open descendants
/// are canceled with it, in the same transaction: their work was part of the canceled
/// work, and left open they would still be claimed (and would hold the parent open).
/// Dependents of each are told.
pub fn cancel(ctx: &mut Ctx<'_>, id: &str, reason: Option<String>) -> Result<TaskOut> {
    let mut task = ctx.task(id)?;
    state::check_task(&task, Op::Cancel)?;
    // Found first, so that ending one does not re-settle another about to end.
    let mut open = Vec::new();
    let mut parents = vec![id.to_string()];
    while let Some(parent) = parents.pop() {
        for child in children_of(ctx, &parent)? {
            // A finished child may still have open children (a forced completion).
            parents.push(child.id.clone());
            if !child.status.is_terminal() {
                open.push(child.id);
            }
        }
    }
    let ending: HashSet<String> = open.iter().cloned().chain([id.to_string()]).collect();
    end_canceled(ctx, &mut task, reason, &ending)?;
    let mut descendants = Vec::with_capacity(open.len());
    for child in open {
        // Read as it is now, through the same path as any change: a lease that lapsed is
        // expired first, and may have used up the task's last attempt.
        let mut child = ctx.task(&child)?;
        if child.status.is_terminal() {
            continue;
        }
        let why = format!("its ancestor {id} was canceled");
        end_canceled(ctx, &mut child, Some(why), &ending)?;
        descendants.push(child.id);
    }
    let mut warnings = Vec::new();
    if !descendants.is_empty() {
        warnings.push(format!(
            "also canceled {} open descendant task(s): {}",
            descendants.len(),
            descendants.join(", ")
        ));
    }
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// Cancels one task: its live run ends `canceled` (the holder's next lease operation says
/// so), the task is saved with `task.canceled`, and its dependents are re-settled, but for
/// those in `ending` (canceled by the same call).
fn end_canceled(
    ctx: &mut Ctx<'_>,
    task: &mut Task,
    reason: Option<String>,
    ending: &HashSet<String>,
) -> Result<()> {
    let mut extra = Vec::new();
    if let Some(lease) = task.lease.take() {
        if let Some(mut run) = ctx.tx.run(ctx.ws, &task.id, &lease.run_id)? {
            run.status = RunStatus::Canceled;
            run.ended_at = Some(ctx.now);
            ctx.tx.put_run(&run)?;
            extra.push(snap("run", &run));
        }
    }
    task.status = Status::Canceled;
    task.blocked_reason = None;
    task.reason = reason;
    ctx.save(task, "task.canceled", &extra)?;
    graph::on_blocker_ended_but(ctx, &task.id, ending)
}

/// Every child of `parent`, whatever its status, read page by page before any is changed.
fn children_of(ctx: &mut Ctx<'_>, parent: &str) -> Result<Vec<Task>> {
    let filter = TaskFilter {
        parent_id: Some(parent.to_string()),
        ..Default::default()
    };
    let mut out = Vec::new();
    super::each_task(ctx, filter, |_, child| {
        out.push(child);
        Ok(())
    })?;
    Ok(out)
}

/// failed → ready (or blocked on dependencies), with a fresh set of attempts.
pub fn retry(ctx: &mut Ctx<'_>, id: &str) -> Result<TaskOut> {
    let mut task = ctx.task(id)?;
    state::check_task(&task, Op::Retry)?;
    // A finished parent has no open work left to contain this one (as it takes no new
    // children): the parent is retried first, if it failed, or the work goes elsewhere.
    if let Some(parent_id) = &task.parent_id {
        let parent = ctx.task(parent_id)?;
        if parent.status.is_closed_to_children() {
            return Err(Error::new(
                Code::InvalidTransition,
                format!(
                    "cannot retry task {id}: its parent {parent_id} is {}",
                    parent.status.as_str()
                ),
                "retry the parent first if it failed (reject it if it is in review); otherwise \
                 create a new task for the work",
            )
            .with_details(
                json!({ "parent_id": parent_id, "parent_status": parent.status.as_str() }),
            ));
        }
    }
    task.attempts = 0;
    task.not_before = None;
    // The failure's reason stays with its run (the brief shows it), not on the task anew.
    task.reason = None;
    graph::settle(ctx, &mut task)?;
    ctx.save(&mut task, "task.retried", &[])?;
    // Its dependents were blocked by its failure; now they wait on it again.
    graph::on_blocker_ended(ctx, id)?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// Who unblocks: a planner (any blocked task), or a worker (a task an agent blocked, and
/// with a key bound to an agent, only one that agent blocked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblocker {
    /// A planner or admin.
    Planner,
    /// A worker, bound to this agent if `Some`.
    Worker(Option<String>),
}

/// blocked → ready: an agent's blocker is resolved, or a planner overrides a failed dependency.
pub fn unblock(ctx: &mut Ctx<'_>, id: &str, by: &Unblocker) -> Result<TaskOut> {
    let mut task = ctx.task(id)?;
    state::check(id, task.status, Op::Unblock)?;
    if let Unblocker::Worker(agent) = by {
        check_worker_unblocks(ctx, &task, agent.as_deref())?;
    }
    match task.blocked_reason {
        Some(BlockedReason::Dependencies) => {
            return Err(Error::new(
                Code::InvalidTransition,
                format!("task {id} is blocked on its dependencies"),
                "it is released automatically when its blockers are done; or remove the dependency that holds it",
            )
            .with_details(json!({ "status": "blocked", "blocked_reason": "dependencies", "allowed": ["update", "cancel"] })))
        }
        Some(BlockedReason::DependencyFailed) => {
            // The planner proceeds without the failed blockers: their `blocks` edges become
            // `relates_to`, so no later settle blocks the task on them again.
            let deps = ctx.tx.deps_of(ctx.ws, id)?;
            for dep in &deps {
                if dep.kind != DepKind::Blocks {
                    continue;
                }
                let failed = ctx.tx.task(ctx.ws, &dep.blocker_id)?.is_some_and(|b| matches!(b.status, Status::Failed | Status::Canceled));
                if failed {
                    ctx.tx.delete_dep(ctx.ws, &dep.blocker_id, id, DepKind::Blocks)?;
                    ctx.emit("dependency.removed", Some(id), json!({ "dependency": dep }))?;
                    // A soft link that exists already stays as it is.
                    let linked = deps.iter().any(|d| d.kind == DepKind::RelatesTo && d.blocker_id == dep.blocker_id);
                    if !linked {
                        let waived = Dependency { kind: DepKind::RelatesTo, created_at: ctx.now, ..dep.clone() };
                        ctx.tx.put_dep(&waived)?;
                        ctx.emit("dependency.added", Some(id), json!({ "dependency": waived }))?;
                    }
                }
            }
            graph::settle(ctx, &mut task)?;
        }
        _ => graph::settle(ctx, &mut task)?,
    }
    task.reason = None;
    ctx.save(&mut task, "task.unblocked", &[])?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// A worker may lift an agent's block (DESIGN §3: "a planner or agent unblocks"), not
/// override a failed dependency (a planner's decision); a bound key only its agent's.
fn check_worker_unblocks(ctx: &mut Ctx<'_>, task: &Task, agent: Option<&str>) -> Result<()> {
    let forbidden = |message: String| {
        Err(Error::new(
            Code::Forbidden,
            message,
            "ask a planner to unblock it (a planner or admin key may)",
        ))
    };
    if task.blocked_reason != Some(BlockedReason::Agent) {
        return forbidden(format!(
            "task {} is blocked on its dependencies, not by an agent: only a planner decides \
             to go on without them",
            task.id
        ));
    }
    let Some(agent) = agent else {
        return Ok(());
    };
    let blocked_by = match ctx.tx.runs_of(ctx.ws, &task.id, 1)?.pop() {
        Some(run) => ctx.tx.agent(ctx.ws, &run.agent_id)?.map(|a| a.name),
        None => None,
    };
    if blocked_by.as_deref() != Some(agent) {
        return forbidden(format!(
            "task {} was blocked by agent {}, not by {agent}, whose key this is",
            task.id,
            blocked_by.as_deref().unwrap_or("(unknown)")
        ));
    }
    Ok(())
}

/// One task of a batch: a client-chosen `ref` and the fields of a create; `parent_id` and
/// `blocked_by` may name refs of the same batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchItem {
    /// Unique within the batch.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The task.
    #[serde(flatten)]
    pub task: CreateTask,
}

/// OpenAPI: the schema of a create with a required `ref` added (by hand, like the
/// deserializer, because flattening would lose `additionalProperties: false`).
impl utoipa::PartialSchema for BatchItem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let mut schema = <CreateTask as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.insert(
                "ref".into(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Unique within the batch; parent_id and blocked_by may name it",
                    ))
                    .into(),
            );
            object.required.insert(0, "ref".into());
            object.description =
                Some("A task of a batch: a create with a client-chosen ref".into());
        }
        schema
    }
}

impl utoipa::ToSchema for BatchItem {}

// By hand: `#[serde(flatten)]` would silently drop unknown fields, and a misspelt field must
// be an error, as it is on a single create.
impl<'de> serde::Deserialize<'de> for BatchItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::deserialize(d)?;
        let Some(Value::String(reference)) = fields.remove("ref") else {
            return Err(D::Error::custom("every batch task needs a string \"ref\""));
        };
        let task = serde_json::from_value(Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(BatchItem { reference, task })
    }
}

/// Output of a batch: the tasks in request order, each with its ref.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchOut {
    /// One entry per item, in request order.
    pub tasks: Vec<BatchEntry>,
}

/// One created task of a batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchEntry {
    /// The item's ref.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The task created for it.
    pub task: Task,
    /// Things the caller should know about this item (as a single create's `warnings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Creates a whole graph in one transaction. Items are created parents and blockers first;
/// a ref cycle is `CYCLE`, an unknown ref or id `NOT_FOUND`, and any failure undoes all.
pub fn create_batch(ctx: &mut Ctx<'_>, items: Vec<BatchItem>) -> Result<BatchOut> {
    if items.is_empty() || items.len() > 1000 {
        return Err(Error::invalid(
            "a batch holds 1 to 1000 tasks",
            "split larger graphs into plans or several batches",
        ));
    }
    let mut index = std::collections::HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let r = &item.reference;
        if !super::is_batch_ref(r) {
            return Err(Error::invalid(
                format!("ref {r:?} is not valid"),
                "give every task a unique ref of 1 to 200 printable characters, not shaped \
                 like a task id (tsk_…)",
            ));
        }
        if index.insert(r.clone(), i).is_some() {
            return Err(Error::invalid(
                format!("ref '{r}' appears more than once"),
                "give every task a unique ref",
            ));
        }
    }
    let edges = |item: &BatchItem| -> Vec<usize> {
        item.task
            .parent_id
            .iter()
            .chain(item.task.blocked_by.iter())
            .filter_map(|r| index.get(r).copied())
            .collect()
    };
    // Depth-first order: every item after the items it names.
    let (mut order, mut mark) = (Vec::with_capacity(items.len()), vec![0u8; items.len()]);
    fn visit(
        i: usize,
        items: &[BatchItem],
        edges: &dyn Fn(&BatchItem) -> Vec<usize>,
        mark: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        match mark[i] {
            2 => return Ok(()),
            1 => {
                path.push(items[i].reference.clone());
                return Err(Error::new(
                    Code::Cycle,
                    format!(
                        "batch refs form a cycle (each names the next as its parent or blocker): {}",
                        path.join(" → ")
                    ),
                    "a batch creates each task after its parent and its blockers; remove one edge \
                     of the path (a parent blocked by its own child: add that edge with \
                     `POST /v1/tasks/{id}/dependencies` once both exist)",
                )
                .with_details(json!({ "path": path })));
            }
            _ => {}
        }
        mark[i] = 1;
        path.push(items[i].reference.clone());
        for next in edges(&items[i]) {
            visit(next, items, edges, mark, order, path)?;
        }
        path.pop();
        mark[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..items.len() {
        visit(i, &items, &edges, &mut mark, &mut order, &mut Vec::new())?;
    }
    let mut ids: Vec<Option<String>> = vec![None; items.len()];
    let mut warnings: Vec<Vec<String>> = vec![Vec::new(); items.len()];
    for i in order {
        let mut req = items[i].task.clone();
        let resolve = |r: &String| {
            index
                .get(r)
                .and_then(|j| ids[*j].clone())
                .unwrap_or_else(|| r.clone())
        };
        req.parent_id = req.parent_id.as_ref().map(resolve);
        req.blocked_by = req.blocked_by.iter().map(resolve).collect();
        let out = match create(ctx, req, None) {
            Ok(out) => out,
            Err(e) => {
                let known: Vec<(&str, &str)> = ids
                    .iter()
                    .zip(&items)
                    .filter_map(|(id, item)| Some((id.as_deref()?, item.reference.as_str())))
                    .collect();
                return Err(in_refs(ctx, e, &known, &items[i].reference)?);
            }
        };
        ids[i] = Some(out.task.id);
        warnings[i] = out.warnings;
    }
    let mut tasks = Vec::with_capacity(items.len());
    for ((item, id), warnings) in items.iter().zip(ids).zip(warnings) {
        let id = id.unwrap_or_default();
        let task = ctx
            .tx
            .task(ctx.ws, &id)?
            .ok_or_else(|| Error::not_found("task", &id))?;
        tasks.push(BatchEntry {
            reference: item.reference.clone(),
            task: task.view(),
            warnings,
        });
    }
    Ok(BatchOut { tasks })
}

/// A failure of the batch's or plan's task `failing`, told with its ref. A cycle's path is
/// told in refs too: it names the tasks of the batch by ids the failure undoes (`known`: id
/// and ref of each created before; the failing task's own id is the one not stored). Tasks
/// from outside keep their ids.
pub(super) fn in_refs(
    ctx: &mut Ctx<'_>,
    mut e: Error,
    known: &[(&str, &str)],
    failing: &str,
) -> Result<Error> {
    let path = e
        .details
        .as_ref()
        .and_then(|d| d["path"].as_array())
        .cloned()
        .filter(|_| e.code == Code::Cycle);
    if let Some(path) = path {
        let mut named = Vec::with_capacity(path.len());
        for step in path {
            let id = step.as_str().unwrap_or_default();
            let reference = match known.iter().find(|(known, _)| *known == id) {
                Some((_, reference)) => reference.to_string(),
                None if ctx.tx.task(ctx.ws, id)?.is_none() => failing.to_string(),
                None => id.to_string(),
            };
            named.push(reference);
        }
        e.message = format!("dependency would create a cycle: {}", named.join(" → "));
        e.details = Some(json!({ "path": named }));
    }
    Ok(with_ref(e, failing))
}

/// `e` told as a failure of the batch's or plan's task `reference`.
pub(super) fn with_ref(mut e: Error, reference: &str) -> Error {
    e.message = format!("task '{reference}': {}", e.message);
    e
}
