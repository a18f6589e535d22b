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

/// For a task that was just created or published straight into `blocked` with
/// `dependency_failed`: the event a planner watches for (as when a blocker fails later),
/// and a warning for the caller naming the blockers that ended badly. `None` otherwise.
pub fn born_dependency_failed(ctx: &mut Ctx<'_>, task: &Task) -> Result<Option<String>> {
    if task.blocked_reason != Some(BlockedReason::DependencyFailed) {
        return Ok(None);
    }
    ctx.emit(
        "task.dependency_failed",
        Some(&task.id),
        json!({ "task": task }),
    )?;
    dependency_failed_warning(ctx, task).map(Some)
}

/// The warning for a task now blocked `dependency_failed`: which blockers ended badly, and
/// what a planner may do.
pub fn dependency_failed_warning(ctx: &mut Ctx<'_>, task: &Task) -> Result<String> {
    let mut ended = Vec::new();
    for dep in ctx.tx.deps_of(ctx.ws, &task.id)? {
        if dep.kind != DepKind::Blocks {
            continue;
        }
        if let Some(b) = ctx.tx.task(ctx.ws, &dep.blocker_id)? {
            if matches!(b.status, Status::Failed | Status::Canceled) {
                ended.push(format!("{} is {}", b.id, b.status.as_str()));
            }
        }
    }
    Ok(format!(
        "task {} is blocked (dependency_failed): {}; retry the blocker, or unblock this task \
         to go on without it",
        task.id,
        ended.join(", ")
    ))
}

/// After `task_id` ended (done, failed or canceled) or was retried, moves each dependent
/// that waits on it: released to `ready` when its last blocker is done, blocked with
/// `dependency_failed` while one has failed, back to waiting on `dependencies` otherwise.
pub fn on_blocker_ended(ctx: &mut Ctx<'_>, task_id: &str) -> Result<()> {
    on_blocker_ended_but(ctx, task_id, &HashSet::new())
}

/// As [`on_blocker_ended`], leaving out the dependents in `ending` (tasks the same change
/// is about to end: re-settling them first would log a state they never keep).
pub fn on_blocker_ended_but(
    ctx: &mut Ctx<'_>,
    task_id: &str,
    ending: &HashSet<String>,
) -> Result<()> {
    for dep in ctx.tx.dependents_of(ctx.ws, task_id)? {
        if dep.kind != DepKind::Blocks || ending.contains(&dep.blocked_id) {
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

/// What a search of the wait graph knows of each task it met: its parent and whether it is
/// `done`, read once per search.
type Known = HashMap<String, (Option<String>, bool)>;

/// Task `id`'s parent and whether it is `done`.
fn node(ctx: &mut Ctx<'_>, known: &mut Known, id: &str) -> Result<(Option<String>, bool)> {
    if let Some(n) = known.get(id) {
        return Ok(n.clone());
    }
    let n = match ctx.tx.task(ctx.ws, id)? {
        Some(t) => (t.parent_id, t.status == Status::Done),
        None => (None, false),
    };
    known.insert(id.to_string(), n.clone());
    Ok(n)
}

/// The tasks `id` waits on: its `blocks` blockers, whatever their status (so those edges
/// stay acyclic, as they always were), and, unless it is `done`, its children that are not
/// (a parent is claimable only once its children are finished).
fn waits_on(ctx: &mut Ctx<'_>, known: &mut Known, id: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = ctx
        .tx
        .deps_of(ctx.ws, id)?
        .into_iter()
        .filter(|d| d.kind == DepKind::Blocks)
        .map(|d| d.blocker_id)
        .collect();
    if node(ctx, known, id)?.1 {
        return Ok(out);
    }
    let children = crate::store::TaskFilter {
        parent_id: Some(id.to_string()),
        ..Default::default()
    };
    super::each_task(ctx, children, |_, child| {
        let done = child.status == Status::Done;
        if !done {
            out.push(child.id.clone());
        }
        known.insert(child.id, (child.parent_id, done));
        Ok(())
    })?;
    Ok(out)
}

/// The tasks that wait on `id` (the other direction of [`waits_on`]): those it `blocks`,
/// and its parent, unless either is `done`. `parent` is given for a task not stored yet.
fn waited_on_by(
    ctx: &mut Ctx<'_>,
    known: &mut Known,
    id: &str,
    parent: Option<Option<&str>>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = ctx
        .tx
        .dependents_of(ctx.ws, id)?
        .into_iter()
        .filter(|d| d.kind == DepKind::Blocks)
        .map(|d| d.blocked_id)
        .collect();
    let parent = match parent {
        Some(given) => given.map(str::to_string),
        None => match node(ctx, known, id)? {
            (_, true) => None,
            (parent, false) => parent,
        },
    };
    if let Some(parent) = parent {
        if !node(ctx, known, &parent)?.1 {
            out.push(parent);
        }
    }
    Ok(out)
}

/// Finds whether one of `blockers` already waits on `task`, directly or through others,
/// and the path if so: `[task, …, blocker]`, each task waiting on the one before it.
/// Searched from both ends at once, a level at a time on the side with fewer tasks to
/// look at, so the cost follows the smaller of what waits on `task` and what the blockers
/// wait on: either can be large (a parent that thousands of tasks wait on, a blocker with
/// a big subtree), rarely both. `parent` is `task`'s, given because `task` may not be
/// stored yet.
fn wait_path(
    ctx: &mut Ctx<'_>,
    task: &str,
    parent: Option<&str>,
    blockers: &[&str],
) -> Result<Option<Vec<String>>> {
    // Each side: how every task it reached was reached (from which task), and its frontier.
    let mut back: HashMap<String, Option<String>> = HashMap::from([(task.to_string(), None)]);
    let mut ahead: HashMap<String, Option<String>> =
        blockers.iter().map(|b| (b.to_string(), None)).collect();
    let mut back_edge: Vec<String> = vec![task.to_string()];
    let mut ahead_edge: Vec<String> = blockers.iter().map(|b| b.to_string()).collect();
    let mut known = Known::new();
    let chain = |seen: &HashMap<String, Option<String>>, from: &str| {
        let mut path = vec![from.to_string()];
        while let Some(Some(prev)) = seen.get(path.last().map_or("", |p| p.as_str())) {
            path.push(prev.clone());
        }
        path
    };
    while !back_edge.is_empty() && !ahead_edge.is_empty() {
        let from_back = back_edge.len() <= ahead_edge.len();
        let (edge, seen, other) = if from_back {
            (&mut back_edge, &mut back, &ahead)
        } else {
            (&mut ahead_edge, &mut ahead, &back)
        };
        let mut next = Vec::new();
        for at in std::mem::take(edge) {
            let found = if from_back {
                let given = (at == task).then_some(parent);
                waited_on_by(ctx, &mut known, &at, given)?
            } else {
                waits_on(ctx, &mut known, &at)?
            };
            for n in found {
                if seen.contains_key(&n) {
                    continue;
                }
                seen.insert(n.clone(), Some(at.clone()));
                if other.contains_key(&n) {
                    // task … n by the backward links, n … blocker by the forward ones.
                    let (back, ahead) = if from_back {
                        (&*seen, other)
                    } else {
                        (other, &*seen)
                    };
                    let mut path = chain(back, &n);
                    path.reverse();
                    path.extend(chain(ahead, &n).into_iter().skip(1));
                    return Ok(Some(path));
                }
                next.push(n);
            }
        }
        *edge = next;
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
        crate::state::check_not_started(blocked_id, blocked.status, "add a blocker to")?;
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
    super::check_id("blocker id", blocker_id)?;
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
            "the task's brief lists its dependencies",
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
