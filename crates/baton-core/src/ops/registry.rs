//! Projects and agents (DESIGN §2): the containers that carry default policies and the
//! workers that claim. Both are small, rarely written rows; every change is an event.

use super::{check_new_name, Ctx};
use crate::api::*;
use crate::error::{Error, Result};
use crate::id::new_id;
use crate::model::*;
use crate::state::Status;
use crate::store::KillSwitch;
use crate::time::Duration;
use serde_json::json;

/// Creates a project; its name must be new in the workspace.
pub fn create_project(ctx: &mut Ctx<'_>, req: CreateProject) -> Result<ProjectOut> {
    check_new_name("project name", &req.name, 200)?;
    if ctx.tx.project(ctx.ws, &req.name)?.is_some() {
        return Err(Error::new(
            crate::Code::AlreadyExists,
            format!("a project named '{}' exists", req.name),
            "pick another name, or update that project",
        ));
    }
    let mut project = Project {
        id: new_id("prj"),
        workspace_id: ctx.ws.to_string(),
        name: req.name.clone(),
        lease_ttl: Duration::secs(300),
        retry_policy: RetryPolicy::default(),
        review_required: false,
        killed: false,
        exclusive_scopes: false,
        max_concurrency: None,
        created_at: ctx.now,
    };
    let settings = ProjectSettings {
        lease_ttl: req.lease_ttl,
        retry_policy: req.retry_policy,
        review_required: req.review_required,
        killed: None,
        exclusive_scopes: req.exclusive_scopes,
        max_concurrency: req.max_concurrency.map(Some),
    };
    apply_settings(&mut project, &settings)?;
    ctx.tx.put_project(&project)?;
    ctx.emit("project.created", None, json!({ "project": project }))?;
    Ok(ProjectOut { project })
}

/// Changes a project's policies or its kill switch.
pub fn update_project(ctx: &mut Ctx<'_>, id: &str, req: ProjectSettings) -> Result<ProjectOut> {
    let mut project = super::project(ctx, Some(id))?;
    let before = project.clone();
    apply_settings(&mut project, &req)?;
    // Settings the project already has change nothing: no event.
    if project != before {
        ctx.tx.put_project(&project)?;
        ctx.emit("project.updated", None, json!({ "project": project }))?;
        if project.review_required && !before.review_required {
            require_review_of_open_tasks(ctx, &project.id)?;
        }
    }
    // Every time it is set, not only when it changes: leases a kill missed (made by an
    // older version, say) are revoked by setting it again.
    if project.killed && req.killed == Some(true) {
        let switch = KillSwitch::Project(project.name.clone());
        revoke_leases(ctx, &switch, Some(&project.id), |_| true)?;
    }
    Ok(ProjectOut { project })
}

/// A kill switch takes effect at once (DESIGN §4): every lease it covers (on the tasks of
/// `project_id`, or of the whole workspace, held by those `held_by` picks) is revoked in
/// the transaction that sets it.
fn revoke_leases(
    ctx: &mut Ctx<'_>,
    switch: &KillSwitch,
    project_id: Option<&str>,
    held_by: impl Fn(&Lease) -> bool,
) -> Result<()> {
    let leased: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_leased()).collect();
    super::for_each_task(ctx, &leased, project_id, |ctx, task| {
        if !task.lease.as_ref().is_some_and(&held_by) {
            return Ok(());
        }
        if let Some(mut task) = ctx.tx.task_for_update(ctx.ws, &task.id)? {
            // A lease that lapsed already expires as it would have (the attempt counts);
            // only a live one is revoked.
            super::lease::expire_if_due(ctx, &mut task)?;
            if task.lease.as_ref().is_some_and(&held_by) {
                super::lease::revoke(ctx, &mut task, switch)?;
            }
        }
        Ok(())
    })
}

/// A project that now requires review requires it of its tasks not finished yet, as of
/// those created from now on (a task may not waive it): each that did not is updated.
/// Tasks in review or finished keep what they had. Turning review off changes no task:
/// which of them required review on their own is not recorded apart.
fn require_review_of_open_tasks(ctx: &mut Ctx<'_>, project_id: &str) -> Result<()> {
    // Not finished, and not in review (whose completion was judged under the old rule).
    let open: Vec<Status> = Status::ALL
        .into_iter()
        .filter(|s| !s.is_closed_to_children())
        .collect();
    super::for_each_task(ctx, &open, Some(project_id), |ctx, task| {
        if task.review_required {
            return Ok(());
        }
        if let Some(mut task) = ctx.tx.task_for_update(ctx.ws, &task.id)? {
            if !task.review_required {
                task.review_required = true;
                ctx.save(&mut task, "task.updated", &[])?;
            }
        }
        Ok(())
    })
}

fn apply_settings(project: &mut Project, s: &ProjectSettings) -> Result<()> {
    if let Some(policy) = s.retry_policy {
        super::check_retry_policy(&policy)?;
        project.retry_policy = policy;
    }
    super::check_duration("lease_ttl", s.lease_ttl)?;
    if let Some(ttl) = s.lease_ttl {
        project.lease_ttl = ttl;
    }
    if let Some(review) = s.review_required {
        project.review_required = review;
    }
    if let Some(killed) = s.killed {
        project.killed = killed;
    }
    if let Some(exclusive) = s.exclusive_scopes {
        project.exclusive_scopes = exclusive;
    }
    if let Some(max) = s.max_concurrency {
        if let Some(max) = max {
            check_max_concurrency(
                max,
                "give the most of the project's tasks that may be leased at once; to stop its \
                 claims, kill the project",
            )?;
        }
        project.max_concurrency = max;
    }
    Ok(())
}

/// Registers an agent, or updates the capabilities (and the limit, when given) of a
/// registered one.
pub fn register_agent(ctx: &mut Ctx<'_>, req: RegisterAgent) -> Result<AgentOut> {
    if let Some(max) = req.max_concurrency {
        check_max_concurrency(max, AGENT_LIMIT_HINT)?;
    }
    let mut agent = super::lease::ensure_agent(ctx, &req.agent, &req.capabilities)?;
    let mut changed = false;
    if req.capabilities.is_empty() && !agent.capabilities.is_empty() {
        // `ensure_agent` keeps capabilities when none are given; registering with none
        // means none.
        agent.capabilities.clear();
        changed = true;
    }
    if req.max_concurrency.is_some() && agent.max_concurrency != req.max_concurrency {
        agent.max_concurrency = req.max_concurrency;
        changed = true;
    }
    if changed {
        agent.last_seen_at = ctx.now;
        ctx.tx.put_agent(&agent)?;
        ctx.emit("agent.updated", None, json!({ "agent": agent }))?;
    }
    Ok(AgentOut { agent })
}

/// The most leases an agent may be limited to.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// An agent's or a project's `max_concurrency`: 1 to [`MAX_CONCURRENCY`], else
/// `INVALID_INPUT` with `hint`.
fn check_max_concurrency(max: u32, hint: &str) -> Result<()> {
    if max == 0 || max > MAX_CONCURRENCY {
        return Err(Error::invalid(
            format!("max_concurrency must be 1 to {MAX_CONCURRENCY}, not {max}"),
            hint,
        ));
    }
    Ok(())
}

/// The hint of an agent's `max_concurrency` out of range.
const AGENT_LIMIT_HINT: &str =
    "give the most leases the agent may hold at once; to stop its claims, disable it";

/// The statuses an agent can have: it claims only while `active`.
pub const AGENT_STATUSES: [&str; 3] = ["active", "disabled", "killed"];

/// Changes an agent's status (`disabled` stops its claims, `killed` also revokes every lease
/// it holds at once (DESIGN §4), `active` lets it claim again) or its `max_concurrency`
/// (lowered below what it holds, it keeps its leases and claims again once under it).
pub fn update_agent(ctx: &mut Ctx<'_>, name: &str, req: AgentSettings) -> Result<AgentOut> {
    if let Some(Some(max)) = req.max_concurrency {
        check_max_concurrency(max, AGENT_LIMIT_HINT)?;
    }
    super::check_id("agent", name)?;
    if let Some(status) = &req.status {
        if !AGENT_STATUSES.contains(&status.as_str()) {
            return Err(Error::invalid(
                format!("unknown agent status '{status}'"),
                format!("use one of: {}", AGENT_STATUSES.join(", ")),
            ));
        }
    }
    let mut agent = ctx
        .tx
        .agent(ctx.ws, name)?
        .ok_or_else(|| Error::not_found("agent", name))?;
    let mut changed = false;
    if let Some(max) = req
        .max_concurrency
        .filter(|max| *max != agent.max_concurrency)
    {
        agent.max_concurrency = max;
        changed = true;
    }
    if let Some(status) = req.status.filter(|status| *status != agent.status) {
        agent.status = status;
        changed = true;
    }
    if changed {
        ctx.tx.put_agent(&agent)?;
        ctx.emit("agent.updated", None, json!({ "agent": agent }))?;
    }
    // Every time it is set, as a project's switch: leases a kill missed are revoked too.
    if agent.status == "killed" {
        let switch = KillSwitch::Agent(agent.name.clone());
        revoke_leases(ctx, &switch, None, |lease| lease.agent_id == agent.id)?;
    }
    Ok(AgentOut { agent })
}

/// The caller's workspace.
pub fn workspace(ctx: &mut Ctx<'_>) -> Result<WorkspaceOut> {
    let workspace = ctx
        .tx
        .workspace(ctx.ws)?
        .ok_or_else(|| Error::not_found("workspace", ctx.ws))?;
    Ok(WorkspaceOut { workspace })
}

/// Sets or lifts the workspace's kill switch: setting it revokes every lease in the
/// workspace at once and refuses every claim while set (DESIGN §4).
pub fn update_workspace(ctx: &mut Ctx<'_>, req: WorkspaceSettings) -> Result<WorkspaceOut> {
    let mut workspace = workspace(ctx)?.workspace;
    let Some(killed) = req.killed else {
        return Ok(WorkspaceOut { workspace });
    };
    if workspace.killed != killed {
        workspace.killed = killed;
        ctx.tx.put_workspace(&workspace)?;
        ctx.emit("workspace.updated", None, json!({ "workspace": workspace }))?;
    }
    if killed {
        let switch = KillSwitch::Workspace(workspace.name.clone());
        revoke_leases(ctx, &switch, None, |_| true)?;
    }
    Ok(WorkspaceOut { workspace })
}

/// Records that an agent is alive. `last_seen_at` moves only when it is older than
/// [`super::lease::AGENT_SEEN_RESOLUTION_MS`], so frequent heartbeats do not fill the log.
pub fn agent_heartbeat(ctx: &mut Ctx<'_>, name: &str) -> Result<AgentOut> {
    super::check_name("agent", name, 200)?;
    let mut agent = ctx
        .tx
        .agent(ctx.ws, name)?
        .ok_or_else(|| Error::not_found("agent", name))?;
    if ctx.now - agent.last_seen_at >= super::lease::AGENT_SEEN_RESOLUTION_MS {
        agent.last_seen_at = ctx.now;
        ctx.tx.put_agent(&agent)?;
        ctx.emit("agent.seen", None, json!({ "agent": agent }))?;
    }
    Ok(AgentOut { agent })
}

/// Every project of the workspace, by name.
pub fn projects(ctx: &mut Ctx<'_>) -> Result<ProjectsOut> {
    Ok(ProjectsOut {
        projects: ctx.tx.projects(ctx.ws)?,
    })
}

/// One project by id or name.
pub fn project(ctx: &mut Ctx<'_>, id: &str) -> Result<ProjectOut> {
    Ok(ProjectOut {
        project: super::project(ctx, Some(id))?,
    })
}

/// Every agent of the workspace, by name.
pub fn agents(ctx: &mut Ctx<'_>) -> Result<AgentsOut> {
    Ok(AgentsOut {
        agents: ctx.tx.agents(ctx.ws)?,
    })
}

/// One agent by name or id.
pub fn agent(ctx: &mut Ctx<'_>, name: &str) -> Result<AgentOut> {
    // A lookup: a name longer than any is not found, one past any id is bad input.
    super::check_id("agent", name)?;
    let agent = ctx
        .tx
        .agent(ctx.ws, name)?
        .ok_or_else(|| Error::not_found("agent", name))?;
    Ok(AgentOut { agent })
}
