//! The task graph: dependencies, cycle checks, and the automatic moves between `ready` and
//! `blocked` that follow from them (DAG release and `dependency_failed` propagation), all
//! inside the transaction of the change that caused them.

use super::Ctx;
use crate::api::DepOut;
use crate::error::{Code, Error, Result};
use crate::model::*;
use crate::state::{BlockedReason, Status};
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// Where a task waiting to run should stand given its `blocks` dependencies:
/// `None` means ready, otherwise blocked for the reason given.
pub fn blocking_reason(ctx: &mut Ctx<'_>, task_id: &str) -> Result<Option<BlockedReason>> {
    Ok(match ctx.tx.unfinished_blocker(ctx.ws, task_id)? {
        None => None,
        Some(Status::Failed | Status::Canceled) => Some(BlockedReason::DependencyFailed),
        Some(_) => Some(BlockedReason::Dependencies),
    })
}

/// Puts a task that is about to wait for a claimer into `ready` or `blocked`, according to
/// its dependencies. Does not save.
pub fn settle(ctx: &mut Ctx<'_>, task: &mut Task) -> Result<()> {
    match blocking_reason(ctx, &task.id)? {
        None => {
            task.status = Status::Ready;
            task.blocked_reason = None;
        }
        Some(reason) => {
            task.status = Status::Blocked;
            task.blocked_reason = Some(reason);
        }
    }
    Ok(())
}

/// After `task_id` ended (done, failed or canceled), moves each dependent that waits on it:
/// released to `ready` when its last blocker is done, or blocked with `dependency_failed`.
pub fn on_blocker_ended(ctx: &mut Ctx<'_>, task_id: &str) -> Result<()> {
    for dep in ctx.tx.dependents_of(ctx.ws, task_id)? {
        if dep.kind != DepKind::Blocks {
            continue;
        }
        reevaluate(ctx, &dep.blocked_id)?;
    }
    Ok(())
}

/// Re-settles a task waiting on dependencies (or made ready when a new blocker appeared),
/// saving and announcing it only if its standing changed.
pub fn reevaluate(ctx: &mut Ctx<'_>, task_id: &str) -> Result<()> {
    // Locked before its blockers are read: of two transactions ending two of its blockers,
    // the second waits here and then sees the first's commit.
    let Some(mut task) = ctx.tx.task_for_update(ctx.ws, task_id)? else {
        return Ok(());
    };
    let waits = task.status == Status::Ready
        || (task.status == Status::Blocked && task.blocked_reason != Some(BlockedReason::Agent));
    if !waits {
        return Ok(());
    }
    let before = (task.status, task.blocked_reason);
    settle(ctx, &mut task)?;
    if (task.status, task.blocked_reason) == before {
        return Ok(());
    }
    let kind = match (task.status, task.blocked_reason) {
        (Status::Ready, _) => "task.released",
        (_, Some(BlockedReason::DependencyFailed)) => "task.dependency_failed",
        _ => "task.blocked",
    };
    ctx.save(&mut task, kind, &[])
}

/// Finds a path from `from` to a task in `to` along "is waited on by" edges, if any: from a
/// task to the tasks it `blocks`, and from a task to its parent (a parent is claimable only
/// once its children are finished, so it waits on each of them). A `done` task ends no
/// wait of its parent's and waits on none of its children, so parent edges through one are
/// not followed; `blocks` edges are, whatever the status, so those stay acyclic as before.
/// `from_parent` is `from`'s parent, given because `from` may not be stored yet. The path
/// is in blocking order: each task waits on the one before it.
fn wait_path(
    ctx: &mut Ctx<'_>,
    from: &str,
    from_parent: Option<&str>,
    to: &[&str],
) -> Result<Option<Vec<String>>> {
    if to.is_empty() {
        return Ok(None);
    }
    // Depth-first, remembering how each task was reached, and whether as a parent.
    let mut came_from: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::from([from.to_string()]);
    let mut stack = vec![(from.to_string(), false)];
    while let Some((current, as_parent)) = stack.pop() {
        let (parent, done) = if current == from {
            (from_parent.map(str::to_string), false)
        } else {
            match ctx.tx.task(ctx.ws, &current)? {
                Some(t) => (t.parent_id, t.status == Status::Done),
                None => (None, false),
            }
        };
        if as_parent && done {
            continue;
        }
        if to.contains(&current.as_str()) {
            let mut path = vec![current.clone()];
            let mut at = current;
            while let Some(prev) = came_from.get(&at) {
                path.push(prev.clone());
                at = prev.clone();
            }
            path.reverse();
            return Ok(Some(path));
        }
        let dependents = ctx.tx.dependents_of(ctx.ws, &current)?;
        let waiters = dependents
            .into_iter()
            .filter(|d| d.kind == DepKind::Blocks)
            .map(|d| (d.blocked_id, false))
            .chain(parent.filter(|_| !done).map(|p| (p, true)));
        for (waiter, as_parent) in waiters {
            if seen.insert(waiter.clone()) {
                came_from.insert(waiter.clone(), current.clone());
                stack.push((waiter, as_parent));
            }
        }
    }
    Ok(None)
}

/// Rejects blockers of `task` (whose parent is `parent`) that already wait on it, directly
/// or through others, naming the path of the cycle an edge would close. A cycle may pass
/// through parents: a task blocked by its own parent, or by anything that waits on its
/// parent, could never run, and neither could the parent.
pub fn check_new_blockers(
    ctx: &mut Ctx<'_>,
    task: &str,
    parent: Option<&str>,
    blockers: &[&str],
) -> Result<()> {
    if blockers.contains(&task) {
        return Err(cycle_error(vec![task.to_string(), task.to_string()]));
    }
    if let Some(mut path) = wait_path(ctx, task, parent, blockers)? {
        // path runs task → … → blocker in blocking order; the new edge closes it.
        path.push(task.to_string());
        return Err(cycle_error(path));
    }
    Ok(())
}

fn cycle_error(path: Vec<String>) -> Error {
    Error::new(
        Code::Cycle,
        format!("dependency would create a cycle: {}", path.join(" → ")),
        "a task cannot wait on itself, directly, through others or through its parent (a \
         parent waits on its children); remove one edge of the path",
    )
    .with_details(json!({ "path": path }))
}

/// Adds an edge. A `blocks` edge is checked for cycles and may block the waiting task.
pub fn add_dep(
    ctx: &mut Ctx<'_>,
    blocker_id: &str,
    blocked_id: &str,
    kind: DepKind,
) -> Result<DepOut> {
    ctx.task(blocker_id)?;
    let blocked = ctx.task(blocked_id)?;
    if kind == DepKind::Blocks {
        crate::state::check_open(blocked_id, blocked.status, "add a blocker to")?;
        check_new_blockers(ctx, blocked_id, blocked.parent_id.as_deref(), &[blocker_id])?;
    } else if blocker_id == blocked_id {
        return Err(Error::invalid(
            "a task cannot relate to itself",
            "name two different tasks",
        ));
    }
    let existing = ctx.tx.deps_of(ctx.ws, blocked_id)?;
    let dep = match existing
        .into_iter()
        .find(|d| d.blocker_id == blocker_id && d.kind == kind)
    {
        Some(dep) => dep, // already there: adding it again changes nothing
        None => {
            let dep = Dependency {
                workspace_id: ctx.ws.to_string(),
                blocker_id: blocker_id.to_string(),
                blocked_id: blocked_id.to_string(),
                kind,
                created_at: ctx.now,
            };
            ctx.tx.put_dep(&dep)?;
            ctx.emit(
                "dependency.added",
                Some(blocked_id),
                json!({ "dependency": dep }),
            )?;
            if kind == DepKind::Blocks {
                reevaluate(ctx, blocked_id)?;
            }
            dep
        }
    };
    let task = ctx.task(blocked_id)?.view();
    Ok(DepOut {
        dependency: dep,
        task,
    })
}

/// Removes an edge; the waiting task may become ready.
pub fn remove_dep(
    ctx: &mut Ctx<'_>,
    blocker_id: &str,
    blocked_id: &str,
    kind: DepKind,
) -> Result<DepOut> {
    let existing = ctx.tx.deps_of(ctx.ws, blocked_id)?;
    let Some(dep) = existing
        .into_iter()
        .find(|d| d.blocker_id == blocker_id && d.kind == kind)
    else {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "no {} dependency from {blocker_id} to {blocked_id}",
                kind_name(kind)
            ),
            "list the task's dependencies with `baton brief`",
        ));
    };
    ctx.tx.delete_dep(ctx.ws, blocker_id, blocked_id, kind)?;
    ctx.emit(
        "dependency.removed",
        Some(blocked_id),
        json!({ "dependency": dep }),
    )?;
    if kind == DepKind::Blocks {
        reevaluate(ctx, blocked_id)?;
    }
    let task = ctx.task(blocked_id)?.view();
    Ok(DepOut {
        dependency: dep,
        task,
    })
}

fn kind_name(kind: DepKind) -> &'static str {
    match kind {
        DepKind::Blocks => "blocks",
        DepKind::RelatesTo => "relates_to",
        DepKind::DiscoveredFrom => "discovered_from",
    }
}
