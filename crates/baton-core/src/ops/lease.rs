//! The coordination protocol (DESIGN §4): claims in scheduling order, leases with fencing
//! epochs, and every operation an agent performs under a lease. A lease operation first
//! proves the caller holds the current, unexpired lease; anything else is `LEASE_LOST`.

use super::{check_json, check_len, check_tags, graph, snap, Ctx, Snap, MAX_TEXT};
use crate::api::*;
use crate::error::{Code, Error, Result};
use crate::id::{new_id, new_secret, sha256_hex};
use crate::model::*;
use crate::state::{self, BlockedReason, Op, Status};
use crate::store::KillSwitch;
use crate::time::{format_rfc3339, Duration, Millis};
use serde_json::json;

/// Most tasks one claim may take.
pub const MAX_CLAIM: u32 = 100;
/// How stale an agent's `last_seen_at` may get before a claim refreshes it.
pub const AGENT_SEEN_RESOLUTION_MS: i64 = 60_000;
/// Most expired leases one claim or reaper pass expires.
pub const REAP_BATCH: u32 = 256;
/// How many of a task's newest runs a refused lease token's run is looked for in.
const RUNS_SEARCHED_FOR_A_TOKEN: u32 = 16;

/// Registers an agent on first use, or refreshes its capabilities and last-seen time.
pub fn ensure_agent(ctx: &mut Ctx<'_>, name: &str, capabilities: &[String]) -> Result<Agent> {
    super::check_name("agent", name, 200)?;
    let capabilities = check_tags("capabilities", capabilities)?;
    match ctx.tx.agent(ctx.ws, name)? {
        Some(mut agent) => {
            // Writes only on a real change (compared as sets), so a claim that finds nothing
            // writes nothing.
            let same = {
                let (mut a, mut b) = (agent.capabilities.clone(), capabilities.clone());
                a.sort_unstable();
                b.sort_unstable();
                a == b
            };
            if !same && !capabilities.is_empty() {
                agent.capabilities = capabilities;
                agent.last_seen_at = ctx.now;
                ctx.tx.put_agent(&agent)?;
                ctx.emit("agent.updated", None, json!({ "agent": agent }))?;
            }
            Ok(agent)
        }
        None => {
            super::check_new_name("agent", name, 200)?;
            let agent = Agent {
                id: new_id("agt"),
                workspace_id: ctx.ws.to_string(),
                name: name.to_string(),
                capabilities,
                status: "active".into(),
                max_concurrency: None,
                last_seen_at: ctx.now,
                created_at: ctx.now,
            };
            ctx.tx.put_agent(&agent)?;
            ctx.emit("agent.registered", None, json!({ "agent": agent }))?;
            Ok(agent)
        }
    }
}

/// Ends a lapsed lease as of its expiry time: the run is `lost`, the task goes back to
/// `ready` after backoff, or to `failed` when its attempts are used up.
pub fn expire(ctx: &mut Ctx<'_>, task: &mut Task) -> Result<()> {
    // Revoked for the yield only when the grace is what ended it: a holder that vanished
    // before then lost its lease as any other does.
    let grace_ended =
        |l: &Lease| super::concurrency::yield_ends(l).is_some_and(|end| l.expires_at >= end);
    if task.lease.as_ref().is_some_and(grace_ended) {
        return preempt(ctx, task);
    }
    let Some(lease) = task.lease.take() else {
        return Ok(());
    };
    let at = lease.expires_at;
    let mut extra = Vec::new();
    task.reason = Some(format!("lease expired at {}", format_rfc3339(at)));
    if let Some(mut run) = ctx.tx.run(ctx.ws, &task.id, &lease.run_id)? {
        run.status = RunStatus::Lost;
        run.ended_at = Some(at);
        // The lease ran to the attempt's timeout (it is never extended past it).
        if let Some(timeout) = task.timeout.filter(|t| run.started_at + t.ms() <= at) {
            let why = format!("the attempt timed out after {timeout}");
            task.reason = Some(why.clone());
            run.error = Some(why);
            run.error_class = Some("timeout".into());
        }
        ctx.tx.put_run(&run)?;
        extra.push(snap("run", &run));
    }
    let exhausted = task.attempts >= task.retry_policy.max_attempts;
    if exhausted {
        task.status = Status::Failed;
        task.blocked_reason = None;
    } else {
        graph::settle(ctx, task)?;
        task.not_before = Some(at + task.retry_policy.backoff(task.attempts, &task.id));
    }
    ctx.save(task, "task.lease_expired", &extra)?;
    if exhausted {
        ended_failed(ctx, task)?;
    }
    Ok(())
}

/// When a lease granted or extended at `now` for `ttl` ends: after `ttl`, but never after
/// the attempt's timeout (counted from the run's start), so a run that outlives it lapses
/// and is retried like any lost lease.
fn lease_deadline(task: &Task, run_started_at: Millis, now: Millis, ttl: Duration) -> Millis {
    let by_ttl = now + ttl.ms();
    let by_timeout = task
        .timeout
        .map_or(by_ttl, |timeout| by_ttl.min(run_started_at + timeout.ms()));
    let yield_ends = task.lease.as_ref().and_then(super::concurrency::yield_ends);
    yield_ends.map_or(by_timeout, |end| by_timeout.min(end))
}

/// Takes the lease of `task` away for a kill switch just set: the run ends `revoked`, the
/// attempt is not counted (as a release), and the task waits for a claimer again (another
/// agent's, when the switch was its holder's). The holder's next lease operation is
/// `KILLED`.
pub fn revoke(ctx: &mut Ctx<'_>, task: &mut Task, switch: &KillSwitch) -> Result<()> {
    let why = format!("{switch} was killed: its leases were revoked");
    let now = ctx.now;
    take_lease(ctx, task, now, why, "killed")
}

/// Ends a lease asked to yield that ran out its grace period (DESIGN §4, preemption), as of
/// its expiry: the run is `revoked`, the attempt is not counted (the agent was asked to give
/// the task back, as `release` does), and the task waits for a claimer again at once.
fn preempt(ctx: &mut Ctx<'_>, task: &mut Task) -> Result<()> {
    let Some(at) = task.lease.as_ref().map(|l| l.expires_at) else {
        return Ok(());
    };
    let why = "asked to yield its concurrency key to a more urgent task, and not released \
               within the grace period: its lease was revoked";
    take_lease(ctx, task, at, why.to_string(), "preempted")
}

/// Revokes the lease of `task` as of `at`: its run ends `revoked` with `why` (of `class`),
/// the attempt is given back, and the task settles where it waits for a claimer again.
fn take_lease(
    ctx: &mut Ctx<'_>,
    task: &mut Task,
    at: Millis,
    why: String,
    class: &str,
) -> Result<()> {
    let Some(lease) = task.lease.take() else {
        return Ok(());
    };
    let mut extra = Vec::new();
    if let Some(mut run) = ctx.tx.run(ctx.ws, &task.id, &lease.run_id)? {
        run.status = RunStatus::Revoked;
        run.ended_at = Some(at);
        run.error = Some(why.clone());
        run.error_class = Some(class.into());
        ctx.tx.put_run(&run)?;
        extra.push(snap("run", &run));
    }
    task.attempts = task.attempts.saturating_sub(1);
    task.reason = Some(why);
    graph::settle(ctx, task)?;
    ctx.save(task, "task.lease_revoked", &extra)
}

/// Expires the lease of `task` if it has lapsed by now.
pub fn expire_if_due(ctx: &mut Ctx<'_>, task: &mut Task) -> Result<()> {
    if task.lease.as_ref().is_some_and(|l| l.expires_at <= ctx.now) {
        expire(ctx, task)?;
    }
    Ok(())
}

/// Expires up to `limit` lapsed leases in the workspace; how many it expired.
pub fn reap(ctx: &mut Ctx<'_>, limit: u32) -> Result<usize> {
    let due = ctx.tx.expired_leases(ctx.ws, ctx.now, limit)?;
    let n = due.len();
    for mut task in due {
        expire(ctx, &mut task)?;
    }
    Ok(n)
}

/// Follow-up of a task that just ended `failed`: dependents are told, and an event asks
/// for a planner's attention.
fn ended_failed(ctx: &mut Ctx<'_>, task: &Task) -> Result<()> {
    ctx.emit(
        "task.needs_attention",
        Some(&task.id),
        json!({ "task": task, "reason": format!("failed after {} attempt(s): {}", task.attempts, task.reason.as_deref().unwrap_or("")) }),
    )?;
    graph::on_blocker_ended(ctx, &task.id)
}

/// Claims up to `count` ready tasks for an agent, in priority, due date, age order, among
/// those whose required capabilities the agent has. Expired leases are expired first, so a
/// task whose holder vanished is claimable without a background reaper.
pub fn claim(ctx: &mut Ctx<'_>, req: &ClaimRequest) -> Result<Claims> {
    check_claim(req)?;
    let count = req.count.unwrap_or(1);
    let mut agent = ensure_agent(ctx, &req.agent, &req.capabilities)?;
    if agent.status != "active" {
        return Err(Error::new(
            Code::Killed,
            format!("agent {} is {}: it may not claim", agent.name, agent.status),
            "stop claiming as this agent until a planner or admin sets its status back to active",
        ));
    }
    let count = match agent.max_concurrency {
        Some(max) => count.min(places_left(ctx, &agent, max)?),
        None => count,
    };
    // The store returns only tasks whose required capabilities the agent has (it seeks
    // each capability set the agent can serve), so the first `count` candidates are the
    // claim.
    // (A copy: the agent is written as it claims; empty for most agents, so no allocation.)
    let agent_capabilities = agent.capabilities.clone();
    let capabilities = Some(agent_capabilities.as_slice());
    let (due, mut candidates) =
        ctx.tx
            .expired_or_candidates(ctx.ws, ctx.now, REAP_BATCH, count, capabilities)?;
    if !due.is_empty() {
        // Lapsed leases are expired first; the candidates come after them.
        for mut task in due {
            expire(ctx, &mut task)?;
        }
        candidates = ctx
            .tx
            .claim_candidates(ctx.ws, ctx.now, count, capabilities)?;
    }
    let mut claims = Vec::new();
    // Tasks passed over because a limit holds them back (their concurrency key is full,
    // their paths overlap a leased task's in a project of exclusive scopes): a page with
    // any is followed by a larger one (they come first again), so the claim still gets
    // `count` tasks when there are, up to a few pages.
    let mut passed_over: Vec<String> = Vec::new();
    let mut asked = count as usize;
    for page in 0..4 {
        let got = candidates.len();
        for task in candidates {
            if claims.len() == count as usize || passed_over.contains(&task.id) {
                continue;
            }
            if !can_take(&agent_capabilities, &task) {
                // Never granted, whatever a store returns.
                continue;
            }
            if !super::concurrency::has_room(ctx, &task)? || !super::scope::may_take(ctx, &task)? {
                passed_over.push(task.id);
                continue;
            }
            claims.push(grant(ctx, task, &mut agent, req)?);
        }
        if claims.len() == count as usize || passed_over.is_empty() || got < asked || page == 3 {
            break;
        }
        asked = count as usize - claims.len() + passed_over.len();
        candidates = ctx
            .tx
            .claim_candidates(ctx.ws, ctx.now, asked as u32, capabilities)?;
    }
    super::scope::warn_of_overlaps(ctx, &mut claims)?;
    // A killed workspace offers nothing (the stores leave its tasks out); the claimer is
    // told why rather than left waiting.
    if claims.is_empty() {
        if let Some(ws) = ctx.tx.workspace(ctx.ws)?.filter(|w| w.killed) {
            return Err(killed(
                &KillSwitch::Workspace(ws.name),
                "no task in it may be claimed",
            ));
        }
    }
    Ok(Claims { claims })
}

/// Whether an agent with `capabilities` has every capability `task` requires.
pub fn can_take(capabilities: &[String], task: &Task) -> bool {
    task.required_capabilities
        .iter()
        .all(|c| capabilities.contains(c))
}

/// How many more leases `agent`, limited to `max` at once, may take now: `AT_CAPACITY` when
/// none. Claims of one agent take turns (each locks its agent's row), so the count holds
/// until this one commits.
fn places_left(ctx: &mut Ctx<'_>, agent: &Agent, max: u32) -> Result<u32> {
    let held = ctx.tx.agent_leases(ctx.ws, &agent.id, ctx.now)?;
    match u64::from(max).checked_sub(held).filter(|left| *left > 0) {
        Some(left) => Ok(left.min(u64::from(MAX_CLAIM)) as u32),
        None => Err(Error::new(
            Code::AtCapacity,
            format!(
                "agent {} holds {held} lease(s); its max_concurrency is {max}",
                agent.name
            ),
            "complete, fail or release a task it holds before claiming another, or raise its \
             max_concurrency",
        )
        .with_details(json!({ "held": held, "max_concurrency": max }))),
    }
}

/// Checks a claim request's own fields (not whether anything is claimable), so a call that
/// carries a claim beside other work can refuse bad input before it writes anything.
pub fn check_claim(req: &ClaimRequest) -> Result<()> {
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_CLAIM {
        return Err(Error::invalid(
            format!("count must be 1 to {MAX_CLAIM}, not {count}"),
            format!("ask for 1 to {MAX_CLAIM} tasks per claim"),
        ));
    }
    super::check_duration("lease_ttl", req.lease_ttl)?;
    if req.agent.is_empty() {
        return Err(Error::invalid(
            "agent is required: the name of the agent that claims",
            "pass \"agent\": \"NAME\" (a key bound to an agent claims as it without one)",
        ));
    }
    super::check_name("agent", &req.agent, 200)?;
    check_tags("capabilities", &req.capabilities)?;
    Ok(())
}

/// ready → claimed: a new run, the next epoch, a fresh token.
fn grant(
    ctx: &mut Ctx<'_>,
    mut task: Task,
    agent: &mut Agent,
    req: &ClaimRequest,
) -> Result<Claim> {
    state::check_task(&task, Op::Claim)?;
    let ttl = req.lease_ttl.unwrap_or(task.lease_ttl);
    task.epoch += 1;
    let token = lease_token(task.epoch);
    task.attempts += 1;
    task.status = Status::Claimed;
    task.not_before = None;
    task.reason = None;
    let expires_at = lease_deadline(&task, ctx.now, ctx.now, ttl);
    let mut run = Run {
        id: new_id("run"),
        workspace_id: ctx.ws.to_string(),
        task_id: task.id.clone(),
        agent_id: agent.id.clone(),
        attempt: task.attempts,
        epoch: task.epoch,
        status: RunStatus::Active,
        progress: None,
        message: None,
        usage: None,
        output: None,
        outcome: None,
        error: None,
        error_class: None,
        seen_version: 0,
        started_at: ctx.now,
        heartbeat_at: ctx.now,
        ended_at: None,
    };
    task.lease = Some(Lease {
        epoch: task.epoch,
        token_sha256: sha256_hex(&token),
        run_id: run.id.clone(),
        agent_id: agent.id.clone(),
        expires_at,
        ttl: req.lease_ttl.filter(|t| *t != task.lease_ttl),
        yield_requested_at: None,
    });
    task.version += 1;
    run.seen_version = task.version;
    ctx.tx.put_run(&run)?;
    // `last_seen_at` is refreshed at most once a minute: writing the agent on every claim
    // would cost a row and a larger event for a fact nobody needs to the millisecond.
    let mut extra = vec![snap("run", &run)];
    if ctx.now - agent.last_seen_at >= AGENT_SEEN_RESOLUTION_MS {
        agent.last_seen_at = ctx.now;
        ctx.tx.put_agent(agent)?;
        extra.push(snap("agent", agent));
    }
    ctx.save_unversioned(&mut task, "task.claimed", &extra)?;
    Ok(Claim {
        task: task.view(),
        run,
        lease: LeaseGrant {
            token,
            epoch: task.epoch,
            expires_at,
        },
        warnings: vec![],
    })
}

/// Loads a task and proves `token` is its current, live lease.
fn leased(ctx: &mut Ctx<'_>, id: &str, token: &str) -> Result<(Task, Run)> {
    let task = ctx.task(id)?;
    let lost = |message: String, hint: &str, task: &Task| {
        Error::new(Code::LeaseLost, message, hint).with_details(json!({
            "status": task.status.as_str(),
            "epoch": task.epoch,
        }))
    };
    let token_sha256 = sha256_hex(token);
    let current = task
        .lease
        .as_ref()
        .is_some_and(|l| l.token_sha256 == token_sha256);
    if !current {
        if let Some(e) = revoked_by_kill(ctx, &task, token)? {
            return Err(e);
        }
    }
    let Some(lease) = &task.lease else {
        let hint = match task.status {
            Status::Canceled => "the task was canceled: stop working on it",
            _ => "your lease ended (expired, released or superseded); stop and claim new work",
        };
        // Why it ended, when the task says (an expiry, a timed-out attempt).
        let why = task
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Err(lost(
            format!(
                "task {id} has no live lease; it is {}{why}",
                task.status.as_str()
            ),
            hint,
            &task,
        ));
    };
    if !current {
        return Err(lost(
            format!(
                "that lease token is not the current lease of task {id} (epoch {})",
                lease.epoch
            ),
            "if you held this task, your lease ended and another claim took it: stop work on \
             it and claim new work; otherwise check the token (it is the claim's lease.token)",
            &task,
        ));
    }
    check_bound_holder(ctx, id, lease)?;
    let run_id = lease.run_id.clone();
    let run = ctx
        .tx
        .run(ctx.ws, &task.id, &run_id)?
        .ok_or_else(|| Error::not_found("run", &run_id))?;
    Ok((task, run))
}

/// Refuses (`FORBIDDEN`) a caller whose key is bound to an agent other than the holder of
/// `lease`: such a key works under its own agent's leases only, whatever tokens come its
/// way, since its calls are recorded as that agent's.
pub(crate) fn check_bound_holder(ctx: &mut Ctx<'_>, task_id: &str, lease: &Lease) -> Result<()> {
    let Some(bound) = ctx.agent else {
        return Ok(());
    };
    let holder = ctx.tx.agent(ctx.ws, &lease.agent_id)?.map(|a| a.name);
    if holder.as_deref() == Some(bound) {
        return Ok(());
    }
    Err(Error::new(
        Code::Forbidden,
        format!(
            "the lease of task {task_id} is held by agent {}; this key acts as agent {bound}",
            holder.as_deref().unwrap_or(&lease.agent_id)
        ),
        "work under a lease with the holder's own key (or an unbound worker key)",
    ))
}

/// A new lease token for a lease granted at `epoch`. The epoch is written into it
/// (`lse_<epoch>_<secret>`) so that a refused token names the run it was granted for: only
/// its hash is stored, and a refusal can then say why that run ended. The epoch is public
/// (every claim and refusal shows it); the secret alone proves the lease.
fn lease_token(epoch: u64) -> String {
    new_secret(&format!("lse_{epoch}"))
}

/// The epoch a lease token says it was granted at; `None` for tokens of other shapes
/// (forged, or made before tokens carried it).
fn token_epoch(token: &str) -> Option<u64> {
    token.strip_prefix("lse_")?.split_once('_')?.0.parse().ok()
}

/// Why a refused lease token was refused, when the reason is a kill switch: the run the
/// token was granted for (the task's newest, for a token that names no epoch) was revoked
/// by a switch that is still set. `KILLED`, so the holder knows to stop, even after
/// another agent has claimed the task since. Read only once a token is refused.
pub(crate) fn revoked_by_kill(
    ctx: &mut Ctx<'_>,
    task: &Task,
    token: &str,
) -> Result<Option<Error>> {
    let run = match token_epoch(token) {
        // Epochs only grow, so the run is among the newest unless the task was claimed
        // many times since; past those, the refusal is only a lost lease.
        Some(epoch) if epoch <= task.epoch => ctx
            .tx
            .runs_of(ctx.ws, &task.id, RUNS_SEARCHED_FOR_A_TOKEN)?
            .into_iter()
            .find(|r| r.epoch == epoch),
        Some(_) => None,
        None => ctx.tx.runs_of(ctx.ws, &task.id, 1)?.into_iter().next(),
    };
    let Some(run) = run.filter(|r| r.status == RunStatus::Revoked) else {
        return Ok(None);
    };
    let switch = ctx
        .tx
        .kill_switch(ctx.ws, &task.project_id, &run.agent_id)?;
    Ok(switch.map(|switch| {
        killed(
            &switch,
            &format!("the lease on task {} was revoked", task.id),
        )
        .with_details(json!({ "status": task.status.as_str(), "epoch": task.epoch }))
    }))
}

/// `KILLED`: `switch` is set, so `what` happened.
fn killed(switch: &KillSwitch, what: &str) -> Error {
    let hint = match switch {
        KillSwitch::Workspace(_) => {
            "stop work; nothing in the workspace is claimable until an admin revives it"
        }
        KillSwitch::Project(_) => {
            "stop work on this task; it is claimable again once the project is revived"
        }
        KillSwitch::Agent(_) => {
            "stop all work as this agent: its tasks went back to the queue for others, and \
             it may claim again once a planner or admin reactivates it"
        }
    };
    Error::new(Code::Killed, format!("{switch} is killed: {what}"), hint)
}

/// A lease operation on a `claimed` task that only an `in_progress` task accepts starts it.
/// The log gets `task.started`; the task's and the run's rows are left to the operation,
/// which writes both before its job ends (each once, not twice).
fn auto_start(ctx: &mut Ctx<'_>, task: &mut Task, run: &mut Run, op: Op) -> Result<()> {
    if task.status == Status::Claimed
        && !state::is_allowed(Status::Claimed, op)
        && state::is_allowed(Status::InProgress, op)
    {
        task.status = Status::InProgress;
        run.sees_own_change(task.version + 1);
        ctx.save_step(task, "task.started", &[snap("run", run)])?;
    }
    Ok(())
}

/// Marks the lease holder as having seen the version its own change is about to produce
/// (the next one), so the change does not come back to it as `context_changed`: writes the
/// lease's run and returns its snapshot for the change's event.
fn holder_sees_own_change(ctx: &mut Ctx<'_>, task: &Task, run: &mut Run) -> Result<Vec<Snap>> {
    run.sees_own_change(task.version + 1);
    ctx.tx.put_run(run)?;
    Ok(vec![snap("run", run)])
}

/// Ends the lease and its run (written here; the caller saves the task).
fn end_run(ctx: &mut Ctx<'_>, task: &mut Task, run: &mut Run, status: RunStatus) -> Result<()> {
    task.lease = None;
    run.status = status;
    run.ended_at = Some(ctx.now);
    if status == RunStatus::Completed {
        let seconds = ctx.now.saturating_sub(run.started_at) as f64 / 1000.0;
        crate::metrics::note_cycle(ctx.ws, seconds);
    }
    ctx.tx.put_run(run)
}

/// claimed → in_progress.
pub fn start(ctx: &mut Ctx<'_>, id: &str, token: &str) -> Result<TaskOut> {
    let (mut task, mut run) = leased(ctx, id, token)?;
    state::check_task(&task, Op::Start)?;
    task.status = Status::InProgress;
    let extra = holder_sees_own_change(ctx, &task, &mut run)?;
    ctx.save(&mut task, "task.started", &extra)?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// Usage fields that are counts or amounts (DESIGN §2's ledger): numbers of at least 0.
const USAGE_COUNTS: &[&str] = &["cost", "tokens_in", "tokens_out", "seconds", "tool_calls"];

/// The cost a run's usage reports (its cost so far).
fn cost(usage: &Option<serde_json::Value>) -> Option<f64> {
    usage.as_ref()?.get("cost")?.as_f64()
}

/// Extends the lease, records progress, and answers with the signals the agent must act on.
pub fn heartbeat(ctx: &mut Ctx<'_>, id: &str, token: &str, hb: &Heartbeat) -> Result<HeartbeatAck> {
    let (mut task, mut run) = leased(ctx, id, token)?;
    state::check_task(&task, Op::Heartbeat)?;
    if let Some(p) = hb.progress {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                format!("progress {p} is outside 0.0 to 1.0"),
                "report progress as a fraction",
            ));
        }
        run.progress = Some(p);
    }
    if let Some(m) = &hb.message {
        check_len("message", m, MAX_TEXT)?;
        run.message = Some(m.clone());
    }
    if hb.usage.is_some() {
        super::check_object("usage", &hb.usage, USAGE_COUNTS)?;
        // Totals so far, field by field: a report that leaves a field out keeps its last
        // value (a heartbeat with tokens only does not erase the run's cost).
        let before = cost(&run.usage).unwrap_or(0.0);
        let mut usage = match run.usage.take() {
            Some(serde_json::Value::Object(earlier)) => earlier,
            _ => serde_json::Map::new(),
        };
        if let Some(serde_json::Value::Object(now)) = &hb.usage {
            usage.extend(now.clone());
        }
        super::check_json("usage", &Some(serde_json::Value::Object(usage.clone())))?;
        run.usage = Some(serde_json::Value::Object(usage));
        let reported = cost(&run.usage).unwrap_or(0.0) - before;
        crate::metrics::note_cost(ctx.ws, reported);
    }
    let mut signals = Vec::new();
    if task.version > run.seen_version {
        signals.push("context_changed".to_string());
        run.seen_version = task.version;
    }
    // A kill switch revokes leases as it is set; a lease it missed (a kill set by an
    // older version) still hears of it here.
    if ctx
        .tx
        .kill_switch(ctx.ws, &task.project_id, &run.agent_id)?
        .is_some()
    {
        signals.push("killed".into());
    }
    if super::concurrency::asked_to_yield(ctx, &mut task)? {
        signals.push("yield".into());
    }
    let limit = task
        .budget
        .as_ref()
        .and_then(|b| b.get("max_cost")?.as_f64());
    if let (Some(limit), Some(now)) = (limit, cost(&run.usage)) {
        // The task's budget covers every attempt: what earlier runs last reported, and
        // this run's cost so far.
        let earlier: f64 = ctx
            .tx
            .runs_of(ctx.ws, &task.id, u32::MAX)?
            .iter()
            .filter(|r| r.id != run.id)
            .filter_map(|r| cost(&r.usage))
            .sum();
        let spent = earlier + now;
        if spent >= limit {
            signals.push("budget_exhausted".into());
        } else if spent >= 0.8 * limit {
            signals.push("budget_warning".into());
        }
    }
    super::check_duration("lease_ttl", hb.lease_ttl)?;
    // The TTL asked now, else the one the lease was granted with, else the task's.
    let granted = task.lease.as_ref().and_then(|l| l.ttl);
    let ttl = hb.lease_ttl.or(granted).unwrap_or(task.lease_ttl);
    let expires_at = lease_deadline(&task, run.started_at, ctx.now, ttl);
    let attempt_ends = task.timeout.map(|t| run.started_at + t.ms());
    if attempt_ends.is_some_and(|end| end < ctx.now + ttl.ms()) {
        // The attempt's timeout, not the lease, sets the end now: no heartbeat extends it.
        signals.push("timeout".into());
    }
    let task_ttl = task.lease_ttl;
    if let Some(lease) = &mut task.lease {
        lease.expires_at = expires_at;
        lease.ttl = Some(ttl).filter(|t| *t != task_ttl);
    }
    run.heartbeat_at = ctx.now;
    ctx.tx.put_run(&run)?;
    ctx.save_unversioned(&mut task, "task.heartbeat", &[snap("run", &run)])?;
    Ok(HeartbeatAck {
        task: task.view(),
        expires_at,
        signals,
    })
}

/// Gives the task back to the queue; the attempt is not counted.
pub fn release(ctx: &mut Ctx<'_>, id: &str, token: &str) -> Result<TaskOut> {
    let (mut task, mut run) = leased(ctx, id, token)?;
    state::check_task(&task, Op::Release)?;
    end_run(ctx, &mut task, &mut run, RunStatus::Released)?;
    task.attempts = task.attempts.saturating_sub(1);
    // What was said during the lease (a wait's reason, a yield request) ends with it.
    task.reason = None;
    graph::settle(ctx, &mut task)?;
    ctx.save(&mut task, "task.lease_released", &[snap("run", &run)])?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// claimed or in_progress → review or done, with the output checked against the schema.
pub fn complete(ctx: &mut Ctx<'_>, id: &str, token: &str, req: Complete) -> Result<TaskOut> {
    let (mut task, mut run) = leased(ctx, id, token)?;
    auto_start(ctx, &mut task, &mut run, Op::Complete)?;
    state::check_task(&task, Op::Complete)?;
    check_json("output", &req.output)?;
    if let Some(o) = &req.outcome {
        check_len("outcome", o, MAX_TEXT)?;
    }
    if let Some(schema) = &task.output_schema {
        crate::schema::validate(
            "output",
            schema,
            req.output.as_ref().unwrap_or(&serde_json::Value::Null),
        )?;
    }
    let mut warnings = Vec::new();
    let open = ctx.tx.open_children(ctx.ws, id)?;
    if open > 0 {
        if !req.force {
            return Err(Error::new(
                Code::OpenChildren,
                format!("task {id} has {open} open child task(s)"),
                "finish or cancel the children first, or complete with force",
            )
            .with_details(json!({ "open_children": open })));
        }
        warnings.push(format!("completed with {open} open child task(s)"));
    }
    run.output = req.output.clone();
    run.outcome = req.outcome.clone();
    end_run(ctx, &mut task, &mut run, RunStatus::Completed)?;
    task.output = req.output;
    task.outcome = req.outcome;
    let done = !task.review_required;
    task.status = if done { Status::Done } else { Status::Review };
    ctx.save(
        &mut task,
        if done {
            "task.completed"
        } else {
            "task.submitted"
        },
        &[snap("run", &run)],
    )?;
    if done {
        graph::on_blocker_ended(ctx, id)?;
    }
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// Records a failed run; the task is retried after backoff or ends `failed`.
pub fn fail(ctx: &mut Ctx<'_>, id: &str, token: &str, req: Fail) -> Result<TaskOut> {
    super::check_text("error", &req.error, MAX_TEXT)?;
    let class = req.class.clone().unwrap_or_else(|| "transient".into());
    if !FAILURE_CLASSES.contains(&class.as_str()) {
        return Err(Error::invalid(
            format!("unknown failure class '{class}'"),
            format!("use one of: {}", FAILURE_CLASSES.join(", ")),
        ));
    }
    let (mut task, mut run) = leased(ctx, id, token)?;
    state::check_task(&task, Op::Fail)?;
    run.error = Some(req.error.clone());
    run.error_class = Some(class.clone());
    end_run(ctx, &mut task, &mut run, RunStatus::Failed)?;
    task.reason = Some(req.error);
    let retryable = !req.no_retry && !NON_RETRYABLE_CLASSES.contains(&class.as_str());
    let retry = retryable && task.attempts < task.retry_policy.max_attempts;
    if retry {
        graph::settle(ctx, &mut task)?;
        task.not_before = Some(ctx.now + task.retry_policy.backoff(task.attempts, &task.id));
        ctx.save(&mut task, "task.retrying", &[snap("run", &run)])?;
    } else {
        task.status = Status::Failed;
        task.blocked_reason = None;
        ctx.save(&mut task, "task.failed", &[snap("run", &run)])?;
        ended_failed(ctx, &task)?;
    }
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// in_progress → blocked (agent): the agent hit something it cannot get past; the lease is
/// released and the attempt is not counted.
pub fn block(ctx: &mut Ctx<'_>, id: &str, token: &str, reason: String) -> Result<TaskOut> {
    super::check_text("reason", &reason, MAX_TEXT)?;
    let (mut task, mut run) = leased(ctx, id, token)?;
    auto_start(ctx, &mut task, &mut run, Op::Block)?;
    state::check_task(&task, Op::Block)?;
    end_run(ctx, &mut task, &mut run, RunStatus::Blocked)?;
    task.attempts = task.attempts.saturating_sub(1);
    task.status = Status::Blocked;
    task.blocked_reason = Some(BlockedReason::Agent);
    task.reason = Some(reason);
    ctx.save(&mut task, "task.blocked", &[snap("run", &run)])?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// in_progress → waiting: on something outside; the lease is kept (heartbeat it).
pub fn wait(ctx: &mut Ctx<'_>, id: &str, token: &str, reason: String) -> Result<TaskOut> {
    super::check_text("reason", &reason, MAX_TEXT)?;
    let (mut task, mut run) = leased(ctx, id, token)?;
    auto_start(ctx, &mut task, &mut run, Op::Wait)?;
    state::check_task(&task, Op::Wait)?;
    task.status = Status::Waiting;
    task.reason = Some(reason);
    let extra = holder_sees_own_change(ctx, &task, &mut run)?;
    ctx.save(&mut task, "task.waiting", &extra)?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// waiting → in_progress.
pub fn resume(ctx: &mut Ctx<'_>, id: &str, token: &str) -> Result<TaskOut> {
    let (mut task, mut run) = leased(ctx, id, token)?;
    state::check_task(&task, Op::Resume)?;
    task.status = Status::InProgress;
    task.reason = None;
    let extra = holder_sees_own_change(ctx, &task, &mut run)?;
    ctx.save(&mut task, "task.resumed", &extra)?;
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}

/// review → done.
pub fn approve(ctx: &mut Ctx<'_>, id: &str, comment: Option<String>) -> Result<TaskOut> {
    let mut task = ctx.task(id)?;
    state::check_task(&task, Op::Approve)?;
    if let Some(c) = &comment {
        check_len("comment", c, MAX_TEXT)?;
    }
    // Children open now were open at a completion that said `force`; the approval goes
    // through as that completion did, and says so.
    let open = ctx.tx.open_children(ctx.ws, id)?;
    let warnings = match open {
        0 => vec![],
        n => vec![format!("approved with {n} open child task(s)")],
    };
    task.status = Status::Done;
    task.reason = comment;
    ctx.save(&mut task, "task.approved", &[])?;
    graph::on_blocker_ended(ctx, id)?;
    Ok(TaskOut {
        task: task.view(),
        warnings,
    })
}

/// review → ready for another attempt, or failed when attempts are used up.
pub fn reject(ctx: &mut Ctx<'_>, id: &str, reason: String) -> Result<TaskOut> {
    super::check_text("reason", &reason, MAX_TEXT)?;
    let mut task = ctx.task(id)?;
    state::check_task(&task, Op::Reject)?;
    // The run under review carries the verdict: the briefing shows the next holder why
    // (the task's reason changes with its next transition).
    let mut extra = Vec::new();
    let reviewed = ctx.tx.runs_of(ctx.ws, id, 1)?.into_iter().next();
    if let Some(mut run) = reviewed.filter(|r| r.status == RunStatus::Completed) {
        run.status = RunStatus::Rejected;
        run.error = Some(reason.clone());
        run.error_class = Some("rejected".into());
        ctx.tx.put_run(&run)?;
        extra.push(snap("run", &run));
    }
    task.reason = Some(reason);
    // The rejected work stays with its run; the task shows no result it does not have.
    task.output = None;
    task.outcome = None;
    if task.attempts >= task.retry_policy.max_attempts {
        task.status = Status::Failed;
        ctx.save(&mut task, "task.rejected", &extra)?;
        ended_failed(ctx, &task)?;
    } else {
        graph::settle(ctx, &mut task)?;
        ctx.save(&mut task, "task.rejected", &extra)?;
    }
    Ok(TaskOut {
        task: task.view(),
        warnings: vec![],
    })
}
