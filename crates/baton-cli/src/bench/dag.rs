//! Scenario 3, DAG fan-out and fan-in. A layered graph: a root, then layers that alternate a
//! fan-out of FANOUT tasks (each blocked by the join before) and a join (blocked by the
//! whole fan-out before it), DEPTH layers in all. Agents long-poll, complete at once (no
//! service time: what is measured is coordination), and the graph runs to the end.
//!
//! Release latency, per dependent: from the answer of the completion of its last blocker to
//! the answer of the claim that got it (both seen by the agents, on one clock). Makespan:
//! from the first claim to the last completion, against the critical path (DEPTH tasks in a
//! chain, each needing a claim and a completion).

use crate::stats::{Latency, Meter, Syncs};
use crate::{claim_one, lease_call_timed, new_workspace, post_batch, row_with, AgentConn, Args};
use baton_core::Baton;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `DEPTHxFANOUT` → (depth, fanout).
fn parse_shape(shape: &str) -> anyhow::Result<(usize, usize)> {
    let (d, f) = shape
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--dag {shape}: expected DEPTHxFANOUT, e.g. 3x1000"))?;
    let (depth, fanout): (usize, usize) = (d.parse()?, f.parse()?);
    anyhow::ensure!(
        depth >= 2 && fanout >= 1,
        "--dag {shape}: depth ≥ 2, fan-out ≥ 1"
    );
    Ok((depth, fanout))
}

/// Creates the graph's layers in order; every layer's ids.
async fn create_graph(
    http: &reqwest::Client,
    base: &str,
    planner: &str,
    depth: usize,
    fanout: usize,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut layers: Vec<Vec<String>> = Vec::new();
    for layer in 0..depth {
        let size = if layer % 2 == 1 { fanout } else { 1 };
        let blockers = layers.last().cloned().unwrap_or_default();
        let tasks: Vec<serde_json::Value> = (0..size)
            .map(|i| {
                serde_json::json!({
                    "ref": format!("l{layer}-{i}"),
                    "title": format!("layer {layer} task {i}"),
                    "blocked_by": blockers,
                })
            })
            .collect();
        layers.push(post_batch(http, base, planner, &tasks).await?);
    }
    Ok(layers)
}

/// Runs every shape of `--dag`, each in a workspace of its own.
pub(crate) async fn run(
    baton: &Baton,
    bases: &[String],
    args: &Args,
    syncs: &Syncs,
) -> anyhow::Result<()> {
    for shape in &args.dag {
        let (depth, fanout) = parse_shape(shape)?;
        let (worker, planner) = new_workspace(baton, &format!("dag-{shape}")).await?;
        let http = reqwest::Client::new();
        let layers = create_graph(&http, &bases[0], &planner, depth, fanout).await?;
        let total: usize = layers.iter().map(Vec::len).sum();
        let started = Instant::now();
        let meter = Meter::start(syncs, &args.server_pid);
        // When each task's claim and completion were answered, since `started`.
        let claimed_at: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        let completed_at: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        let mut agents = Vec::new();
        for a in 0..args.agents {
            let (base, token) = (bases[a % bases.len()].clone(), worker.clone());
            let (claimed_at, completed_at, done) =
                (claimed_at.clone(), completed_at.clone(), done.clone());
            agents.push(tokio::spawn(async move {
                let conn = &mut AgentConn::open(&base, &token).await?;
                let mut complete = Latency::default();
                let agent = format!("dag-{a}");
                while done.load(Ordering::SeqCst) < total as u64 {
                    let body = serde_json::json!({ "agent": agent, "wait": "1s" });
                    let answer = claim_one(conn, &body).await?;
                    let at = started.elapsed();
                    let Some(c) = answer else { continue };
                    let (id, lease) = (c.task.id, c.lease.token.as_str());
                    if let Ok(mut m) = claimed_at.lock() {
                        m.insert(id.clone(), at);
                    }
                    let took = lease_call_timed(conn, &id, "complete", lease).await?;
                    complete.record(took);
                    if let Ok(mut m) = completed_at.lock() {
                        m.insert(id, started.elapsed());
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                anyhow::Ok(complete)
            }));
        }
        let mut complete = Latency::default();
        for a in agents {
            complete.merge(&a.await??);
        }
        let claimed_at = claimed_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let completed_at = completed_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        anyhow::ensure!(
            claimed_at.len() == total && completed_at.len() == total,
            "{total} tasks, {} claimed, {} completed",
            claimed_at.len(),
            completed_at.len()
        );
        // Every dependent's release, and each layer's first (without the queueing of a wide
        // layer behind a few agents).
        let (mut release, mut first_release) = (Latency::default(), Latency::default());
        for pair in layers.windows(2) {
            // The last blocker's completion releases the layer.
            let freed = pair[0]
                .iter()
                .filter_map(|b| completed_at.get(b))
                .max()
                .copied();
            let Some(freed) = freed else { continue };
            let waits: Vec<Duration> = pair[1]
                .iter()
                .filter_map(|id| claimed_at.get(id))
                .map(|claimed| claimed.saturating_sub(freed))
                .collect();
            waits.iter().for_each(|&w| release.record(w));
            if let Some(&w) = waits.iter().min() {
                first_release.record(w);
            }
        }
        let first = claimed_at.values().min().copied().unwrap_or_default();
        let last = completed_at.values().max().copied().unwrap_or_default();
        let makespan = last.saturating_sub(first);
        let per_step = makespan.as_secs_f64() * 1000.0 / depth as f64;
        let notes = format!(
            "{total} tasks; makespan {:.1} ms over a critical path of {depth} tasks ({per_step:.2} ms per step); {}",
            makespan.as_secs_f64() * 1000.0,
            meter.notes(total as u64)
        );
        let rate = Some(total as f64 / makespan.as_secs_f64().max(1e-9));
        row_with(
            &format!("dag {shape}: release (last blocker completed → dependent claimed)"),
            args,
            args.agents,
            rate,
            &release,
            &notes,
        );
        row_with(
            &format!("dag {shape}: first release of each layer"),
            args,
            args.agents,
            None,
            &first_release,
            "",
        );
        row_with(
            &format!("dag {shape}: complete"),
            args,
            args.agents,
            None,
            &complete,
            "",
        );
    }
    Ok(())
}
