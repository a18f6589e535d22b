//! Scenario 2, steady state in an open loop. Tasks arrive at a fixed rate whatever the
//! server's answers (each creation is sent at its intended time on a task of its own);
//! agents long-poll for work, work for a service time drawn from a small set, heartbeat
//! every third of their lease, and complete.
//!
//! Latencies are measured from intended start times, so a slow server cannot hide its
//! slowness by delaying the requests that would have measured it (coordinated omission):
//! dispatch latency is from a task's intended arrival to the answer of the claim that got
//! it; creation latency is from the intended arrival to the creation's answer. A rate holds
//! when dispatch p99 stays under 50 ms and the backlog does not grow.

use crate::stats::{Latency, Meter, Syncs};
use crate::{claim_one, lease_call_outcome, new_workspace, row_with, AgentConn, Args, Leased};
use baton_core::Baton;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Dispatch p99 a rate must stay under to hold.
const DISPATCH_P99_MS: f64 = 50.0;

/// What one agent measured.
#[derive(Default)]
struct Seen {
    dispatch: Latency,
    heartbeat: Latency,
    complete: Latency,
    completed: u64,
    /// Leases that lapsed before the agent's heartbeat or completion reached the server
    /// (the agent drops the task, which comes back to the queue after its backoff).
    lost: u64,
    /// When the last completion was answered, since the start.
    last: Duration,
}

/// Runs every rate of `--open-rate` in a workspace of its own.
pub(crate) async fn run(
    baton: &Baton,
    bases: &[String],
    args: &Args,
    syncs: &Syncs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.service_ms.is_empty(),
        "--service-ms needs at least one value"
    );
    let lease = baton_core::time::Duration::parse(&args.lease_ttl)
        .map_err(|e| anyhow::anyhow!("--lease-ttl: {}", e.message))?;
    let beat = Duration::from_millis(lease.ms() as u64 / 3);
    for &rate in &args.open_rate {
        anyhow::ensure!(rate > 0, "--open-rate values must be at least 1");
        let (worker, planner) = new_workspace(baton, &format!("open-loop-{rate}")).await?;
        let http = reqwest::Client::new();
        let total = rate * args.open_secs;
        let started = Instant::now();
        let arriving = Arc::new(AtomicBool::new(true));
        let claimed = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        // Tasks that ended failed (their attempts used up by lapsed leases): they end the
        // run as completions do.
        let failed = Arc::new(AtomicU64::new(0));
        let meter = Meter::start(syncs, &args.server_pid);

        let mut agents = Vec::new();
        for a in 0..args.open_agents {
            let (base, token) = (bases[a % bases.len()].clone(), worker.clone());
            let (arriving, claimed, finished, failed) = (
                arriving.clone(),
                claimed.clone(),
                finished.clone(),
                failed.clone(),
            );
            let (service, lease_ttl) = (args.service_ms.clone(), args.lease_ttl.clone());
            agents.push(tokio::spawn(async move {
                let conn = &mut AgentConn::open(&base, &token).await?;
                let mut seen = Seen::default();
                let agent = format!("open-{a}");
                loop {
                    let ended = finished.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst);
                    if !arriving.load(Ordering::SeqCst) && ended >= total {
                        return anyhow::Ok(seen);
                    }
                    let body =
                        serde_json::json!({ "agent": agent, "wait": "1s", "lease_ttl": lease_ttl });
                    let answer = claim_one(conn, &body).await?;
                    let answered = started.elapsed();
                    let Some(c) = answer else { continue };
                    claimed.fetch_add(1, Ordering::SeqCst);
                    // The title carries the intended arrival, in µs since the start.
                    let (i, intended) = parse_title(&c.task.title)?;
                    seen.dispatch.record(answered.saturating_sub(intended));
                    let (id, lease) = (c.task.id, c.lease.token);
                    // Work: the service time, with a heartbeat every third of the lease.
                    let mut left =
                        Duration::from_millis(service[(i as usize * 7919) % service.len()]);
                    let mut lapsed = false;
                    while left > beat {
                        tokio::time::sleep(beat).await;
                        left -= beat;
                        match lease_call_outcome(conn, &id, "heartbeat", &lease).await? {
                            Leased::Done(took) => seen.heartbeat.record(took),
                            Leased::Lost => {
                                lapsed = true; // drop the task: it is someone else's now
                                break;
                            }
                        }
                    }
                    if lapsed {
                        seen.lost += 1;
                        continue;
                    }
                    tokio::time::sleep(left).await;
                    match lease_call_outcome(conn, &id, "complete", &lease).await? {
                        Leased::Done(took) => {
                            seen.complete.record(took);
                            seen.completed += 1;
                            seen.last = started.elapsed();
                            finished.fetch_add(1, Ordering::SeqCst);
                        }
                        Leased::Lost => seen.lost += 1,
                    }
                }
            }));
        }

        // Arrivals: one creation per intended time, each on its own task.
        let mut creations = Vec::new();
        for i in 0..total {
            let intended = Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + intended)).await;
            let (http, base, token) = (
                http.clone(),
                bases[i as usize % bases.len()].clone(),
                planner.clone(),
            );
            creations.push(tokio::spawn(async move {
                let body =
                    serde_json::json!({ "title": format!("open {i} {}", intended.as_micros()) });
                let resp =
                    super::post_admitted(&http, &format!("{base}/v1/tasks"), &token, &body).await?;
                anyhow::ensure!(resp.status().is_success(), "create: {}", resp.text().await?);
                anyhow::Ok(started.elapsed().saturating_sub(intended))
            }));
        }
        let window = started.elapsed();
        // Backlog: created but not yet claimed, when the last arrival was due.
        let backlog = total.saturating_sub(claimed.load(Ordering::SeqCst));
        arriving.store(false, Ordering::SeqCst);
        let mut create = Latency::default();
        for c in creations {
            create.record(c.await??);
        }
        let watcher = {
            let (http, base, token) = (http.clone(), bases[0].clone(), planner.clone());
            let (finished, failed) = (finished.clone(), failed.clone());
            tokio::spawn(async move {
                while finished.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < total {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    failed.store(count_failed(&http, &base, &token).await?, Ordering::SeqCst);
                }
                anyhow::Ok(())
            })
        };
        let mut seen = Seen::default();
        for a in agents {
            let s = a.await??;
            seen.dispatch.merge(&s.dispatch);
            seen.heartbeat.merge(&s.heartbeat);
            seen.complete.merge(&s.complete);
            seen.completed += s.completed;
            seen.lost += s.lost;
            seen.last = seen.last.max(s.last);
        }
        watcher.await??;
        let failed = failed.load(Ordering::SeqCst);
        anyhow::ensure!(
            seen.completed + failed == total,
            "{total} tasks arrived, {} completed, {failed} failed",
            seen.completed
        );
        let secs = seen.last.as_secs_f64().max(1e-9);
        // Growing: more than a tenth of a second of arrivals (or one per agent) still waiting.
        let allowed = (rate / 10).max(args.open_agents as u64);
        // A rate that holds is taken without shedding (429s) as well.
        let refused = super::REFUSED.swap(0, Ordering::Relaxed);
        let holds = seen.dispatch.ms(0.99) < DISPATCH_P99_MS
            && backlog <= allowed
            && failed == 0
            && refused == 0;
        let verdict = format!(
            "{}: backlog {backlog} at {:.1}s (allowed {allowed}); {} leases lapsed before a heartbeat or completion; {failed} tasks failed (attempts used up); {} calls refused with 429 and retried; {}",
            if holds { "holds" } else { "does not hold" },
            window.as_secs_f64(),
            seen.lost,
            refused,
            meter.notes(total)
        );
        let label = |what: &str| format!("open loop {rate}/s: {what}");
        let achieved = Some(seen.completed as f64 / secs);
        row_with(
            &label("dispatch (intended arrival → claimed)"),
            args,
            args.open_agents,
            achieved,
            &seen.dispatch,
            &verdict,
        );
        row_with(
            &label("create (from intended start)"),
            args,
            1,
            None,
            &create,
            "",
        );
        row_with(
            &label("heartbeat"),
            args,
            args.open_agents,
            None,
            &seen.heartbeat,
            "",
        );
        row_with(
            &label("complete"),
            args,
            args.open_agents,
            None,
            &seen.complete,
            "",
        );
    }
    Ok(())
}

/// `open I MICROS` → (I, intended arrival).
fn parse_title(title: &str) -> anyhow::Result<(u64, Duration)> {
    let mut parts = title.split(' ').skip(1);
    let i = parts.next().and_then(|p| p.parse().ok());
    let us = parts.next().and_then(|p| p.parse().ok());
    match (i, us) {
        (Some(i), Some(us)) => Ok((i, Duration::from_micros(us))),
        _ => anyhow::bail!("claimed a task that is not an arrival: {title}"),
    }
}

/// How many tasks of the workspace ended failed, read page by page over HTTP.
async fn count_failed(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<u64> {
    let (mut count, mut cursor) = (0, None::<String>);
    loop {
        let mut query = vec![("status", "failed".to_string()), ("limit", "1000".into())];
        query.extend(cursor.map(|c| ("cursor", c)));
        let page: serde_json::Value = http
            .get(format!("{base}/v1/tasks"))
            .bearer_auth(token)
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        count += page["tasks"].as_array().map_or(0, |t| t.len() as u64);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(count),
        }
    }
}
