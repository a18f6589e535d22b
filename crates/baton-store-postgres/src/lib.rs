//! Baton on PostgreSQL: several stateless `baton serve` replicas on one database.
//!
//! # Run model
//! The operation layer is synchronous (ARCHITECTURE.md), so this store talks to PostgreSQL
//! from its own threads, each connection paired with a current-thread runtime that drives
//! it. One writer thread per process takes every job waiting, runs them in one transaction
//! (a savepoint per job, so a failing job undoes only itself) and commits once: group
//! commit, as on SQLite. The commit is durable when it returns (`synchronous_commit` on).
//! Reads run on a pool of connections, each in a read-only repeatable-read transaction (a
//! snapshot), on a short-lived thread so they never block an async runtime's worker.
//!
//! # Several replicas
//! A batch holds jobs of one [`LockMode`]. Every write transaction takes its workspace's
//! advisory lock before anything else (see `tx.rs`): exclusive batches of a workspace take
//! turns with everything, across replicas, while shared batches (claims and lease
//! operations) overlap, each locking the task rows it changes. Events are numbered at the
//! end of the transaction under the workspace row's lock, held only to the commit: numbers
//! follow commit order with no gaps (a rolled-back batch rolls its increments back too),
//! and claims cannot race. After each commit that changed
//! tasks a notifier thread sends `NOTIFY baton_commits` from a connection of its own (one
//! for many commits when they come faster than it); a listener thread wakes this
//! process's long-polls and streams on other replicas' commits, and a missed notification
//! costs at most [`FALLBACK_WAKE`]. Not from the writers' own transactions: PostgreSQL
//! serializes the commits of notifying transactions of a database through their WAL
//! flushes, which would keep the writers from sharing one.

mod claiming;
mod clock;
mod flush;
mod migrate;
#[cfg(test)]
mod tests;
mod tx;

use baton_core::store::{Loads, LockMode, Store, Tx, WriteJob};
use baton_core::{Code, Error, Result};
use claiming::{ClaimSlot, Claiming};
pub use clock::DatabaseClock;
use sqlx::Connection;
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use tx::{db_err, PgTx};

/// Writer connections per process, unless `BATON_PG_WRITERS` says otherwise (1 to 64).
/// Shared jobs (claims, lease operations) of one workspace run in parallel on them;
/// exclusive ones take turns, as across replicas. Two: one commits while the other
/// gathers the next batch; a third only splits the batches smaller now that a batch costs
/// few round trips (drain and claim→heartbeat→complete, 16 agents: 2 ≥ 3 > 4 in A/B runs,
/// BENCHMARKS.md).
const WRITERS: usize = 2;

/// The writer connections `BATON_PG_WRITERS` asks for, or [`WRITERS`] when it is unset;
/// a value that is not a number from 1 to 64 is refused, not quietly replaced.
fn writer_count() -> Result<usize> {
    match std::env::var("BATON_PG_WRITERS") {
        Err(_) => Ok(WRITERS),
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                Error::invalid(
                    format!("BATON_PG_WRITERS is {v:?}, not a number of writers from 1 to 64"),
                    format!("set BATON_PG_WRITERS from 1 to 64, or unset it for {WRITERS}"),
                )
            }),
    }
}
/// Most jobs committed together.
const MAX_BATCH: usize = 256;
/// Read connections kept open.
const MAX_READERS: usize = 16;
/// How often waiters are woken even without a notification (a lost `NOTIFY` delays nothing
/// longer than this).
pub const FALLBACK_WAKE: Duration = Duration::from_millis(500);
/// The least time between two `NOTIFY`s. Each is a transaction of its own that wakes every
/// replica's listener; sent after every commit, they cost the drain ~10% at batch 1
/// (BENCHMARKS.md). Other replicas' long-polls and streams learn of a commit up to this
/// much later; this process's own are woken at the commit.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);
/// Times a batch is retried after a deadlock or serialization failure between replicas.
const RETRIES: usize = 3;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a statement waits for a lock before it fails: a stalled peer holding a lock (or
/// a session left in a transaction) cannot block every replica's writer for long.
/// Migrations wait as long as they must (`migrate.rs`).
pub(crate) const LOCK_TIMEOUT: &str = "5s";

/// `url` with `localhost` for an empty host when a `host` parameter names the server.
/// libpq reads `postgres://user@/db?host=/run/postgresql` (a Unix socket, the way to reach a
/// database on the same machine); sqlx refuses it for its empty host, and takes the socket
/// from the parameter once the URL has a host.
fn with_host(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let query = rest.split_once('?').map_or("", |(_, query)| query);
    if !query.split('&').any(|pair| pair.starts_with("host=")) {
        return url.into();
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        let at = scheme.len() + 3 + authority.len() - host.len();
        format!("{}localhost{}", &url[..at], &url[at..]).into()
    } else {
        url.into()
    }
}

/// How long one round trip may wait for PostgreSQL's answer before it fails `UNAVAILABLE`:
/// a server that stops answering without closing the connection (a stalled host, a
/// network partition) must not hold requests, the writers and `/readyz` forever. The
/// statements of requests take milliseconds; whole-table reads (replay) and migrations run
/// without it.
pub(crate) const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(30);

/// Reads the server's clock into `clock` (see [`DatabaseClock`]).
fn read_clock(conn: &mut Conn, clock: &DatabaseClock) -> Result<()> {
    let before = clock::wall();
    let server = conn.trip(async |pg| {
        sqlx::query_scalar::<_, i64>(clock::QUERY)
            .fetch_one(pg)
            .await
    })?;
    clock.observe(before, server, clock::wall());
    Ok(())
}

/// A connection and the runtime that drives it.
pub(crate) struct Conn {
    pub(crate) rt: tokio::runtime::Runtime,
    /// The session; gone once a round trip was cut short (its answer still owed, its
    /// transaction maybe open on the server): dropped at once, so the socket closes and the
    /// server ends that transaction and frees its locks as soon as it notices, instead of
    /// when a fresh connection replaces this one. Its owner replaces it.
    pg: Option<sqlx::PgConnection>,
    /// The longest wait for one answer ([`ROUND_TRIP_LIMIT`], or none).
    pub(crate) limit: Option<Duration>,
}

impl Conn {
    fn open(url: &str) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::storage)?;
        let unreachable = |e: String| {
            Error::new(
                Code::Unavailable,
                format!("cannot connect to PostgreSQL: {e}"),
                "check --database / BATON_DATABASE_URL and that the server is up",
            )
        };
        let pg = rt
            .block_on(async {
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    sqlx::PgConnection::connect(&with_host(url)),
                )
                .await
            })
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let mut conn = Conn {
            rt,
            pg: Some(pg),
            limit: Some(ROUND_TRIP_LIMIT),
        };
        // Pinned, whatever the server's defaults: commits are durable when they return, and
        // a stalled peer holding a lock (or a session left in a transaction) cannot block
        // every replica's writer for long.
        conn.batch(
            "SET synchronous_commit = on; SET default_transaction_isolation = 'read committed';
             SET standard_conforming_strings = on;
             SET idle_in_transaction_session_timeout = '60s'",
        )?;
        conn.batch(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))?;
        Ok(conn)
    }

    /// A writer's connection: with `synchronous_commit` off, a commit returns before its WAL
    /// is flushed (a server crash may lose the last commits, never corrupts).
    ///
    /// Its statements run on generic plans: a writer runs a few statements over and over,
    /// and PostgreSQL's default would plan the one that loads tasks by an id array afresh on
    /// every execution (a custom plan looks cheaper for one id), ~0.2 ms of planning per
    /// write transaction, more than the statement itself.
    fn open_writer(url: &str, options: Options) -> Result<Conn> {
        let mut conn = Conn::open(url)?;
        conn.limit = Some(options.round_trip_limit);
        conn.batch("SET plan_cache_mode = force_generic_plan")?;
        if !options.synchronous_commit {
            conn.batch("SET synchronous_commit = off")?;
        }
        Ok(conn)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.trip(async |pg| sqlx::raw_sql(sql).execute(pg).await)
            .map(|_| ())
    }

    /// Whether a round trip was cut short: the connection is gone and must be replaced.
    pub(crate) fn broken(&self) -> bool {
        self.pg.is_none()
    }

    /// The runtime and the session, for a caller that drives its own unbounded round trips
    /// (migrations, tests); `UNAVAILABLE` once the connection is broken.
    pub(crate) fn parts(&mut self) -> Result<(&tokio::runtime::Runtime, &mut sqlx::PgConnection)> {
        match &mut self.pg {
            Some(pg) => Ok((&self.rt, pg)),
            None => Err(tx::unavailable(&"this connection lost an answer earlier")),
        }
    }

    /// Drives one round trip (`trip`, given the connection) on the connection's runtime to
    /// its answer, or fails it `UNAVAILABLE` after `limit` and drops the connection:
    /// whatever it would carry next could land inside the transaction left open, so it
    /// carries nothing more.
    pub(crate) fn trip<T>(
        &mut self,
        trip: impl AsyncFnOnce(&mut sqlx::PgConnection) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<T> {
        let limit = self.limit;
        let (rt, pg) = self.parts()?;
        let Some(limit) = limit else {
            return rt.block_on(trip(pg)).map_err(db_err);
        };
        match rt.block_on(async { tokio::time::timeout(limit, trip(pg)).await }) {
            Ok(answer) => answer.map_err(db_err),
            Err(_) => {
                self.pg = None;
                Err(tx::unavailable(&format!("no answer within {limit:?}")))
            }
        }
    }
}

/// How the store commits.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether a commit returns only once its WAL is flushed (`synchronous_commit` on, the
    /// default). Off trades the last commits before a server crash for fewer waits; the
    /// `--durability normal` of the command line.
    pub synchronous_commit: bool,
    /// How long one round trip may wait for the server's answer ([`ROUND_TRIP_LIMIT`] by
    /// default) before the operation fails `UNAVAILABLE`.
    pub round_trip_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous_commit: true,
            round_trip_limit: ROUND_TRIP_LIMIT,
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    url: String,
    round_trip_limit: Duration,
    clock: DatabaseClock,
    jobs: Mutex<mpsc::Sender<Box<dyn WriteJob>>>,
    readers: Mutex<Vec<Conn>>,
    commits: Arc<tokio::sync::Notify>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, applies migrations (safe with several replicas starting at once), and
    /// starts the writer and the commit listener.
    pub fn open(url: &str) -> Result<Arc<PgStore>> {
        Self::open_with(url, Options::default())
    }

    /// As [`PgStore::open`], committing as `options` say.
    pub fn open_with(url: &str, options: Options) -> Result<Arc<PgStore>> {
        let url = url.to_string();
        let writer_count = writer_count()?;
        let clock = DatabaseClock::default();
        // Connect and migrate on a thread of our own: the caller may be inside a runtime.
        let (writers, url) = std::thread::scope(|s| {
            s.spawn(|| -> Result<(Vec<Conn>, String)> {
                let mut conn = Conn::open_writer(&url, options)?;
                migrate::migrate(&mut conn)?;
                read_clock(&mut conn, &clock)?;
                let mut writers = vec![conn];
                for _ in 1..writer_count {
                    writers.push(Conn::open_writer(&url, options)?);
                }
                Ok((writers, url.clone()))
            })
            .join()
            .map_err(|_| Error::new(Code::Internal, "store start-up panicked", ""))?
        })?;
        let (jobs, queue) = mpsc::channel::<Box<dyn WriteJob>>();
        let queue = Arc::new(Mutex::new(queue));
        let commits = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::new(Notify::default());
        let claiming = Arc::new(Claiming::default());
        for (i, conn) in writers.into_iter().enumerate() {
            let (commits, url, queue) = (commits.clone(), url.clone(), queue.clone());
            let (notify, claiming) = (notify.clone(), claiming.clone());
            std::thread::Builder::new()
                .name(format!("baton-pg-writer-{i}"))
                .spawn(move || {
                    let slot = ClaimSlot {
                        claiming: &claiming,
                        writer: i,
                    };
                    writer_loop(&url, options, conn, slot, queue, commits, &notify)
                })
                .map_err(Error::storage)?;
        }
        {
            let (notify, url) = (Arc::downgrade(&notify), url.clone());
            std::thread::Builder::new()
                .name("baton-pg-notify".into())
                .spawn(move || notify_loop(&url, notify))
                .map_err(Error::storage)?;
        }
        {
            let (commits, url, clock) = (Arc::downgrade(&commits), url.clone(), clock.clone());
            std::thread::Builder::new()
                .name("baton-pg-listen".into())
                .spawn(move || listen_loop(&url, commits, &clock))
                .map_err(Error::storage)?;
        }
        Ok(Arc::new(PgStore {
            url,
            round_trip_limit: options.round_trip_limit,
            clock,
            jobs: Mutex::new(jobs),
            readers: Mutex::new(Vec::new()),
            commits,
            notify,
        }))
    }

    /// The clock every replica on this database should run by: this host's wall clock
    /// corrected to the server's (see [`DatabaseClock`]).
    pub fn clock(&self) -> DatabaseClock {
        self.clock.clone()
    }

    /// Creates a database named `name` on the server of `admin_url` (a URL to any database
    /// there) and returns the URL of the new one. For tests and set-up scripts.
    pub fn create_database(admin_url: &str, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::invalid(
                "database names are letters, digits and _",
                "",
            ));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut conn = Conn::open(admin_url)?;
                conn.batch(&format!("CREATE DATABASE {name}"))?;
                Ok(with_database(admin_url, name))
            })
            .join()
            .map_err(|_| Error::new(Code::Internal, "create database panicked", ""))?
        })
    }

    /// Applies the migrations and returns (for `baton migrate`).
    pub fn migrate(url: &str) -> Result<()> {
        std::thread::scope(|s| {
            s.spawn(|| migrate::migrate(&mut Conn::open(url)?))
                .join()
                .map_err(|_| Error::new(Code::Internal, "migration panicked", ""))?
        })
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..authority_end])
}

/// One writer: takes every job waiting (the first free writer waits for the next job,
/// holding the queue), commits them, and goes back for more.
fn writer_loop(
    url: &str,
    options: Options,
    mut conn: Conn,
    slot: ClaimSlot<'_>,
    queue: Arc<Mutex<mpsc::Receiver<Box<dyn WriteJob>>>>,
    commits: Arc<tokio::sync::Notify>,
    notify: &Notify,
) {
    loop {
        let batch = {
            let Ok(queue) = queue.lock() else { return };
            let Ok(first) = queue.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        // One transaction per lock mode: a transaction holding a workspace's shared lock
        // must not also wait for its exclusive one (two replicas doing so would deadlock).
        let (shared, exclusive): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|job| job.lock_mode() == LockMode::Shared);
        for (mode, jobs) in [(LockMode::Shared, shared), (LockMode::Exclusive, exclusive)] {
            if !jobs.is_empty() {
                commit_group(url, options, &mut conn, slot, mode, jobs, &commits, notify);
            }
        }
    }
}

/// Commits jobs of one lock mode together, retrying on conflicts with other replicas, and
/// answers each.
#[allow(clippy::too_many_arguments)]
fn commit_group(
    url: &str,
    options: Options,
    conn: &mut Conn,
    slot: ClaimSlot<'_>,
    mode: LockMode,
    mut batch: Vec<Box<dyn WriteJob>>,
    commits: &tokio::sync::Notify,
    notify: &Notify,
) {
    let mut outcome = run_batch(conn, slot, mode, &mut batch);
    for attempt in 0..RETRIES {
        match &outcome {
            Err(e) if e.code == Code::Busy => {
                std::thread::sleep(Duration::from_millis(2 << attempt));
                outcome = if attempt + 1 < RETRIES || batch.len() == 1 {
                    run_batch(conn, slot, mode, &mut batch)
                } else {
                    // Still conflicting (row locks taken in the other order by another
                    // replica's batch): one transaction per job.
                    one_by_one(conn, slot, mode, &mut batch)
                };
            }
            _ => break,
        }
    }
    // A connection that failed as a whole, or lost an answer (a job of `one_by_one`, a
    // rollback after conflicts), is replaced once the batch is answered: connecting to a
    // silent server takes its own time.
    let replace = conn.broken() || matches!(&outcome, Err(e) if e.code != Code::Busy);
    match outcome {
        Ok((results, task_events)) => {
            // Raised before the answers: a process that ends on its answer still owes the
            // notification when its store closes (`Notify::settle`).
            if task_events > 0 {
                notify.raise();
            }
            for (job, result) in batch.into_iter().zip(results) {
                job.finish(result);
            }
            if task_events > 0 {
                commits.notify_waiters();
            }
        }
        Err(e) => {
            for job in batch {
                job.finish(Err(e.clone()));
            }
        }
    }
    if replace {
        if let Ok(fresh) = Conn::open_writer(url, options) {
            *conn = fresh;
        }
    }
}

/// Runs each job of a batch in a transaction of its own: no lock-order cycle can span two
/// jobs. Each job's result; the batch's task events.
fn one_by_one(
    conn: &mut Conn,
    slot: ClaimSlot<'_>,
    mode: LockMode,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(Vec<Result<()>>, usize)> {
    let mut results = Vec::with_capacity(batch.len());
    let mut events = 0;
    for job in batch.iter_mut() {
        match run_batch(conn, slot, mode, std::slice::from_mut(job)) {
            Ok((mut r, n)) => {
                events += n;
                results.push(r.pop().unwrap_or(Ok(())));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    Ok((results, events))
}

/// Runs a batch in one transaction: each job's own result, and the number of task events.
/// `Err` when the transaction as a whole failed (nothing of it is kept). Optimistic first,
/// without savepoints (two round trips per job); if a job fails, the batch is rolled back
/// and, unless that job was alone, run again with a savepoint per job, so the failure
/// undoes only itself.
fn run_batch(
    conn: &mut Conn,
    slot: ClaimSlot<'_>,
    mode: LockMode,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(Vec<Result<()>>, usize)> {
    let outcome = try_batch(conn, slot, mode, batch);
    if outcome.is_err() {
        // Whatever failed (a savepoint, NOTIFY, COMMIT), leave no transaction open holding
        // workspace locks.
        let _ = conn.batch("ROLLBACK");
    }
    outcome
}

fn try_batch(
    conn: &mut Conn,
    slot: ClaimSlot<'_>,
    mode: LockMode,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(Vec<Result<()>>, usize)> {
    match attempt(conn, slot, mode, batch, false)? {
        Some(done) => Ok(done),
        None => attempt(conn, slot, mode, batch, true)?.ok_or_else(|| {
            Error::new(
                Code::Internal,
                "a batch with savepoints gave no results",
                "retry",
            )
        }),
    }
}

/// One try at a batch. Without savepoints, `Ok(None)` when a job failed (rolled back) or
/// the writes held back to the commit did: a job's writes may wait for a later job's reads
/// or the commit, so only with a savepoint per job (each job's rows sent before its
/// savepoint is released) is a failure sure to be its own. Events are the exception: they
/// go in at the commit, numbered under the workspace row's lock, and a failure there fails
/// the batch (their values were checked by the operations; what is left is the store).
fn attempt(
    conn: &mut Conn,
    slot: ClaimSlot<'_>,
    mode: LockMode,
    batch: &mut [Box<dyn WriteJob>],
    savepoints: bool,
) -> Result<Option<(Vec<Result<()>>, usize)>> {
    let mut results = Vec::with_capacity(batch.len());
    let mut tx = PgTx::writing(conn, mode).claiming(slot);
    let alone = batch.len() == 1;
    let ahead: Vec<_> = batch.iter().filter_map(|job| job.loads()).collect();
    tx.load_ahead(&ahead)?;
    // For each job, the claim jobs from it on: what a claim's statement may take for.
    let mut claims_left: Vec<usize> = batch
        .iter()
        .rev()
        .scan(0, |n, job| {
            *n += usize::from(matches!(job.loads(), Some((Loads::Agent, ..))));
            Some(*n)
        })
        .collect();
    claims_left.reverse();
    for (job, claims) in batch.iter_mut().zip(claims_left) {
        tx.claims_left(claims);
        if savepoints {
            tx.batch("SAVEPOINT job")?;
        }
        let mark = tx.mark();
        let mut outcome = job.run(&mut tx);
        if savepoints && outcome.is_ok() {
            outcome = tx.flush_rows();
        }
        match outcome {
            Ok(()) => {
                if savepoints {
                    tx.batch("RELEASE SAVEPOINT job")?;
                }
                results.push(Ok(()));
            }
            Err(e) if e.code == Code::Busy => {
                let _ = tx.batch("ROLLBACK");
                return Err(e);
            }
            Err(e) if savepoints => {
                tx.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
                tx.rewind(mark);
                results.push(Err(e));
            }
            Err(e) if alone => {
                tx.batch("ROLLBACK")?;
                return Ok(Some((vec![Err(e)], 0)));
            }
            Err(_) => {
                tx.batch("ROLLBACK")?;
                return Ok(None);
            }
        }
    }
    match tx.commit() {
        Ok(()) => Ok(Some((results, tx.task_events()))),
        Err(e) => {
            let _ = tx.batch("ROLLBACK");
            if e.code == Code::Busy || savepoints || alone {
                Err(e)
            } else {
                Ok(None)
            }
        }
    }
}

/// Commits other replicas have not been told of yet.
#[derive(Default)]
struct Notify {
    state: Mutex<Owed>,
    /// Signalled when a notification is raised and when one has been sent.
    changed: Condvar,
}

#[derive(Default)]
struct Owed {
    /// A commit was raised since the last notification was taken to be sent.
    pending: bool,
    /// A notification is being sent.
    sending: bool,
}

impl Notify {
    /// Asks for a `NOTIFY` (one answers every commit raised before it is sent).
    fn raise(&self) {
        if let Ok(mut owed) = self.state.lock() {
            owed.pending = true;
            self.changed.notify_all();
        }
    }

    /// As the store closes: waits for a notification being sent, and sends the one still
    /// owed, if any (a CLI command ends right after its answer, before the notifier
    /// thread would have connected, and other replicas would hear of its commit only at
    /// their fallback wake-up).
    fn settle(&self, url: &str) {
        let owed = {
            let Ok(owed) = self.state.lock() else {
                return;
            };
            let Ok((mut owed, _)) =
                self.changed
                    .wait_timeout_while(owed, Duration::from_secs(1), |o| o.sending)
            else {
                return;
            };
            std::mem::take(&mut owed.pending)
        };
        if owed {
            if let Ok(mut conn) = Conn::open(url) {
                let _ = announce(&mut conn);
            }
        }
    }
}

/// Tells every replica's listener of commits.
fn announce(conn: &mut Conn) -> Result<()> {
    conn.batch("NOTIFY baton_commits")
}

/// Sends `NOTIFY baton_commits` after commits that changed tasks, from a connection of its
/// own in a transaction of its own (which waits for no WAL flush), until the store is gone.
fn notify_loop(url: &str, notify: Weak<Notify>) {
    let mut conn: Option<Conn> = None;
    // A notification that could not be sent, to send again.
    let mut unsent = false;
    loop {
        let Some(signal) = notify.upgrade() else {
            return;
        };
        let raised = {
            let Ok(owed) = signal.state.lock() else {
                return;
            };
            // Woken at least every second to see whether the store is still there.
            let wait = if unsent {
                Duration::ZERO
            } else {
                Duration::from_secs(1)
            };
            let Ok((mut owed, _)) = signal
                .changed
                .wait_timeout_while(owed, wait, |o| !o.pending)
            else {
                return;
            };
            let raised = std::mem::take(&mut owed.pending) || unsent;
            owed.sending = raised;
            raised
        };
        if !raised {
            continue;
        }
        if conn.is_none() {
            conn = Conn::open(url)
                .and_then(|mut c| c.batch("SET synchronous_commit = off").map(|_| c))
                .ok();
        }
        let sent = conn.as_mut().map(announce);
        unsent = !matches!(sent, Some(Ok(())));
        if let Ok(mut owed) = signal.state.lock() {
            owed.sending = false;
            signal.changed.notify_all();
        }
        drop(signal);
        if unsent {
            // Connect afresh and send it again a little later; meanwhile the listeners'
            // fallback wake-up covers it.
            conn = None;
            std::thread::sleep(FALLBACK_WAKE / 5);
        }
        // Commits raised meanwhile wait for the next one, which answers them all.
        std::thread::sleep(NOTIFY_INTERVAL);
    }
}

/// Wakes this process's waiters on every commit of any replica (and at least every
/// [`FALLBACK_WAKE`], so a missed notification or a lost connection delays nothing longer).
///
/// Its connection also reads the server's clock every [`clock::REFRESH`].
fn listen_loop(url: &str, commits: std::sync::Weak<tokio::sync::Notify>, clock: &DatabaseClock) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // Ends (closing its connection) once the store is gone.
    let wake = |commits: &std::sync::Weak<tokio::sync::Notify>| match commits.upgrade() {
        Some(c) => {
            c.notify_waiters();
            true
        }
        None => false,
    };
    rt.block_on(async move {
        loop {
            let Ok(mut listener) = sqlx::postgres::PgListener::connect(url).await else {
                tokio::time::sleep(FALLBACK_WAKE).await;
                if !wake(&commits) {
                    return;
                }
                continue;
            };
            if listener.listen("baton_commits").await.is_err() {
                tokio::time::sleep(FALLBACK_WAKE).await;
                continue;
            }
            // A notification, or the fallback interval: wake. A lost connection: reconnect.
            let mut read_at: Option<std::time::Instant> = None;
            while let Ok(Ok(_)) | Err(_) =
                tokio::time::timeout(FALLBACK_WAKE, listener.recv()).await
            {
                if !wake(&commits) {
                    return;
                }
                if read_at.is_none_or(|at| at.elapsed() >= clock::REFRESH) {
                    read_at = Some(std::time::Instant::now());
                    let before = clock::wall();
                    let query = sqlx::query_scalar::<_, i64>(clock::QUERY).fetch_one(&mut listener);
                    if let Ok(Ok(server)) = tokio::time::timeout(FALLBACK_WAKE, query).await {
                        clock.observe(before, server, clock::wall());
                    }
                }
            }
        }
    });
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A runtime may not be dropped inside another's async context: close the pooled
        // connections (each with its runtime) on a thread of their own.
        if let Ok(mut pool) = self.readers.lock() {
            let conns = std::mem::take(&mut *pool);
            if !conns.is_empty() {
                let _ = std::thread::spawn(move || drop(conns));
            }
        }
        // The notification still owed, on a thread of its own for the same reason.
        let (notify, url) = (self.notify.clone(), self.url.clone());
        if let Ok(settling) = std::thread::Builder::new()
            .name("baton-pg-settle".into())
            .spawn(move || notify.settle(&url))
        {
            let _ = settling.join();
        }
    }
}

impl Store for PgStore {
    fn submit(&self, job: Box<dyn WriteJob>) {
        let sent = self.jobs.lock().map(|jobs| jobs.send(job));
        if let Ok(Err(mpsc::SendError(job))) = sent {
            job.finish(Err(Error::new(
                Code::Busy,
                "the store's writer stopped",
                "restart baton",
            )));
        }
    }

    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        // On a multi-thread runtime's worker, hand the worker's other tasks to its siblings
        // while this read waits on the database.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.read_on_own_thread(f))
        } else {
            self.read_on_own_thread(f)
        }
    }

    fn commits(&self) -> &tokio::sync::Notify {
        &self.commits
    }
}

impl PgStore {
    /// Runs a read on a thread of its own: the connection's runtime cannot be driven from
    /// inside another runtime's context.
    fn read_on_own_thread(
        &self,
        f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
    ) -> Result<()> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
                let mut conn = match pooled {
                    Some(c) => c,
                    None => {
                        let mut conn = Conn::open(&self.url)?;
                        conn.limit = Some(self.round_trip_limit);
                        conn
                    }
                };
                conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
                let out = f(&mut PgTx::reading(&mut conn));
                let end = conn.batch("COMMIT");
                if end.is_ok() {
                    if let Ok(mut pool) = self.readers.lock() {
                        if pool.len() < MAX_READERS {
                            pool.push(conn);
                        }
                    }
                }
                out.and(end)
            })
            .join()
            .map_err(|_| Error::new(Code::Internal, "a read panicked", "retry the call"))?
        })
    }
}
