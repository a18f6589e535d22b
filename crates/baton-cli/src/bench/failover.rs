//! Scenario 4, failures. Agents drain a queue over HTTP under short leases (1s); some of
//! them vanish while holding a lease (they stop without a word, as a killed process would),
//! and, given several replicas and their pids, the last replica is killed with SIGKILL
//! mid-run. Agents of a dead replica carry on against the next one, retrying the request
//! that failed; completions carry an `Idempotency-Key`, so a retry of one that was
//! committed gets its stored answer.
//!
//! Reported: time from an agent's vanishing to another agent's claim of its task (lease
//! expiry, backoff and the reaper included), duplicate executions (a task whose completion
//! was acknowledged to two agents) and lost tasks (not done at the end): both must be 0.

use crate::stats::{Latency, Meter, Syncs};
use crate::{new_workspace, post_batch, row_with, Args};
use baton_core::Baton;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lease of every claim: the shortest allowed, so vanished work comes back quickly.
const LEASE: &str = "1s";
/// How long the scenario may take before what is left counts as lost.
const DEADLINE: Duration = Duration::from_secs(120);

/// What the agents saw, shared.
#[derive(Default)]
struct Log {
    /// Vanished agents' tasks: id → when the agent vanished.
    vanished: HashMap<String, Duration>,
    /// Claims answered: (id, when).
    claims: Vec<(String, Duration)>,
    /// Acknowledged completions per task.
    completions: HashMap<String, u32>,
    /// Requests that failed against a dead replica and were retried on another.
    retried: u64,
}

/// One agent's way to the replicas: it stays on one until its connection fails (a replica
/// that died), then moves to the next, retrying the request that failed.
struct Client {
    http: reqwest::Client,
    bases: Vec<String>,
    at: usize,
    token: String,
    log: Arc<Mutex<Log>>,
}

impl Client {
    /// POSTs `body` to `path`; the answer's status and JSON.
    async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
        idempotency: Option<&str>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        for _ in 0..self.bases.len() * 3 {
            let mut req = self
                .http
                .post(format!("{}{path}", self.bases[self.at % self.bases.len()]))
                .bearer_auth(&self.token)
                .json(body);
            if let Some(key) = idempotency {
                req = req.header("Idempotency-Key", key);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    return Ok((status, resp.json().await.unwrap_or_default()));
                }
                Err(e) if e.is_connect() || e.is_request() => {
                    self.at += 1;
                    if let Ok(mut log) = self.log.lock() {
                        log.retried += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("no replica answers {path}")
    }
}

/// Runs the failure scenario on `--tasks` tasks of a workspace of its own.
pub(crate) async fn run(
    baton: &Baton,
    bases: &[String],
    args: &Args,
    syncs: &Syncs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kill_agents < args.agents,
        "--kill-agents must be fewer than --agents"
    );
    let (worker, planner) = new_workspace(baton, "failures").await?;
    let http = reqwest::Client::new();
    let total = args.tasks as usize;
    let tasks: Vec<_> = (0..total)
        .map(|i| serde_json::json!({ "ref": i.to_string(), "title": format!("failure {i}") }))
        .collect();
    post_batch(&http, &bases[0], &planner, &tasks).await?;
    let kill_replica = bases.len() >= 2 && args.server_pid.len() == bases.len();
    let log: Arc<Mutex<Log>> = Arc::default();
    let started = Instant::now();
    let meter = Meter::start(syncs, &args.server_pid);
    let mut agents = Vec::new();
    for a in 0..args.agents {
        let log = log.clone();
        let mut client = Client {
            http: http.clone(),
            bases: bases.to_vec(),
            at: a,
            token: worker.clone(),
            log: log.clone(),
        };
        // Agents that vanish do so on their tenth claim, while holding its lease.
        let vanishes_on = (a < args.kill_agents).then_some(10);
        agents.push(tokio::spawn(async move {
            let agent = format!("fail-{a}");
            let mut claims = 0;
            loop {
                let done = log.lock().map(|l| l.completions.len()).unwrap_or(0);
                if done >= total || started.elapsed() > DEADLINE {
                    return anyhow::Ok(());
                }
                let body = serde_json::json!({ "agent": agent, "wait": "1s", "lease_ttl": LEASE });
                let (status, claimed) = client.post("/v1/tasks/claim", &body, None).await?;
                anyhow::ensure!(status.is_success(), "claim: {claimed}");
                let Some(c) = claimed["claims"].get(0) else {
                    continue;
                };
                let id = c["task"]["id"].as_str().unwrap_or_default().to_string();
                let lease = c["lease"]["token"].as_str().unwrap_or_default().to_string();
                let now = started.elapsed();
                claims += 1;
                if let Ok(mut log) = log.lock() {
                    log.claims.push((id.clone(), now));
                    if vanishes_on == Some(claims) {
                        log.vanished.insert(id, now);
                        return Ok(()); // gone, lease held
                    }
                }
                let body = serde_json::json!({ "lease": lease });
                let key = format!("complete-{lease}");
                let path = format!("/v1/tasks/{id}/complete");
                let (status, answer) = client.post(&path, &body, Some(&key)).await?;
                if status.is_success() {
                    if let Ok(mut log) = log.lock() {
                        *log.completions.entry(id).or_default() += 1;
                    }
                } else {
                    // LEASE_LOST: the lease lapsed before the completion (a slow replica
                    // failover); the task goes back to the queue, which is what fencing is for.
                    anyhow::ensure!(
                        answer["error"]["code"] == "LEASE_LOST",
                        "complete: {answer}"
                    );
                }
            }
        }));
    }
    if kill_replica {
        // Kill the last replica once a third of the work is done.
        while log.lock().map(|l| l.completions.len()).unwrap_or(0) < total / 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = args.server_pid[args.server_pid.len() - 1].to_string();
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()?;
        anyhow::ensure!(killed.success(), "kill -9 {pid} failed");
    }
    for a in agents {
        a.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let log = log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut reclaim = Latency::default();
    for (id, gone) in &log.vanished {
        if let Some((_, at)) = log.claims.iter().find(|(c, at)| c == id && at > gone) {
            reclaim.record(at.saturating_sub(*gone));
        }
    }
    let duplicates = log.completions.values().filter(|&&n| n > 1).count();
    let lost = total - log.completions.len();
    let notes = format!(
        "{} agents vanished mid-lease, {} re-claimed; replica killed: {}; {} requests retried on another replica; duplicate executions {duplicates}, lost tasks {lost}; {}",
        log.vanished.len(),
        reclaim.len(),
        if kill_replica { "yes" } else { "no" },
        log.retried,
        meter.notes(total as u64)
    );
    let rate = Some(log.completions.len() as f64 / secs);
    row_with(
        "failures: vanished agent → task re-claimed",
        args,
        args.agents,
        rate,
        &reclaim,
        &notes,
    );
    anyhow::ensure!(
        duplicates == 0 && lost == 0,
        "failures: {duplicates} duplicates, {lost} lost"
    );
    Ok(())
}
