//! `baton-bench`: throughput and latency of Baton, in-process, over HTTP and through the
//! CLI. Prints one markdown table row per measurement (`--print-header` prints the header);
//! the scripts under `bench/` drive it over the grids recorded in BENCHMARKS.md.
//!
//! Method: preload N ready tasks (concurrent creates, so group commit batches them), then
//! for each worker count W run W concurrent agents doing claim → complete until C cycles
//! are done, timing every claim. Latency percentiles come from HDR histograms (three
//! significant digits). The scenarios of the job-queue comparison (drain, open loop, DAG,
//! failures, scale) live in their own modules and run over HTTP.
//!
//! Over HTTP (`--http-agents`, `--sse-subscribers`) the server runs in-process on loopback,
//! or, with `--server`, is a separate `baton serve` on the same `--dir`, so that the CPU of
//! client and server can be told apart.

mod conn;
mod dag;
mod failover;
mod open_loop;
mod stats;
mod wire;

use baton_core::api::*;
use baton_core::ops::task::BatchItem;
use baton_core::time::SystemClock;
use baton_core::{Baton, LeaseOp};
use baton_store_sqlite::{Durability, Options, SqliteStore};
use clap::Parser;
use conn::AgentConn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// mimalloc rather than glibc's malloc: the server's writers build and drop large buffers
/// (batched statements, event payloads) among many small ones from several threads, and
/// glibc spends a large share of their CPU consolidating its free lists (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark Baton: in-process, over HTTP, through the CLI; the job-queue scenarios.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Print the header of the table every row belongs to, and exit.
    #[arg(long)]
    print_header: bool,
    /// Ready tasks to preload before measuring.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Worker counts to measure, comma separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    workers: Vec<usize>,
    /// Claim → complete cycles per measurement.
    #[arg(long, default_value_t = 5_000)]
    cycles: u64,
    /// full (default, safe against power loss) or normal.
    #[arg(long, default_value = "full")]
    durability: String,
    /// Also time CLI commands against the preloaded store, using this baton binary.
    #[arg(long)]
    cli: Option<std::path::PathBuf>,
    /// Also measure over HTTP: this many agents doing claim → heartbeat → complete against
    /// an in-process `baton serve` on loopback (0 to skip).
    #[arg(long, default_value_t = 0)]
    http_agents: usize,
    /// Also measure SSE fan-out: this many concurrent subscribers on `GET /v1/events/stream`
    /// while one writer creates tasks over HTTP at `--sse-rate` per second for `--sse-secs`
    /// (0 to skip). Needs two file descriptors per subscriber in-process (`ulimit -n`).
    #[arg(long, default_value_t = 0)]
    sse_subscribers: usize,
    /// Drain scenario (the figure comparable with job queues): this many agents over HTTP
    /// claim and complete the preloaded ready tasks, with no work in between, until none
    /// is left; tasks per second (0 to skip). Use with `--workers 0`.
    #[arg(long, default_value_t = 0)]
    drain_agents: usize,
    /// Tasks each drain claim asks for (1 = unbatched).
    #[arg(long, default_value_t = 1)]
    claim_batch: u32,
    /// HTTP agents (drain and claim→heartbeat→complete) claim their next work in the call
    /// that completes the last (`POST /v1/tasks/complete` with `next`): one round trip per
    /// task fewer.
    #[arg(long)]
    claim_next: bool,
    /// Tasks per second the SSE writer creates.
    #[arg(long, default_value_t = 200)]
    sse_rate: u64,
    /// Seconds the SSE writer runs.
    #[arg(long, default_value_t = 5)]
    sse_secs: u64,
    /// Run the HTTP measurements against these running `baton serve` replicas (comma
    /// separated; agents are spread across them), started on the same `--dir` or
    /// `--database`, instead of an in-process server.
    #[arg(long)]
    server: Option<String>,
    /// PostgreSQL instead of the embedded store (an empty database): postgres://…
    #[arg(long)]
    database: Option<String>,
    /// Keep the store here instead of a temporary directory (`--data-dir` as for `baton`).
    #[arg(long, alias = "data-dir")]
    dir: Option<std::path::PathBuf>,
    /// Process ids of the `--server` replicas, so their CPU and memory are reported
    /// (comma separated; without them, this process's are).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Before measuring, run this many times `--tasks` through claim → complete, so the
    /// measurements run over a history of finished tasks (scale scenario).
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// Open loop (steady state): tasks arrive at these rates per second, comma separated,
    /// each run for `--open-secs`; `--open-agents` agents long-poll, work for a service time
    /// drawn from `--service-ms`, heartbeat every third of `--lease-ttl`, and complete.
    #[arg(long, value_delimiter = ',')]
    open_rate: Vec<u64>,
    /// Seconds each open-loop rate runs.
    #[arg(long, default_value_t = 10)]
    open_secs: u64,
    /// Agents in the open loop.
    #[arg(long, default_value_t = 64)]
    open_agents: usize,
    /// Service times the open loop draws from, in milliseconds, comma separated.
    #[arg(long, default_value = "1,5,20,100", value_delimiter = ',')]
    service_ms: Vec<u64>,
    /// Lease of open-loop claims (a duration: 3s).
    #[arg(long, default_value = "3s")]
    lease_ttl: String,
    /// DAG scenario: layered graphs DEPTH×FANOUT (comma separated, e.g. 3x1000,10x10):
    /// a root, then DEPTH-1 layers that alternate a fan-out of FANOUT tasks and a join.
    #[arg(long, value_delimiter = ',')]
    dag: Vec<String>,
    /// Agents that work the DAG and failure scenarios.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Failure scenario: agents drain the preloaded tasks over HTTP, and this many of them
    /// vanish while holding a lease (0 to skip); with several `--server` replicas and their
    /// `--server-pid`, the last replica is killed with SIGKILL mid-run as well.
    #[arg(long, default_value_t = 0)]
    kill_agents: usize,
}

impl Args {
    /// What a row's label adds when agents claim in their completion calls.
    fn claim_next_label(&self) -> &'static str {
        if self.claim_next {
            ", claim with completion"
        } else {
            ""
        }
    }
}

/// Prints one table row: operation, size, durability, concurrency, rate, latency
/// percentiles of `lat`.
fn row(op: &str, args: &Args, workers: usize, rate: Option<f64>, lat: &mut [Duration]) {
    row_with(op, args, workers, rate, &stats::Latency::of(lat), "");
}

/// [`row`] with a histogram and a notes cell.
pub(crate) fn row_with(
    op: &str,
    args: &Args,
    agents: usize,
    rate: Option<f64>,
    lat: &stats::Latency,
    notes: &str,
) {
    stats::print_row(op, args.tasks, &args.durability, agents, rate, lat, notes);
}

/// Waits for every agent and pools their latency samples.
async fn pooled(
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await??);
    }
    Ok(lat)
}

/// Tasks per preload batch, and batches in flight.
const PRELOAD_BATCH: u64 = 500;
const PRELOAD_CREATORS: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_header {
        println!("{}", stats::HEADER);
        return Ok(());
    }
    let durability = match args.durability.as_str() {
        "normal" => Durability::Normal,
        _ => Durability::Full,
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("baton-bench-{}", baton_core::id::new_id("b"))),
    };
    let sqlite = match &args.database {
        Some(_) => None,
        None => Some(SqliteStore::open(
            &dir.join("baton.db"),
            Options { durability },
        )?),
    };
    let store: Arc<dyn baton_core::store::Store> = match (&args.database, &sqlite) {
        (Some(url), _) => baton_store_postgres::PgStore::open_with(
            url,
            baton_store_postgres::Options {
                synchronous_commit: durability == Durability::Full,
                ..Default::default()
            },
        )?,
        (None, Some(s)) => s.clone(),
        (None, None) => unreachable!("one store is open"),
    };
    let baton = Baton::new(store, Arc::new(SystemClock));
    let actor = baton.actor("default", "bench").await?;
    let syncs = match (&args.database, &sqlite, &args.server) {
        (Some(url), _, _) => stats::Syncs::Postgres(url.clone()),
        (None, Some(store), None) => stats::Syncs::Sqlite(store.clone()),
        _ => stats::Syncs::Unknown,
    };
    if args.history > 0 {
        history(&baton, &actor, args.history * args.tasks).await?;
    }

    // Preload: N ready tasks stay ready while measuring, plus the ones the cycles consume.
    // In batches (one transaction each), so a million tasks load in minutes on either store.
    let rounds =
        args.workers.iter().filter(|&&w| w > 0).count() as u64 + u64::from(args.http_agents > 0);
    // The open-loop, DAG and failure scenarios make their own tasks, in workspaces of their own.
    let preloads = rounds > 0 || args.drain_agents > 0 || args.cli.is_some();
    let total = if preloads {
        args.tasks + args.cycles * rounds
    } else {
        0
    };
    let started = Instant::now();
    let made = Arc::new(AtomicU64::new(0));
    let mut creators = Vec::new();
    for _ in 0..PRELOAD_CREATORS {
        let (baton, actor, made) = (baton.clone(), actor.clone(), made.clone());
        creators.push(tokio::spawn(async move {
            loop {
                let from = made.fetch_add(PRELOAD_BATCH, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                create_range(
                    &baton,
                    &actor,
                    from..total.min(from + PRELOAD_BATCH),
                    "bench task",
                )
                .await?;
            }
        }));
    }
    for c in creators {
        c.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    // Settle: fold the bulk load's WAL into the database, so the measurements below do not
    // pay for checkpointing the preload.
    if let Some(sqlite) = &sqlite {
        sqlite.checkpoint()?;
    }
    if total > 0 {
        println!(
            "| preload (batches of {PRELOAD_BATCH}) | {} | {} | {PRELOAD_CREATORS} | {:.0}/s | | | | | |",
            total,
            args.durability,
            total as f64 / secs
        );
    }

    for &workers in args.workers.iter().filter(|&&w| w > 0) {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (baton, actor, done) = (baton.clone(), actor.clone(), done.clone());
            let cycles = args.cycles;
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let agent = format!("w{w}");
                while done.fetch_add(1, Ordering::Relaxed) < cycles {
                    let t0 = Instant::now();
                    let req = ClaimRequest {
                        agent: agent.clone(),
                        ..Default::default()
                    };
                    let claims = baton.claim(&actor, None, req).await?.claims;
                    lat.push(t0.elapsed());
                    let Some(c) = claims.into_iter().next() else {
                        anyhow::bail!("queue ran dry")
                    };
                    baton
                        .lease_op(
                            &actor,
                            None,
                            &c.task.id,
                            &c.lease.token,
                            LeaseOp::Complete(Complete::default()),
                        )
                        .await?;
                }
                anyhow::Ok(lat)
            }));
        }
        let mut lat = pooled(handles).await?;
        let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
        row("claim→complete", &args, workers, Some(rate), &mut lat);
    }

    let scenarios = !args.open_rate.is_empty() || !args.dag.is_empty() || args.kill_agents > 0;
    if args.http_agents > 0 || args.sse_subscribers > 0 || args.drain_agents > 0 || scenarios {
        // The server: in-process on loopback, or the one given with --server.
        let (base, server) = match &args.server {
            Some(url) => (url.trim_end_matches('/').to_string(), None),
            None => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let base = format!("http://{}", listener.local_addr()?);
                let server = tokio::spawn(baton_server::serve(
                    listener,
                    baton.clone(),
                    "default",
                    std::future::pending(),
                ));
                (base, Some(server))
            }
        };
        if args.http_agents > 0 {
            http_bench(&baton, &base, &args, &syncs).await?;
        }
        if args.drain_agents > 0 {
            drain_bench(&baton, &base, &args, &syncs).await?;
        }
        let bases = server_urls(&base);
        if !args.open_rate.is_empty() {
            open_loop::run(&baton, &bases, &args, &syncs).await?;
        }
        if !args.dag.is_empty() {
            dag::run(&baton, &bases, &args, &syncs).await?;
        }
        if args.kill_agents > 0 {
            failover::run(&baton, &bases, &args, &syncs).await?;
        }
        if args.sse_subscribers > 0 {
            sse_bench(&baton, &base, &args).await?;
        }
        if let Some(server) = server {
            server.abort();
        }
    }
    if let Some(bin) = &args.cli {
        cli_bench(bin, &dir, &args)?;
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Runs `baton --json --data-dir DIR ARGS` and returns its stdout as JSON, and how long it took.
fn baton_cli(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(serde_json::Value, Duration)> {
    let t0 = Instant::now();
    let out = std::process::Command::new(bin)
        .args(["--json", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()?;
    let took = t0.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "baton {args:?} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok((serde_json::from_slice(&out.stdout)?, took))
}

/// The same operations through the `baton` binary, one process per command, on the warm
/// store the in-process runs left behind.
fn cli_bench(bin: &std::path::Path, dir: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let mut lat = Vec::new();
    let started = Instant::now();
    for i in 0..100 {
        lat.push(
            baton_cli(
                bin,
                dir,
                &["task", "create", "--title", &format!("cli {i}")],
            )?
            .1,
        );
    }
    let rate = 100.0 / started.elapsed().as_secs_f64();
    row("cli task create", args, 1, Some(rate), &mut lat);

    let (listed, _) = baton_cli(bin, dir, &["task", "list", "--limit", "1"])?;
    let some = listed["tasks"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut lat = Vec::new();
    for _ in 0..30 {
        lat.push(baton_cli(bin, dir, &["task", "get", &some])?.1);
    }
    row("cli task get", args, 1, None, &mut lat);

    for workers in [1usize, 8] {
        let cycles_each = 200 / workers;
        let started = Instant::now();
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (bin, dir) = (bin.to_path_buf(), dir.to_path_buf());
                std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut lat = Vec::new();
                    let agent = format!("cli-{w}");
                    for _ in 0..cycles_each {
                        let (claimed, took) = baton_cli(&bin, &dir, &["claim", "--agent", &agent])?;
                        lat.push(took);
                        let c = &claimed["claims"][0];
                        let (id, token) = (
                            c["task"]["id"].as_str().unwrap_or(""),
                            c["lease"]["token"].as_str().unwrap_or(""),
                        );
                        anyhow::ensure!(!id.is_empty(), "queue ran dry");
                        baton_cli(&bin, &dir, &["complete", id, "--lease", token])?;
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("cli worker panicked"))??,
            );
        }
        let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
        row("cli claim→complete", args, workers, Some(rate), &mut lat);
    }
    Ok(())
}

/// Creates one ready task per number of `range`, in one batch (one transaction).
async fn create_range(
    baton: &Baton,
    actor: &Actor,
    range: std::ops::Range<u64>,
    title: &str,
) -> anyhow::Result<()> {
    let items = range
        .map(|i| BatchItem {
            reference: i.to_string(),
            task: CreateTask {
                title: title.into(),
                priority: Some(0),
                ..Default::default()
            },
        })
        .collect();
    baton.create_batch(actor, None, items).await?;
    Ok(())
}

/// Scale scenario's history: `n` tasks created and run through claim → complete in-process
/// (claims of 100 at a time, 8 workers), so the store holds n finished tasks, their runs and
/// events, before the ready tasks are preloaded and measured.
async fn history(baton: &Baton, actor: &Actor, n: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let made = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (baton, actor, made) = (baton.clone(), actor.clone(), made.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let from = made.fetch_add(PRELOAD_BATCH, Ordering::Relaxed);
                if from >= n {
                    return anyhow::Ok(());
                }
                create_range(&baton, &actor, from..n.min(from + PRELOAD_BATCH), "history").await?;
                loop {
                    let req = ClaimRequest {
                        agent: format!("history-{w}"),
                        count: Some(100),
                        ..Default::default()
                    };
                    let claims = baton.claim(&actor, None, req).await?.claims;
                    if claims.is_empty() {
                        break;
                    }
                    for c in claims {
                        let op = LeaseOp::Complete(Complete::default());
                        baton
                            .lease_op(&actor, None, &c.task.id, &c.lease.token, op)
                            .await?;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    println!(
        "| history: created, claimed and completed in-process | {n} | | 8 | {:.0}/s | | | | | |",
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The servers of `--server` (comma separated), without trailing slashes.
pub(crate) fn server_urls(base: &str) -> Vec<String> {
    base.split(',')
        .map(|b| b.trim_end_matches('/').to_string())
        .collect()
}

/// A new workspace (named `name` and a unique suffix) and a worker's and a planner's key.
pub(crate) async fn new_workspace(baton: &Baton, name: &str) -> anyhow::Result<(String, String)> {
    let ws = baton
        .create_workspace(&format!("{name}-{}", baton_core::id::new_id("b")))
        .await?;
    let admin = Actor {
        workspace_id: ws.id,
        name: "bench".into(),
        agent: None,
        request_id: None,
    };
    let worker = baton.create_key(&admin, "worker", None).await?.key.token;
    let planner = baton.create_key(&admin, "planner", None).await?.key.token;
    Ok((worker, planner))
}

/// How a lease operation over HTTP ended, when it did not fail otherwise.
pub(crate) enum Leased {
    /// It succeeded, taking this long.
    Done(Duration),
    /// `LEASE_LOST`: the lease lapsed or was superseded; the task is no longer the caller's.
    Lost,
}

/// `POST /v1/tasks/{id}/{op}` with the lease on the agent's connection, timed;
/// `LEASE_LOST` is an outcome, any other refusal an error.
pub(crate) async fn lease_call_outcome(
    conn: &mut AgentConn,
    id: &str,
    op: &str,
    lease: &str,
) -> anyhow::Result<Leased> {
    let t0 = Instant::now();
    let path = format!("/v1/tasks/{id}/{op}");
    // One request, as before: a 429 here is a refusal like any other.
    let (status, answer) = conn.post(&path, &wire::LeaseBody { lease }).await?;
    if (200..300).contains(&status) {
        return Ok(Leased::Done(t0.elapsed()));
    }
    let refusal: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    anyhow::ensure!(
        refusal["error"]["code"] == "LEASE_LOST",
        "{op}: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(Leased::Lost)
}

/// [`lease_call_outcome`] where the lease must still be the caller's: how long it took.
pub(crate) async fn lease_call_timed(
    conn: &mut AgentConn,
    id: &str,
    op: &str,
    lease: &str,
) -> anyhow::Result<Duration> {
    match lease_call_outcome(conn, id, op, lease).await? {
        Leased::Done(took) => Ok(took),
        Leased::Lost => anyhow::bail!("{op} of {id}: LEASE_LOST"),
    }
}

/// `POST /v1/tasks/{id}/{op}` with the lease; an error unless it succeeded.
async fn lease_call(conn: &mut AgentConn, id: &str, op: &str, lease: &str) -> anyhow::Result<()> {
    lease_call_timed(conn, id, op, lease).await?;
    Ok(())
}

/// `POST /v1/tasks/claim` with `body`: the first claim of the answer, if any.
pub(crate) async fn claim_one(
    conn: &mut AgentConn,
    body: &serde_json::Value,
) -> anyhow::Result<Option<wire::Claim>> {
    Ok(claim_many(conn, body).await?.into_iter().next())
}

/// `POST {base}{path}` with a JSON body: the answer, or an error naming the route and
/// carrying the refusal.
async fn post_ok<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: &(impl serde::Serialize + ?Sized),
) -> anyhow::Result<T> {
    let resp = post_admitted(http, &format!("{base}{path}"), token, body).await?;
    let status = resp.status().as_u16();
    conn::answer(path, status, &resp.bytes().await?)
}

/// Calls the server refused with 429 `RATE_LIMITED` (its store far behind), each sent again
/// after the pause it asked for.
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// `POST {url}` with a JSON body, sent again after the pause a 429 asks for until it is
/// taken: what a well-behaved agent does when the server sheds load.
pub(crate) async fn post_admitted(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &(impl serde::Serialize + ?Sized),
) -> anyhow::Result<reqwest::Response> {
    loop {
        let resp = http.post(url).bearer_auth(token).json(body).send().await?;
        if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Ok(resp);
        }
        REFUSED.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(conn::retry_after(&resp.bytes().await?)).await;
    }
}

/// `POST /v1/tasks/batch` of `tasks` (create requests with refs), in requests of at most
/// 1,000; the created ids in order.
pub(crate) async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tasks: &[serde_json::Value],
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(1000) {
        let body = serde_json::json!({ "tasks": chunk });
        let out: serde_json::Value = post_ok(http, base, "/v1/tasks/batch", token, &body).await?;
        for t in out["tasks"].as_array().into_iter().flatten() {
            ids.push(t["task"]["id"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(ids)
}

/// Drain over HTTP: agents claim (`--claim-batch` at a time) and complete until the queue
/// is empty; tasks completed per second, and claim and complete latency. Every claimed task
/// is checked to be completed once (duplicates fail the run).
async fn drain_bench(
    baton: &Baton,
    base: &str,
    args: &Args,
    syncs: &stats::Syncs,
) -> anyhow::Result<()> {
    let bases = server_urls(base);
    let admin = baton.actor("default", "bench").await?;
    let token = baton.create_key(&admin, "worker", None).await?.key.token;
    let meter = stats::Meter::start(syncs, &args.server_pid);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..args.drain_agents {
        let (base, token) = (bases[w % bases.len()].clone(), token.clone());
        let (batch, claim_next) = (args.claim_batch, args.claim_next);
        handles.push(tokio::spawn(async move {
            let (mut claim_lat, mut complete_lat, mut ids) = (Vec::new(), Vec::new(), Vec::new());
            let agent = format!("d{w}");
            let next = serde_json::json!({ "agent": agent, "count": batch });
            let conn = &mut AgentConn::open(&base, &token).await?;
            let t0 = Instant::now();
            let mut claims = claim_many(conn, &next).await?;
            claim_lat.push(t0.elapsed());
            while !claims.is_empty() {
                ids.extend(claims.iter().map(|c| c.task.id.clone()));
                let t0 = Instant::now();
                if claim_next {
                    // One call completes these and claims the next: its latency is a claim's.
                    claims = complete_many(conn, &claims, Some(&next))
                        .await?
                        .unwrap_or_default();
                    claim_lat.push(t0.elapsed());
                    continue;
                }
                if let [c] = &claims[..] {
                    lease_call(conn, &c.task.id, "complete", &c.lease.token).await?;
                } else {
                    complete_many(conn, &claims, None).await?;
                }
                complete_lat.push(t0.elapsed());
                let t0 = Instant::now();
                claims = claim_many(conn, &next).await?;
                claim_lat.push(t0.elapsed());
            }
            anyhow::Ok((claim_lat, complete_lat, ids))
        }));
    }
    let (mut claim_lat, mut complete_lat, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for h in handles {
        let (c, d, i) = h.await??;
        claim_lat.extend(c);
        complete_lat.extend(d);
        ids.extend(i);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(ids.len() == n, "{} tasks completed twice", n - ids.len());
    let notes = meter.notes(n as u64);
    let label = format!(
        "drain over HTTP, batch {}{}",
        args.claim_batch,
        args.claim_next_label()
    );
    let claims = stats::Latency::of(&claim_lat);
    row_with(
        &label,
        args,
        args.drain_agents,
        Some(n as f64 / secs),
        &claims,
        &notes,
    );
    if complete_lat.is_empty() {
        return Ok(()); // every completion claimed too: its latency is on the row above
    }
    let completes = stats::Latency::of(&complete_lat);
    row_with(
        "(complete latency, per call)",
        args,
        args.drain_agents,
        None,
        &completes,
        "",
    );
    Ok(())
}

/// `POST /v1/tasks/claim` with `body`: the claims made.
async fn claim_many(
    conn: &mut AgentConn,
    body: &serde_json::Value,
) -> anyhow::Result<Vec<wire::Claim>> {
    let answer: wire::ClaimAnswer = conn.call("/v1/tasks/claim", body).await?;
    Ok(answer.claims)
}

/// Completes claimed tasks in one call (`POST /v1/tasks/complete`), with `next` claiming
/// more in the same call; fails on any refusal. The claims `next` made, if asked.
async fn complete_many(
    conn: &mut AgentConn,
    claims: &[wire::Claim],
    next: Option<&serde_json::Value>,
) -> anyhow::Result<Option<Vec<wire::Claim>>> {
    let body = wire::CompleteRequest {
        completions: claims
            .iter()
            .map(|c| wire::Completion {
                id: &c.task.id,
                lease: &c.lease.token,
            })
            .collect(),
        next,
    };
    let out: wire::CompleteAnswer = conn.call("/v1/tasks/complete", &body).await?;
    anyhow::ensure!(
        out.results.len() == claims.len(),
        "complete: {} results for {} completions",
        out.results.len(),
        claims.len()
    );
    if let Some(refused) = out.results.iter().find_map(|r| r.error.as_ref()) {
        anyhow::bail!("complete refused: {refused}");
    }
    if next.is_none() {
        return Ok(None);
    }
    let next = out.next.ok_or_else(|| {
        anyhow::anyhow!("complete: asked for the next claim, the answer has none")
    })?;
    if let Some(refused) = next.error {
        anyhow::bail!("next claim refused: {refused}");
    }
    Ok(Some(next.claims))
}

/// Agents over HTTP: claim → heartbeat → complete against the server at `base`, every
/// request a real HTTP round trip; claim latency measured per request.
async fn http_bench(
    baton: &Baton,
    base: &str,
    args: &Args,
    syncs: &stats::Syncs,
) -> anyhow::Result<()> {
    let bases = server_urls(base);
    let base = bases[0].as_str();
    let admin = baton.actor("default", "bench").await?;
    let token = baton.create_key(&admin, "worker", None).await?.key.token;
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let meter = stats::Meter::start(syncs, &args.server_pid);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..args.http_agents {
        let (base, token, done) = (bases[w % bases.len()].clone(), token.clone(), done.clone());
        let (cycles, claim_next) = (args.cycles, args.claim_next);
        handles.push(tokio::spawn(async move {
            let conn = &mut AgentConn::open(&base, &token).await?;
            let mut lat = Vec::new();
            let next = serde_json::json!({ "agent": format!("h{w}") });
            // With `--claim-next`, the claim the last completion made.
            let mut held: Option<wire::Claim> = None;
            while done.fetch_add(1, Ordering::Relaxed) < cycles {
                let c = match held.take() {
                    Some(c) => c,
                    None => {
                        let t0 = Instant::now();
                        let c = claim_one(conn, &next).await?;
                        lat.push(t0.elapsed());
                        c.ok_or_else(|| anyhow::anyhow!("queue ran dry"))?
                    }
                };
                let (id, lease) = (c.task.id.as_str(), c.lease.token.as_str());
                lease_call(conn, id, "heartbeat", lease).await?;
                // The last cycles claim nothing more: few tasks are left leased.
                if claim_next && done.load(Ordering::Relaxed) < cycles {
                    let t0 = Instant::now();
                    let claims = complete_many(conn, std::slice::from_ref(&c), Some(&next))
                        .await?
                        .unwrap_or_default();
                    lat.push(t0.elapsed());
                    held = claims.into_iter().next();
                } else {
                    lease_call(conn, id, "complete", lease).await?;
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let lat = pooled(handles).await?;
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    let replicas = match bases.len() {
        1 => String::new(),
        n => format!(", {n} replicas"),
    };
    let notes = meter.notes(lat.len() as u64);
    row_with(
        &format!(
            "http claim→heartbeat→complete{replicas}{}",
            args.claim_next_label()
        ),
        args,
        args.http_agents,
        Some(rate),
        &stats::Latency::of(&lat),
        &notes,
    );
    // Long-poll wake-up: an idle agent waits in a claim; a task is created; how long from
    // the creation's answer to the claim's answer. In a workspace of its own, whose queue is
    // empty, so the measurement leaves the benchmark's queue alone.
    let quiet = baton.create_workspace("wake-up").await?;
    let quiet_admin = baton_core::api::Actor {
        workspace_id: quiet.id,
        name: "bench".into(),
        agent: None,
        request_id: None,
    };
    let token = baton
        .create_key(&quiet_admin, "worker", None)
        .await?
        .key
        .token;
    let planner = baton
        .create_key(&quiet_admin, "planner", None)
        .await?
        .key
        .token;
    let mut wake = Vec::new();
    for i in 0..20 {
        let (http2, base2, token2) = (http.clone(), base.to_string(), token.clone());
        let waiter = tokio::spawn(async move {
            let r = http2
                .post(format!("{base2}/v1/tasks/claim"))
                .bearer_auth(&token2)
                .json(&serde_json::json!({ "agent": "sleeper", "wait": "10s" }))
                .send()
                .await;
            (r.map(|_| ()), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(50)).await; // let it wait
        http.post(format!("{base}/v1/tasks"))
            .bearer_auth(&planner)
            .json(&serde_json::json!({ "title": format!("wake {i}") }))
            .send()
            .await?;
        let created = Instant::now();
        let (answered, at) = waiter.await?;
        answered?;
        wake.push(at.saturating_duration_since(created));
    }
    row("http long-poll wake-up", args, 1, None, &mut wake);
    Ok(())
}

/// SSE fan-out: N subscribers follow `GET /v1/events/stream` of a workspace of their own
/// while one writer creates tasks there over HTTP at a steady rate (open loop: one request
/// per tick, whatever the answers' latency). Delivery latency, per (event, subscriber): when
/// the subscriber read the event's frame minus when the writer *sent* the create that made
/// it (so it includes the create's own round trip, group commit and fsync; the create's
/// send → answer latency is reported on its own row). Every subscriber's sequence numbers
/// are then compared with the log itself: every event exactly once, in order.
async fn sse_bench(baton: &Baton, base: &str, args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.sse_rate > 0, "--sse-rate must be at least 1");
    let ws = baton.create_workspace("fan-out").await?;
    let admin = baton_core::api::Actor {
        workspace_id: ws.id,
        name: "bench".into(),
        agent: None,
        request_id: None,
    };
    let observer = baton.create_key(&admin, "observer", None).await?.key.token;
    let planner = baton.create_key(&admin, "planner", None).await?.key.token;
    // Everyone starts after the same point of the log (the workspace may be reused with --dir).
    let start = baton.last_seq(&admin)?;
    let n = args.sse_subscribers;
    // One client per subscriber would be closer to reality, but a shared pool opens one
    // connection per concurrent stream anyway.
    let http = reqwest::Client::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(n);
    let (end_tx, end_rx) = tokio::sync::watch::channel(u64::MAX);
    let mut subscribers = Vec::new();
    for i in 0..n {
        let (http, url, token, ready, mut end_rx) = (
            http.clone(),
            format!("{base}/v1/events/stream?after={start}"),
            observer.clone(),
            ready_tx.clone(),
            end_rx.clone(),
        );
        subscribers.push(tokio::spawn(async move {
            let connected = async {
                let resp = http.get(&url).bearer_auth(&token).send().await?;
                anyhow::ensure!(resp.status().is_success(), "stream: {}", resp.status());
                anyhow::Ok(resp)
            }
            .await;
            let mut resp = match connected {
                Ok(r) => {
                    let _ = ready.send(Ok(())).await;
                    r
                }
                Err(e) => {
                    let _ = ready.send(Err(anyhow::anyhow!("subscriber {i}: {e}"))).await;
                    return Err(e);
                }
            };
            drop(ready);
            // (sequence number, when its frame was read); frames are split at blank lines.
            let mut got: Vec<(u64, Instant)> = Vec::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut end = u64::MAX;
            let mut deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
            while got.last().map_or(start, |g| g.0) < end {
                tokio::select! {
                    chunk = resp.chunk() => {
                        let Some(chunk) = chunk? else { break };
                        let at = Instant::now();
                        buf.extend_from_slice(&chunk);
                        let mut from = 0;
                        while let Some(len) = buf[from..].windows(2).position(|w| w == b"\n\n") {
                            let frame = std::str::from_utf8(&buf[from..from + len])?;
                            from += len + 2;
                            let mut seq = None;
                            let mut data = None;
                            for line in frame.lines() {
                                if let Some(v) = line.strip_prefix("id: ") {
                                    seq = Some(v.parse::<u64>()?);
                                } else if let Some(v) = line.strip_prefix("data: ") {
                                    data = Some(v);
                                }
                            }
                            let Some(seq) = seq else { continue }; // a keep-alive
                            // One subscriber checks that the data is the event it is named for.
                            if i == 0 {
                                let e: serde_json::Value = serde_json::from_str(data.unwrap_or(""))?;
                                anyhow::ensure!(e["seq"] == seq, "frame {seq} carries {e}");
                            }
                            got.push((seq, at));
                        }
                        buf.drain(..from);
                    }
                    Ok(()) = end_rx.changed() => {
                        end = *end_rx.borrow_and_update();
                        deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            anyhow::Ok(got)
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(r) => r?,
            None => anyhow::bail!("a subscriber went away before connecting"),
        }
    }
    // Let the server's reader tasks reach their first wait.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The writer: one create per tick, each on its own task; (task id, sent, answered).
    let total = args.sse_rate * args.sse_secs;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.sse_rate as f64));
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let (http, url, token) = (http.clone(), format!("{base}/v1/tasks"), planner.clone());
        creates.push(tokio::spawn(async move {
            let sent = Instant::now();
            let resp = http
                .post(url)
                .bearer_auth(&token)
                .json(&serde_json::json!({ "title": format!("fan-out {i}") }))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "create: {}", resp.text().await?);
            let out: serde_json::Value = resp.json().await?;
            let answered = Instant::now();
            let id = out["task"]["id"].as_str().unwrap_or_default().to_string();
            anyhow::Ok((id, sent, answered))
        }));
    }
    let mut sent = std::collections::HashMap::new();
    let mut create_lat = Vec::new();
    for c in creates {
        let (id, at, answered) = c.await??;
        create_lat.push(answered - at);
        sent.insert(id, at);
    }
    let write_rate = total as f64 / started.elapsed().as_secs_f64();

    // The truth: the log itself, from the same starting point.
    let mut truth: Vec<(u64, Option<Instant>)> = Vec::new();
    let mut after = start;
    loop {
        let page = baton.events(&admin, after, 1000)?.events;
        let Some(last) = page.last() else { break };
        after = last.seq;
        truth.extend(page.into_iter().map(|e| {
            let at = e.task_id.and_then(|t| sent.get(&t).copied());
            (e.seq, at)
        }));
    }
    let end = after;
    let _ = end_tx.send(end);

    let mut lat = Vec::new();
    let mut complete = 0;
    let mut problems = Vec::new();
    let expected: Vec<u64> = truth.iter().map(|t| t.0).collect();
    let sent_at: std::collections::HashMap<u64, Instant> = truth
        .iter()
        .filter_map(|&(seq, at)| at.map(|at| (seq, at)))
        .collect();
    for (i, s) in subscribers.into_iter().enumerate() {
        let got = match s.await? {
            Ok(got) => got,
            Err(e) => {
                problems.push(format!("subscriber {i}: {e}"));
                continue;
            }
        };
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        if seqs == expected {
            complete += 1;
        } else if problems.len() < 3 {
            problems.push(format!(
                "subscriber {i}: {} of {} events, first {:?}, last {:?}",
                seqs.len(),
                expected.len(),
                seqs.first(),
                seqs.last()
            ));
        }
        lat.extend(
            got.iter()
                .filter_map(|(seq, read)| sent_at.get(seq).map(|at| read.duration_since(*at))),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    for p in &problems {
        eprintln!("sse fan-out: {p}");
    }
    row(
        &format!("sse writer create ({}/s asked)", args.sse_rate),
        args,
        1,
        Some(write_rate),
        &mut create_lat,
    );
    let max = lat.iter().max().map_or(0.0, |m| m.as_secs_f64() * 1000.0);
    let delivered = lat.len();
    row(
        &format!(
            "sse fan-out delivery, from create sent ({} events; max {max:.2} ms; \
             {complete}/{n} subscribers got every event once, in order)",
            expected.len()
        ),
        args,
        n,
        Some(delivered as f64 / secs),
        &mut lat,
    );
    Ok(())
}
