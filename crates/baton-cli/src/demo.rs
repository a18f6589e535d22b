//! `baton demo`: a project planned as a DAG and worked through by simulated agents in this
//! process, through the same operations every surface calls. Agents claim, heartbeat,
//! record what they learn, sometimes fail and retry; one vanishes mid-task so its lease
//! expires and another agent takes over. Ends with a summary and a verified replay.

use baton_core::api::*;
use baton_core::ops::plan;
use baton_core::{Baton, Code, Error, LeaseOp};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLAN: &str = r#"
name: pm-tool
tasks:
  - ref: product
    title: Build an agent-first project management tool
    type: epic
    intent: Let a fleet of AI agents plan, claim and hand off work without a human dispatcher.
    context:
      - type: decision
        content: Agents are the primary users; every response is machine-readable.
    children:
      - ref: requirements
        title: Write the requirements
        type: investigation
        priority: 10
        intent: Know what agents need before building anything.
        steps: [Interview three agent frameworks, List must-have operations]
      - ref: model
        title: Design the domain model
        priority: 8
        blocked_by: [requirements]
        intent: Tasks, runs, leases and context as one consistent model.
      - ref: scheduling
        title: Design claim order and leases
        priority: 8
        blocked_by: [requirements]
        intent: Exactly one agent works a task; a vanished agent loses it.
      - ref: storage
        title: Build the storage layer
        blocked_by: [model]
        required_capabilities: [rust]
        intent: Durable, group-committed writes.
      - ref: api
        title: Build the API
        blocked_by: [model, scheduling]
        required_capabilities: [rust]
        intent: One operation layer behind HTTP, MCP and the CLI.
      - ref: policy
        title: Define roles and policy
        blocked_by: [api]
        intent: Workers claim, planners shape, reviewers approve.
      - ref: observability
        title: Add metrics and traces
        blocked_by: [storage, api]
        intent: Operators see queue depth and cycle time.
      - ref: rollout
        title: Plan the staged rollout
        blocked_by: [policy, observability]
        intent: Ship to canary agents first.
"#;

/// A small deterministic random source (xorshift), so a seed replays the same story.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Shared {
    start: Instant,
    json: bool,
    retries: AtomicU64,
    claims: AtomicU64,
}

impl Shared {
    fn say(&self, who: &str, what: String) {
        if !self.json {
            say!(
                "{:>6.2}s  {who:<9} {what}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Runs the demo in a fresh scratch store; returns the summary.
pub(crate) async fn run(args: &crate::args::DemoArgs, json_mode: bool) -> Result<Value, Error> {
    // Checked before anything is made: a refused demo leaves no scratch store behind.
    let workers = args.workers;
    if !(1..=16).contains(&workers) {
        return Err(Error::invalid(
            format!("--workers is {workers}; the demo runs 1 to 16"),
            "e.g. --workers 3",
        ));
    }
    let dir = std::env::temp_dir().join(format!("baton-demo-{}", baton_core::id::new_id("run")));
    let baton = crate::open(&dir, baton_store_sqlite::Durability::Full)?;
    let planner = baton.actor("default", "planner").await?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        json: json_mode,
        retries: AtomicU64::new(0),
        claims: AtomicU64::new(0),
    });
    let seed = args
        .seed
        .unwrap_or_else(|| shared.start.elapsed().as_nanos() as u64 | 1);

    let doc = plan::parse(PLAN)?;
    let applied = baton.apply_plan(&planner, None, doc).await?;
    let total = applied.tasks.len();
    shared.say(
        "planner",
        format!(
            "applied plan 'pm-tool': {total} tasks in one transaction (data in {})",
            dir.display()
        ),
    );

    let mut handles = Vec::new();
    for w in 0..workers {
        let baton = baton.clone();
        let shared = shared.clone();
        let name = format!("agent-{}", w + 1);
        // Every other agent knows Rust; one agent will vanish mid-task once.
        let caps = if w % 2 == 0 {
            vec!["rust".to_string()]
        } else {
            vec![]
        };
        let vanishes = w == workers - 1 && workers > 1;
        let rng = Rng(seed.wrapping_mul(w as u64 + 7) | 1);
        handles.push(tokio::spawn(async move {
            worker(baton, shared, name, caps, vanishes, rng).await
        }));
    }
    // The epic finishes last: when its children are done it becomes claimable itself.
    for h in handles {
        h.await
            .map_err(|e| Error::new(Code::Internal, format!("worker crashed: {e}"), ""))??;
    }
    summary(&baton, &planner, &shared, &dir).await
}

async fn worker(
    baton: Baton,
    shared: Arc<Shared>,
    name: String,
    caps: Vec<String>,
    mut vanishes: bool,
    mut rng: Rng,
) -> Result<(), Error> {
    let me = baton.actor("default", &name).await?;
    let mut idle = 0;
    loop {
        let req = ClaimRequest {
            agent: name.clone(),
            capabilities: caps.clone(),
            count: Some(1),
            lease_ttl: Some(baton_core::time::Duration(1500)),
            wait: Some(baton_core::time::Duration(500)),
        };
        let claims = baton.claim(&me, None, req).await?.claims;
        let Some(claim) = claims.into_iter().next() else {
            let open = baton
                .list_tasks(&me, Default::default())?
                .tasks
                .iter()
                .filter(|t| !t.status.is_terminal())
                .count();
            idle += 1;
            if open == 0 || idle > 40 {
                return Ok(());
            }
            continue;
        };
        idle = 0;
        shared.claims.fetch_add(1, Ordering::Relaxed);
        let (id, token) = (claim.task.id.clone(), claim.lease.token.clone());
        shared.say(
            &name,
            format!(
                "claimed  '{}' (attempt {}, epoch {})",
                claim.task.title, claim.run.attempt, claim.lease.epoch
            ),
        );
        if vanishes {
            vanishes = false;
            shared.say(
                &name,
                "vanishes without a word; its lease will expire".into(),
            );
            tokio::time::sleep(Duration::from_millis(2500)).await;
            // Coming back, its token is stale: the fence holds.
            let late = baton
                .lease_op(
                    &me,
                    None,
                    &id,
                    &token,
                    LeaseOp::Complete(Complete::default()),
                )
                .await;
            if let Err(e) = late {
                shared.say(
                    &name,
                    format!(
                        "returns, tries to complete: {} (the fence held)",
                        e.code.as_str()
                    ),
                );
            }
            continue;
        }
        let steps = rng.between(2, 4);
        for step in 1..=steps {
            tokio::time::sleep(Duration::from_millis(rng.between(40, 120))).await;
            let hb = Heartbeat {
                progress: Some(step as f64 / steps as f64),
                message: Some(format!("step {step} of {steps}")),
                ..Default::default()
            };
            baton
                .lease_op(&me, None, &id, &token, LeaseOp::Heartbeat(hb))
                .await?;
        }
        if claim.run.attempt == 1 && rng.chance(30) {
            shared.retries.fetch_add(1, Ordering::Relaxed);
            let f = Fail {
                error: "flaky tool call timed out".into(),
                class: Some("timeout".into()),
                no_retry: false,
            };
            baton
                .lease_op(&me, None, &id, &token, LeaseOp::Fail(f))
                .await?;
            shared.say(
                &name,
                format!(
                    "failed   '{}': flaky tool call (will be retried after backoff)",
                    claim.task.title
                ),
            );
            continue;
        }
        let note = AddContext {
            kind: "discovery".into(),
            content: format!(
                "{name} found that '{}' needs a follow-up review",
                claim.task.title
            ),
            supersedes: None,
            lease: Some(token.clone()),
        };
        baton.add_context(&me, None, &id, note).await?;
        let c = Complete {
            output: Some(json!({ "summary": format!("{} done", claim.task.title) })),
            outcome: Some("done".into()),
            force: false,
        };
        baton
            .lease_op(&me, None, &id, &token, LeaseOp::Complete(c))
            .await?;
        shared.say(&name, format!("done     '{}'", claim.task.title));
    }
}

async fn summary(
    baton: &Baton,
    actor: &Actor,
    shared: &Shared,
    dir: &std::path::Path,
) -> Result<Value, Error> {
    let tasks = baton
        .list_tasks(
            actor,
            baton_core::store::TaskFilter {
                limit: 1000,
                ..Default::default()
            },
        )?
        .tasks;
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for t in &tasks {
        *by_status.entry(t.status.as_str().to_string()).or_default() += 1;
    }
    let mut after = 0;
    let mut events = 0;
    let mut expired = 0;
    let mut cycle_ms: Vec<i64> = Vec::new();
    loop {
        let page = baton.events(actor, after, 1000)?.events;
        let Some(last) = page.last() else { break };
        after = last.seq;
        events += page.len();
        for e in &page {
            if e.kind == "task.lease_expired" {
                expired += 1;
            }
            if e.kind == "task.completed" {
                if let Some(created) = e.data["task"]["created_at"]
                    .as_str()
                    .and_then(|t| baton_core::time::parse_timestamp(t).ok())
                {
                    cycle_ms.push(e.at - created);
                }
            }
        }
    }
    cycle_ms.sort_unstable();
    let attempts: u64 = tasks.iter().map(|t| t.attempts as u64).sum();
    let avg = if cycle_ms.is_empty() {
        0
    } else {
        cycle_ms.iter().sum::<i64>() / cycle_ms.len() as i64
    };
    let (replayed, rows, difference) = crate::replay_check(dir).await?;
    let summary = json!({
        "replay": { "events": replayed, "rows": rows, "equal": difference.is_none(), "difference": difference },
        "tasks": tasks.len(),
        "by_status": by_status,
        "claims": shared.claims.load(Ordering::Relaxed),
        "attempts": attempts,
        "retries": shared.retries.load(Ordering::Relaxed),
        "lease_expiries": expired,
        "cycle_ms": { "avg": avg, "max": cycle_ms.last().copied().unwrap_or(0) },
        "events": events,
        "elapsed_s": (shared.start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "data_dir": dir.display().to_string(),
    });
    if !shared.json {
        say!();
        say!(
            "summary: {} tasks ({}), {} claims, {} retries, {} lease expiries, {} events",
            tasks.len(),
            by_status
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            summary["claims"],
            summary["retries"],
            expired,
            events
        );
        say!(
            "cycle time: avg {avg} ms, max {} ms; took {}s",
            summary["cycle_ms"]["max"],
            summary["elapsed_s"]
        );
        match &difference {
            None => {
                say!("replay: {replayed} events rebuild the same {rows} rows as the live store")
            }
            Some(d) => say!("replay: DIFFERS at {d}"),
        }
        say!("inspect it: baton --data-dir {} events", dir.display());
    }
    Ok(json!({ "demo": summary }))
}
