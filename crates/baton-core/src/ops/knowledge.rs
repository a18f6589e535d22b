//! What agents learn and plan on a task: typed, immutable context entries (with supersede)
//! and ordered steps. Adding either, or marking a step done, raises `context_changed` for
//! the lease holder unless the holder did it (sending its lease).

use super::{check_len, check_text, snap, Ctx, MAX_TEXT, MAX_TITLE};
use crate::api::{AddContext, ContextOut, StepOut};
use crate::error::{Code, Error, Result};
use crate::id::{new_id, sha256_hex};
use crate::model::*;
use serde_json::json;

/// Most steps on one task.
pub const MAX_STEPS: usize = 500;
/// Most context entries on one task.
pub const MAX_CONTEXT: usize = 2_000;

/// Marks the task as changed for its lease holder, unless the holder made the change
/// (proved by presenting the current lease token). A token that is not the current lease
/// is `LEASE_LOST`: its agent believes it holds a task it no longer does.
pub(super) fn touch(
    ctx: &mut Ctx<'_>,
    task: &mut Task,
    lease_token: Option<&str>,
) -> Result<Option<Run>> {
    let run_id = holder_run(ctx, task, lease_token)?;
    task.version += 1;
    let Some(run_id) = run_id else {
        return Ok(None);
    };
    let Some(mut run) = ctx.tx.run(ctx.ws, &task.id, &run_id)? else {
        return Ok(None);
    };
    run.sees_own_change(task.version);
    ctx.tx.put_run(&run)?;
    Ok(Some(run))
}

/// The run of the lease `lease_token` names, if one was sent: refused `KILLED` if a kill
/// switch revoked it, `LEASE_LOST` if it is not the task's current lease otherwise.
pub(super) fn holder_run(
    ctx: &mut Ctx<'_>,
    task: &Task,
    lease_token: Option<&str>,
) -> Result<Option<String>> {
    match (lease_token, &task.lease) {
        (None, _) => Ok(None),
        (Some(token), Some(lease)) if lease.token_sha256 == sha256_hex(token) => {
            super::lease::check_bound_holder(ctx, &task.id, lease)?;
            Ok(Some(lease.run_id.clone()))
        }
        (Some(token), _) => {
            if let Some(e) = super::lease::revoked_by_kill(ctx, task, token)? {
                return Err(e);
            }
            Err(Error::new(
                Code::LeaseLost,
                format!("that lease is not the current lease of task {}", task.id),
                "your lease ended (expired, released or superseded): stop work on this task; \
                 to record this anyway, send it without the lease",
            )
            .with_details(json!({"status": task.status.as_str(), "epoch": task.epoch})))
        }
    }
}

/// Records a context entry on a task.
pub fn add_context(ctx: &mut Ctx<'_>, task_id: &str, req: AddContext) -> Result<ContextOut> {
    check_context_input(&req.kind, &req.content)?;
    let mut task = ctx.task(task_id)?;
    let existing = ctx.tx.context_of(ctx.ws, task_id)?;
    if existing.len() >= MAX_CONTEXT {
        return Err(Error::new(
            Code::TooLarge,
            format!("task {task_id} already has {MAX_CONTEXT} context entries"),
            "supersede old entries are kept too; summarize into a new task",
        ));
    }
    if let Some(old) = &req.supersedes {
        if !existing.iter().any(|e| &e.id == old) {
            return Err(Error::new(
                Code::NotFound,
                format!("context entry {old} not found on task {task_id}"),
                "an entry can only supersede an older entry of the same task",
            ));
        }
        // One line of succession: two live successors of one entry would both reach the
        // briefing, each claiming to be the current word.
        if let Some(newer) = existing
            .iter()
            .find(|e| e.supersedes.as_deref() == Some(old.as_str()))
        {
            return Err(Error::invalid(
                format!("context entry {old} is already superseded by {}", newer.id),
                format!("supersede {}, the entry that replaced it", newer.id),
            )
            .with_details(json!({ "superseded_by": newer.id })));
        }
    }
    let run = touch(ctx, &mut task, req.lease.as_deref())?;
    let entry = ContextEntry {
        id: new_id("ctx"),
        workspace_id: ctx.ws.to_string(),
        task_id: task_id.to_string(),
        kind: req.kind,
        content: req.content,
        supersedes: req.supersedes,
        run_id: run.as_ref().map(|r| r.id.clone()),
        created_by: ctx.actor.to_string(),
        created_at: ctx.now,
    };
    ctx.tx.put_context(&entry)?;
    let mut extra = vec![snap("context", &entry)];
    if let Some(run) = run {
        extra.push(snap("run", &run));
    }
    ctx.save_unversioned(&mut task, "context.added", &extra)?;
    Ok(ContextOut { context: entry })
}

/// Checks a context entry's own fields: a known type, and content within its limits.
pub fn check_context_input(kind: &str, content: &str) -> Result<()> {
    if !CONTEXT_TYPES.contains(&kind) {
        return Err(Error::invalid(
            format!("unknown context type '{kind}'"),
            format!("use one of: {}", CONTEXT_TYPES.join(", ")),
        ));
    }
    check_text("content", content, MAX_TEXT)
}

/// Checks a step's own fields: a one-line title, details within their limit.
pub fn check_step_input(title: &str, details: Option<&str>) -> Result<()> {
    super::check_line("title", title, MAX_TITLE)?;
    if let Some(d) = details {
        check_len("details", d, MAX_TEXT)?;
    }
    Ok(())
}

/// Appends a step to a task's plan; `lease` when its holder adds it.
pub fn add_step(
    ctx: &mut Ctx<'_>,
    task_id: &str,
    title: &str,
    details: Option<String>,
    lease: Option<&str>,
) -> Result<StepOut> {
    check_step_input(title, details.as_deref())?;
    let mut task = ctx.task(task_id)?;
    crate::state::check_open(task_id, task.status, "add a step to")?;
    let steps = ctx.tx.steps_of(ctx.ws, task_id)?;
    if steps.len() >= MAX_STEPS {
        return Err(Error::new(
            Code::TooLarge,
            format!("task {task_id} has {MAX_STEPS} steps"),
            "split the task",
        ));
    }
    let step = Step {
        id: new_id("stp"),
        workspace_id: ctx.ws.to_string(),
        task_id: task_id.to_string(),
        position: steps.len() as u32 + 1,
        title: title.trim().to_string(),
        details,
        done: false,
        notes: None,
        done_at: None,
    };
    let run = touch(ctx, &mut task, lease)?;
    ctx.tx.put_step(&step)?;
    let mut extra = vec![snap("step", &step)];
    extra.extend(run.map(|run| snap("run", &run)));
    ctx.save_unversioned(&mut task, "step.added", &extra)?;
    Ok(StepOut { step })
}

/// Marks a step done; `lease` when its holder marks it.
pub fn done_step(
    ctx: &mut Ctx<'_>,
    task_id: &str,
    step_id: &str,
    notes: Option<String>,
    lease: Option<&str>,
) -> Result<StepOut> {
    super::check_id("step id", step_id)?;
    if let Some(n) = &notes {
        check_len("notes", n, MAX_TEXT)?;
    }
    let mut task = ctx.task(task_id)?;
    // A finished task's plan is its record: as no step is added, none is marked.
    crate::state::check_open(task_id, task.status, "mark a step of")?;
    // By id, or by the position a briefing shows (1 for the first step).
    let position: Option<u32> = step_id.parse().ok();
    let mut step = ctx
        .tx
        .steps_of(ctx.ws, task_id)?
        .into_iter()
        .find(|s| s.id == step_id || Some(s.position) == position)
        .ok_or_else(|| {
            Error::new(
                Code::NotFound,
                format!("task {task_id} has no step {step_id}"),
                "name the step by its id (stp_…) or its position; the task's brief lists both",
            )
            .with_details(json!({ "kind": "step", "id": step_id }))
        })?;
    let event = if step.done {
        if notes.is_none() || notes == step.notes {
            // Done already: nothing changes, but a lease sent must still be the holder's.
            holder_run(ctx, &task, lease)?;
            return Ok(StepOut { step });
        }
        // Done already, with other notes: they replace the old ones (the step stays done
        // as of when it was first marked), rather than being dropped unheard.
        "step.updated"
    } else {
        step.done = true;
        step.done_at = Some(ctx.now);
        "step.done"
    };
    let run = touch(ctx, &mut task, lease)?;
    step.notes = notes;
    ctx.tx.put_step(&step)?;
    let mut extra = vec![snap("step", &step)];
    extra.extend(run.map(|run| snap("run", &run)));
    ctx.save_unversioned(&mut task, event, &extra)?;
    Ok(StepOut { step })
}
