//! [`Tx`] on PostgreSQL. Each read is one statement, run to completion on the connection's
//! own runtime (the operation layer is synchronous; see ARCHITECTURE.md).
//!
//! # Round trips
//! A round trip costs PostgreSQL more than the rows a lease operation writes, so a write
//! transaction saves them: task and run writes and events are held back ([`Pending`]) and
//! sent in one statement before the next statement that could read them, or at the commit;
//! `BEGIN` goes out with the first advisory lock; and loading a task to change it
//! ([`Tx::task_for_update`]) also reads its newest run, its open children and whether
//! anything depends on it, which the lease operations ask next ([`Loaded`]). The tasks the
//! lease jobs of one commit are about to load are loaded so together, in one statement,
//! before the first job runs ([`PgTx::load_ahead`]), and so are the agents its claims are
//! about to load (each claim reads its agent `FOR UPDATE`).
//!
//! # Concurrent writers
//! A write transaction first takes its workspace's advisory lock: exclusive for most jobs,
//! shared for claim and lease jobs ([`LockMode`]). Shared jobs run beside each other, so each
//! locks the task rows it changes as it loads them (`FOR UPDATE`; claim candidates and
//! expired leases `FOR UPDATE SKIP LOCKED`). Events are held back and numbered at the end,
//! under the workspace row's lock (`UPDATE … SET last_seq = last_seq + n`), which is then
//! held only for the insert of the events and the commit: numbers follow commit order, with
//! no gaps, while the jobs themselves overlap. The argument is in ARCHITECTURE.md.
use crate::claiming::ClaimSlot;
use crate::flush::{EventRow, Lens, Observed, Pending, RunRow, TaskRow};
use crate::Conn;
use baton_core::error::{Code, Error, Result};
use baton_core::model::*;
use baton_core::store::{
    claim_key, KillSwitch, Loads, LockMode, NewEvent, TaskColumns, TaskFilter, Tx,
};
use baton_core::time::Millis;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::collections::HashSet;

/// A bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Texts(Vec<String>),
    Int(Option<i64>),
    Bool(bool),
}

fn t(s: &str) -> Arg {
    Arg::Text(Some(s.to_string()))
}
fn i(n: i64) -> Arg {
    Arg::Int(Some(n))
}

const OPEN: &str = "status NOT IN ('done', 'failed', 'canceled')";

/// A storage error, keeping whether retrying the transaction can succeed (a deadlock or a
/// serialization failure between replicas).
pub(crate) fn db_err(e: sqlx::Error) -> Error {
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.to_string()));
    match code.as_deref() {
        Some("40P01") | Some("40001") | Some("55P03") => Error::new(
            Code::Busy,
            format!("transaction conflict: {e}"),
            "retry the call",
        ),
        Some("23505") => Error::new(
            Code::AlreadyExists,
            format!("already exists: {e}"),
            "use another name or key",
        ),
        // A NUL character (in an id of a path, say): PostgreSQL's text cannot hold it.
        Some("22021") | Some("22P05") => Error::invalid(
            format!("text PostgreSQL cannot store: {e}"),
            "remove NUL (\\u0000) characters from ids, names and text",
        ),
        // Connection exceptions; the server shutting down, restarting or not yet up.
        Some(c) if c.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c) => {
            unavailable(&e)
        }
        None if matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut
        ) =>
        {
            unavailable(&e)
        }
        _ => Error::new(
            Code::Storage,
            format!("storage error: {e}"),
            "retry the call; if it persists, see the PostgreSQL server's log",
        ),
    }
}

/// PostgreSQL cannot be reached now: its connection broke, or it is restarting.
pub(crate) fn unavailable(e: &dyn std::fmt::Display) -> Error {
    Error::new(
        Code::Unavailable,
        format!("PostgreSQL is unavailable: {e}"),
        "retry with backoff (the database is down, restarting or unreachable); a write cut \
         off may have committed, so retry writes with the same Idempotency-Key",
    )
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::new(Code::Internal, e.to_string(), ""))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    baton_core::store::from_stored_json(text).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("stored row is not valid: {e}"),
            "the store is damaged; run `baton replay --verify`",
        )
    })
}

/// A claim's query over ready tasks, before [`PgTx::claim_rows`] runs it.
struct Candidates {
    sql: String,
    args: Vec<Arg>,
    /// The parameter holding the tasks passed over, if any.
    skip: Option<usize>,
    /// Whether the query starts at the claim floor (it then reads the `floor` CTE).
    floored: bool,
}

/// The workspace's claim floor and the counter of tasks made ready (`$1` the workspace),
/// read in the claim statement's own snapshot (schema version 5).
const FLOOR: &str = "floor AS MATERIALIZED (SELECT ready_gen, floor_neg, floor_due, floor_id
                     FROM workspaces WHERE id = $1)";

/// A task `t` at or above the floor in claim order: a seek in the claim index.
const AT_FLOOR: &str = "(t.neg_priority, t.due_key, t.id) >= ((SELECT floor_neg FROM floor),
                        (SELECT floor_due FROM floor), (SELECT floor_id FROM floor))";

/// The claim statement's last row: the first ready task needing no capabilities from the
/// floor on, locked or not (a claim in flight may yet roll back), and the counter it was
/// read under.
fn next_ready() -> String {
    format!(
        "SELECT 2, NULL, n.neg_priority, n.due_key, n.id, floor.ready_gen
         FROM floor LEFT JOIN LATERAL (
             SELECT t.neg_priority, t.due_key, t.id FROM tasks AS t
             WHERE t.workspace_id = $1 AND t.caps = '' AND t.status = 'ready' AND {AT_FLOOR}
             ORDER BY t.neg_priority, t.due_key, t.id LIMIT 1) AS n ON true"
    )
}

/// The most tasks one claim statement takes for the pool and its own claim together.
const POOL_MAX: u32 = 256;

/// The class of the advisory locks on workspaces (the first key of the two-key form; the
/// second is the hash of the workspace id). "bt".
const WORKSPACE_LOCK: i32 = 0x6274;
/// The class of the advisory locks a claim holds while it counts and grants what a limit
/// allows ([`Tx::try_hold`]; the second key is the hash of the workspace and the name). "bh".
const HOLD_LOCK: i32 = 0x6268;
/// The partial index `tasks_conc`'s condition: leased tasks with a concurrency key.
const LEASED_WITH_KEY: &str =
    "conc_key IS NOT NULL AND status IN ('claimed', 'in_progress', 'waiting')";
/// The projects whose tasks no claim may take now (`$1` the workspace): killed ones, and
/// those with as many tasks leased as their `max_concurrency` (schema version 10).
const CLOSED_PROJECTS: &str = "SELECT p.id FROM projects AS p WHERE p.workspace_id = $1 \
     AND (p.killed OR (p.max_conc IS NOT NULL AND (SELECT count(*) FROM tasks AS l \
         WHERE l.workspace_id = $1 AND l.project_id = p.id \
         AND l.status IN ('claimed', 'in_progress', 'waiting')) >= p.max_conc))";
/// The class of the advisory locks on names a shared job may create (agents, idempotency
/// keys). "bn".
const NAME_LOCK: i32 = 0x626e;

/// What [`Tx::task_for_update`] read beside a task in a shared (claim and lease) job, when
/// it got the task's lock without waiting (after a wait, these would be as of before the
/// holder's commit, so they are not kept), for the questions a lease operation asks
/// next. Valid until this transaction changes the answer (kept up to date or dropped as it
/// writes) or the next job starts. Another transaction cannot change it meanwhile in a way
/// that matters: dependencies change only in exclusive jobs, which wait for this one's
/// shared lock, and no shared job reopens a finished child (a count read early can only be
/// too high, and then a completion refuses, as it would have an instant earlier).
struct Loaded {
    ws: String,
    task_id: String,
    /// The task's newest run (a claim's run is its newest; checked by id on use).
    run: Option<Run>,
    open_children: u64,
    has_dependents: bool,
}

/// One transaction on one connection.
pub(crate) struct PgTx<'a> {
    pub(crate) conn: &'a mut Conn,
    writing: bool,
    mode: LockMode,
    /// Workspaces whose advisory lock this transaction holds.
    locked: HashSet<String>,
    /// Writes and events not sent yet.
    pending: Pending,
    /// Whether `BEGIN` has been sent (a write transaction sends it with its first lock).
    begun: bool,
    /// Answers read along with tasks loaded for update.
    loaded: Vec<Loaded>,
    /// Tasks loaded for update before the jobs that asked for them ran, with their
    /// answers; each is taken by the first job that loads it, and dropped as soon as this
    /// transaction writes anything that would change it.
    ahead: Vec<(Task, Loaded)>,
    /// Agents loaded for update (locked) before the claims that asked for them ran, found
    /// by name; an agent this transaction writes is replaced by what it wrote.
    agents_ahead: Vec<Agent>,
    /// Events that wake waiters appended ([`NewEvent::wakes_waiters`]): such a commit may
    /// make work claimable.
    task_events: usize,
    /// Workspaces where this transaction made a task needing no capabilities ready (or
    /// rewrote one that is): their claim floors are lowered only as it commits, so its own
    /// claims there do not start at them.
    readied: HashSet<String>,
    /// Ready tasks needing no capabilities that a claim's statement locked beyond its own
    /// claim, for the claims of this transaction's next jobs (with their workspace, in
    /// claim order): one statement claims for a commit's jobs instead of one each.
    pool: Option<(String, Vec<Task>)>,
    /// Statements that filled the pool, to tell whether an undone job did (its locks went
    /// with its savepoint).
    pool_fills: usize,
    /// Claim jobs of this transaction yet to run, the running one included: how many
    /// claims a statement may take for.
    claims_left: u32,
    /// Workspaces where this transaction ended a child: its parent may be claimable now,
    /// ahead of the pool's tasks, so claims there read afresh.
    freed: HashSet<String>,
    /// This process's claims in flight, and this transaction's writer among them.
    claiming: Option<ClaimSlot<'a>>,
    /// The projects with a `max_concurrency` in a workspace, and their limits, as this
    /// transaction's latest claim statement read them (with the candidates, in the same
    /// statement): its claims learn whether a candidate's project is limited without a
    /// read of their own.
    project_limits: Option<(String, Vec<(String, u32)>)>,
}

impl Drop for PgTx<'_> {
    /// The transaction is over (committed; or failed, its `ROLLBACK` about to be sent, or
    /// its connection lost): other claims need not pass over its tasks any more (those
    /// still locked until the `ROLLBACK` are skipped as locked).
    fn drop(&mut self) {
        if let Some(slot) = self.claiming {
            slot.claiming.release(slot.writer);
        }
    }
}

/// What a job had added to a transaction before it ran, to undo just that job.
pub(crate) struct Mark {
    locked: HashSet<String>,
    pending: Lens,
    task_events: usize,
    held: usize,
    pool_fills: usize,
}

/// A statement with its parameters bound.
fn bound<'q>(
    sql: &'q str,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v.clone()),
            Arg::Texts(v) => q.bind(v.clone()),
            Arg::Int(v) => q.bind(*v),
            Arg::Bool(v) => q.bind(*v),
        };
    }
    q
}

impl<'a> PgTx<'a> {
    /// A read transaction (already begun) on `conn`.
    pub(crate) fn reading(conn: &'a mut Conn) -> Self {
        Self::new(conn, false, LockMode::Exclusive)
    }

    /// A write transaction on `conn`, for jobs of one lock mode. It begins with its first
    /// statement; [`PgTx::commit`] ends it.
    pub(crate) fn writing(conn: &'a mut Conn, mode: LockMode) -> Self {
        Self::new(conn, true, mode)
    }

    fn new(conn: &'a mut Conn, writing: bool, mode: LockMode) -> Self {
        PgTx {
            conn,
            writing,
            mode,
            locked: HashSet::new(),
            pending: Pending::default(),
            begun: !writing,
            loaded: Vec::new(),
            ahead: Vec::new(),
            agents_ahead: Vec::new(),
            task_events: 0,
            readied: HashSet::new(),
            pool: None,
            pool_fills: 0,
            claims_left: 1,
            freed: HashSet::new(),
            claiming: None,
            project_limits: None,
        }
    }

    /// Shares what this transaction's claims lock with the other writers of the process,
    /// and passes over what theirs hold: see [`crate::claiming`].
    pub(crate) fn claiming(mut self, slot: ClaimSlot<'a>) -> Self {
        self.claiming = Some(slot);
        self
    }

    /// Sends `BEGIN` unless it has gone out.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if !self.begun {
            self.conn.batch("BEGIN")?;
            self.begun = true;
        }
        Ok(())
    }

    /// Runs `sql` (simple protocol) inside the transaction.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        self.begin()?;
        self.conn.batch(sql)
    }

    /// Sends the held-back task and run writes.
    pub(crate) fn flush_rows(&mut self) -> Result<()> {
        if !self.pending.has_rows() {
            return Ok(());
        }
        self.begin()?;
        self.pending.flush(self.conn, false)
    }

    /// Sends everything held back and commits. On an error the transaction is left for the
    /// caller to roll back.
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.begin()?;
        self.pending.flush(self.conn, true)?;
        self.conn.batch("COMMIT")
    }

    /// Events about tasks appended so far.
    pub(crate) fn task_events(&self) -> usize {
        self.task_events
    }

    /// Where the transaction stands as a job starts (answers read by an earlier job are
    /// not carried into it).
    pub(crate) fn mark(&mut self) -> Mark {
        self.loaded.clear();
        Mark {
            locked: self.locked.clone(),
            pending: self.pending.lens(),
            task_events: self.task_events,
            held: self
                .claiming
                .map(|slot| slot.claiming.held_count(slot.writer))
                .unwrap_or(0),
            pool_fills: self.pool_fills,
        }
    }

    /// Tells the transaction how many of its claim jobs are yet to run, the next job
    /// included if it is one.
    pub(crate) fn claims_left(&mut self, n: usize) {
        self.claims_left = n.clamp(1, u32::MAX as usize) as u32;
    }

    /// Forgets what the job after `mark` added, once its savepoint is rolled back (which
    /// also releases the locks taken inside it and undoes what it sent).
    pub(crate) fn rewind(&mut self, mark: Mark) {
        self.locked = mark.locked;
        self.pending.truncate(mark.pending);
        self.loaded.clear();
        // An agent the job wrote is back as it was; its lock, taken before, is still held.
        self.agents_ahead.clear();
        self.task_events = mark.task_events;
        // The tasks the job's claim queries locked: their locks are released.
        if let Some(slot) = self.claiming {
            slot.claiming.release_after(slot.writer, mark.held);
        }
        // A pool the job filled is no longer locked; tasks it took from an older one stay
        // locked to the commit, unclaimed.
        if self.pool_fills != mark.pool_fills {
            self.pool = None;
        }
        // A project the job wrote is back as it was: its limit is read again.
        self.project_limits = None;
    }

    /// Runs a query after sending the writes held back (it may read them).
    pub(crate) fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<PgRow>> {
        self.flush_rows()?;
        self.rows_now(sql, args)
    }

    /// Runs a query that reads nothing held back (no task or run rows).
    fn rows_now(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<PgRow>> {
        self.begin()?;
        let q = bound(sql, args);
        self.conn.trip(async |pg| q.fetch_all(pg).await)
    }

    /// Runs a statement after sending the writes held back (they come first).
    pub(crate) fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        self.flush_rows()?;
        self.begin()?;
        let q = bound(sql, args);
        self.conn
            .trip(async |pg| q.execute(pg).await)
            .map(|r| r.rows_affected())
    }

    fn many<T: DeserializeOwned>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<T>> {
        self.flush_rows()?;
        self.many_now(sql, args)
    }

    /// [`PgTx::many`] for a query that reads nothing held back.
    fn many_now<T: DeserializeOwned>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<T>> {
        self.rows_now(sql, args)?
            .iter()
            .map(|r| from_json(&r.try_get::<String, _>(0).map_err(db_err)?))
            .collect()
    }

    fn one<T: DeserializeOwned>(&mut self, sql: &str, args: &[Arg]) -> Result<Option<T>> {
        Ok(self.many(sql, args)?.into_iter().next())
    }

    /// Takes the workspace's advisory lock, in the transaction's mode, before the first
    /// statement of a write transaction that touches the workspace.
    fn lock(&mut self, ws: &str) -> Result<()> {
        if !self.writing || ws.is_empty() || self.locked.contains(ws) {
            return Ok(());
        }
        let lock = match self.mode {
            LockMode::Exclusive => "pg_advisory_xact_lock",
            LockMode::Shared => "pg_advisory_xact_lock_shared",
        };
        if self.begun {
            self.rows_now(
                &format!("SELECT {lock}({WORKSPACE_LOCK}, hashtext($1))"),
                &[t(ws)],
            )?;
        } else {
            // The transaction's first statement: one round trip for both. Begun even if the
            // lock fails (the transaction is then open and aborted, to be rolled back).
            let quoted = ws.replace('\'', "''");
            self.begun = true;
            self.conn.batch(&format!(
                "BEGIN; SELECT {lock}({WORKSPACE_LOCK}, hashtext('{quoted}'))"
            ))?;
        }
        self.locked.insert(ws.to_string());
        Ok(())
    }

    /// In a shared write transaction, waits until no other transaction can be creating the
    /// row named `name` (of `kind`), so a second look sees it if it was: a find-or-create
    /// that found nothing calls this, then looks again.
    fn lock_name(&mut self, ws: &str, kind: &str, name: &str) -> Result<bool> {
        if !self.writing || self.mode != LockMode::Shared {
            return Ok(false);
        }
        self.exec(
            &format!(
                "SELECT pg_advisory_xact_lock({NAME_LOCK}, hashtext($1 || '/' || $2 || '/' || $3))"
            ),
            &[t(ws), t(kind), t(name)],
        )?;
        Ok(true)
    }

    /// Loads the tasks `ids` of workspace `ws` for update with what a lease operation asks
    /// next ([`Loaded`]), skipping those another transaction holds (a caller that needs one
    /// of them waits for it alone: see [`Tx::task_for_update`]). One statement.
    ///
    /// A task another transaction changed and committed after this statement's snapshot
    /// but before its lock is taken is not skipped: PostgreSQL locks and returns its newest
    /// version, while the subqueries keep answering from the snapshot (a heartbeat's run
    /// would be lost). Such a task comes without its answers (`None`: its row version is
    /// not the one the snapshot sees), to be read afresh when asked.
    fn load_unlocked(&mut self, ws: &str, ids: Vec<String>) -> Result<Vec<(Task, Option<Loaded>)>> {
        let rows = self.rows_now(
            &format!(
                "SELECT t.body,
                     (SELECT r.body FROM runs AS r WHERE r.workspace_id = $1 AND r.task_id = t.id
                      ORDER BY r.id DESC LIMIT 1),
                     (SELECT count(*) FROM tasks AS c WHERE c.workspace_id = $1 AND c.parent_id = t.id
                      AND c.{OPEN}),
                     EXISTS (SELECT 1 FROM dependencies AS d WHERE d.workspace_id = $1 AND d.blocker_id = t.id),
                     t.xmin = (SELECT s.xmin FROM tasks AS s WHERE s.workspace_id = $1 AND s.id = t.id)
                 FROM tasks AS t WHERE t.workspace_id = $1 AND t.id = ANY($2) FOR UPDATE OF t SKIP LOCKED"
            ),
            &[t(ws), Arg::Texts(ids)],
        )?;
        rows.iter()
            .map(|row| {
                let task: Task = from_json(&row.try_get::<String, _>(0).map_err(db_err)?)?;
                let as_of_snapshot: Option<bool> = row.try_get(4).map_err(db_err)?;
                if as_of_snapshot != Some(true) {
                    return Ok((task, None));
                }
                let run = row
                    .try_get::<Option<String>, _>(1)
                    .map_err(db_err)?
                    .map(|body| from_json::<Run>(&body))
                    .transpose()?;
                let open_children: i64 = row.try_get(2).map_err(db_err)?;
                let loaded = Loaded {
                    ws: ws.to_string(),
                    task_id: task.id.clone(),
                    run,
                    open_children: open_children as u64,
                    has_dependents: row.try_get(3).map_err(db_err)?,
                };
                Ok((task, Some(loaded)))
            })
            .collect()
    }

    /// Before the first job of a shared (claim and lease) transaction: loads what the jobs
    /// will load for update (`jobs`: what, its workspace and its task id or agent name, as
    /// the jobs declare), one statement per workspace and kind with more than one of them,
    /// instead of one per job.
    pub(crate) fn load_ahead(&mut self, jobs: &[(Loads, &str, &str)]) -> Result<()> {
        if !self.writing || self.mode != LockMode::Shared {
            return Ok(());
        }
        for kind in [Loads::Agent, Loads::Task] {
            let mut workspaces: Vec<&str> = Vec::new();
            for (_, ws, _) in jobs.iter().filter(|(k, ..)| *k == kind) {
                if !workspaces.contains(ws) {
                    workspaces.push(ws);
                }
            }
            for ws in workspaces {
                let mut keys: Vec<String> = Vec::new();
                for (.., key) in jobs.iter().filter(|(k, w, _)| *k == kind && *w == ws) {
                    if !keys.iter().any(|i| i == key) {
                        keys.push(key.to_string());
                    }
                }
                if keys.len() < 2 {
                    continue; // the job loads it itself, in a statement as cheap
                }
                self.lock(ws)?;
                match kind {
                    // In name order, as every transaction that loads several: two such
                    // transactions wait for each other's agents in the same order.
                    Loads::Agent => {
                        let agents: Vec<Agent> = self.many_now(
                            "SELECT body FROM agents WHERE workspace_id = $1 AND name = ANY($2)
                             ORDER BY name FOR UPDATE",
                            &[t(ws), Arg::Texts(keys)],
                        )?;
                        self.agents_ahead.extend(agents);
                    }
                    // A task loaded without its answers is left to its job (which then holds
                    // its lock, so reads it as it is).
                    Loads::Task => {
                        let loaded = self.load_unlocked(ws, keys)?;
                        self.ahead
                            .extend(loaded.into_iter().filter_map(|(t, l)| Some((t, l?))));
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops tasks loaded ahead whose answers a write in this transaction may change:
    /// `task` itself and its `parent` (a child changed).
    fn drop_ahead(&mut self, ws: &str, task: &str, parent: Option<&str>) {
        self.ahead.retain(|(t, _)| {
            !(t.workspace_id == ws && (t.id == task || Some(t.id.as_str()) == parent))
        });
    }

    /// [`Tx::claim_candidates`]' query (`$1` the workspace, `$2` now), passing over the
    /// tasks `passed_over`.
    ///
    /// The claim index leads with the capability set (`caps`). An agent without
    /// capabilities seeks the set of tasks that need none; otherwise the statement lists the
    /// sets among ready tasks (a recursive skip scan, one seek per set), keeps those the
    /// agent can serve, takes a page of each and merges them in claim order. Each set's page
    /// is locked as it is read (`SKIP LOCKED`), so rows other claimers hold never leave a
    /// claim short; the rows of a page the merge leaves out stay locked to the commit, and
    /// other claimers take the next tasks until then (ARCHITECTURE.md).
    ///
    /// The set of tasks needing no capabilities is sought from the workspace's claim floor
    /// on (schema version 5): the key below which none is ready, past the dead entries
    /// claimed tasks leave at the head of the index until vacuum.
    fn candidates_query(
        &self,
        ws: &str,
        now: Millis,
        limit: u32,
        agent_capabilities: Option<&[String]>,
        passed_over: &[String],
    ) -> Result<Candidates> {
        let mut page = format!(
            "SELECT t.body, t.neg_priority, t.due_key, t.id FROM tasks AS t
             WHERE t.workspace_id = $1 AND t.caps = {{set}} AND t.status = 'ready'{{floor}}
               AND (t.not_before IS NULL OR t.not_before <= $2)
               AND t.project_id NOT IN ({CLOSED_PROJECTS})
               AND NOT EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND killed)
               AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.workspace_id = $1 AND c.parent_id = t.id
                               AND c.status NOT IN ('done', 'failed', 'canceled'))
               AND (t.conc_key IS NULL OR (SELECT count(*) FROM tasks AS k
                                           WHERE k.workspace_id = $1 AND k.conc_key = t.conc_key
                                             AND k.conc_key IS NOT NULL
                                             AND k.status IN ('claimed', 'in_progress', 'waiting'))
                    < t.conc_limit)",
        );
        let mut args = vec![t(ws), i(now)];
        let mut skip = None;
        if !passed_over.is_empty() {
            args.push(Arg::Texts(passed_over.to_vec()));
            skip = Some(args.len());
            page.push_str(&format!(" AND t.id <> ALL(${})", args.len()));
        }
        // SKIP LOCKED: a row another transaction holds is passed over, not waited on.
        let lock = if self.writing {
            "FOR UPDATE OF t SKIP LOCKED"
        } else {
            ""
        };
        page.push_str(&format!(
            " ORDER BY t.neg_priority, t.due_key, t.id LIMIT {limit} {lock}"
        ));
        if agent_capabilities.is_some_and(|caps| caps.is_empty()) {
            let floored = !self.readied.contains(ws);
            let floor = if floored {
                format!(" AND {AT_FLOOR}")
            } else {
                String::new()
            };
            return Ok(Candidates {
                sql: page.replace("{set}", "''").replace("{floor}", &floor),
                args,
                skip,
                floored,
            });
        }
        let servable = match agent_capabilities {
            Some(caps) => {
                args.push(Arg::Texts(caps.to_vec()));
                format!(
                    " AND string_to_array(trim(both ',' from s.caps), ',') <@ ${}::text[]",
                    args.len()
                )
            }
            None => String::new(),
        };
        let sql = format!(
            "WITH RECURSIVE sets (caps) AS (
                 (SELECT caps FROM tasks WHERE workspace_id = $1 AND status = 'ready' ORDER BY caps LIMIT 1)
                 UNION ALL
                 SELECT (SELECT t.caps FROM tasks AS t
                         WHERE t.workspace_id = $1 AND t.status = 'ready' AND t.caps > s.caps
                         ORDER BY t.caps LIMIT 1)
                 FROM sets AS s WHERE s.caps IS NOT NULL)
             SELECT p.body FROM sets AS s CROSS JOIN LATERAL ({}) AS p
             WHERE s.caps IS NOT NULL{servable}
             ORDER BY p.neg_priority, p.due_key, p.id LIMIT {limit}",
            page.replace("{set}", "s.caps").replace("{floor}", "")
        );
        Ok(Candidates {
            sql,
            args,
            skip,
            floored: false,
        })
    }

    /// Runs a claim's statement: the expired leases of `due` (a query) if given, else the
    /// `candidates`; in a write transaction, also where the workspace's claim floor may
    /// rise to ([`Pending::observe`]). The leases due and the candidates, in claim order.
    fn claim_rows(
        &mut self,
        ws: &str,
        due: Option<String>,
        candidates: Candidates,
    ) -> Result<(Vec<Task>, Vec<Task>)> {
        let mut ctes = Vec::new();
        let mut branches = Vec::new();
        const NONE: &str = "NULL::bigint, NULL::bigint, NULL::text, NULL::bigint";
        if candidates.floored {
            ctes.push(FLOOR.to_string());
        }
        let mut gate = "";
        if let Some(due) = due {
            ctes.push(format!("due AS ({due})"));
            branches.push(format!("SELECT 0, body, {NONE} FROM due"));
            gate = " WHERE NOT EXISTS (SELECT 1 FROM due)";
        }
        branches.push(format!(
            "SELECT 1, c.body, {NONE} FROM ({}) AS c{gate}",
            candidates.sql
        ));
        if candidates.floored && self.writing {
            branches.push(next_ready());
        }
        if self.writing {
            branches.push(
                "SELECT 3, NULL, NULL::bigint, NULL::bigint, p.id, p.max_conc FROM projects AS p
                 WHERE p.workspace_id = $1 AND p.max_conc IS NOT NULL"
                    .to_string(),
            );
        }
        let with = if ctes.is_empty() {
            String::new()
        } else {
            format!("WITH {} ", ctes.join(", "))
        };
        let sql = format!("{with}{}", branches.join(" UNION ALL "));
        let (mut due, mut ready) = (Vec::new(), Vec::new());
        let mut limits = Vec::new();
        for row in self.rows_now(&sql, &candidates.args)? {
            match row.try_get::<i32, _>(0).map_err(db_err)? {
                3 => {
                    let id: String = row.try_get(4).map_err(db_err)?;
                    let max: i64 = row.try_get(5).map_err(db_err)?;
                    limits.push((id, u32::try_from(max).unwrap_or(u32::MAX)));
                }
                2 => {
                    let id: Option<String> = row.try_get(4).map_err(db_err)?;
                    if let Some(id) = id {
                        self.pending.observe(Observed {
                            ws: ws.to_string(),
                            neg_priority: row.try_get(2).map_err(db_err)?,
                            due_key: row.try_get(3).map_err(db_err)?,
                            id,
                            ready_gen: row.try_get(5).map_err(db_err)?,
                        });
                    }
                }
                kind => {
                    let task: Task = from_json(&row.try_get::<String, _>(1).map_err(db_err)?)?;
                    if kind == 0 { &mut due } else { &mut ready }.push(task);
                }
            }
        }
        if self.writing {
            self.project_limits = Some((ws.to_string(), limits));
        }
        // In claim order, which the union need not keep.
        ready.sort_by(|a, b| claim_key(a).cmp(&claim_key(b)));
        self.hold(ws, &due);
        self.hold(ws, &ready);
        Ok((due, ready))
    }

    /// Before a claim's query in a write transaction: the tasks it must pass over instead
    /// of waiting for the writes held back to be sent. Those writes are sent first only if
    /// one made a task `ready` or ended a child (its parent may be claimable now: the claim
    /// must see either); otherwise the tasks written (claimed by an earlier job, perhaps
    /// still `ready` in the database, and locked by this transaction, so `SKIP LOCKED`
    /// would not pass over them) are left out by id. A read transaction holds nothing back.
    fn before_claim_query(&mut self, ws: &str) -> Result<Vec<String>> {
        if !self.writing {
            return Ok(Vec::new());
        }
        self.lock(ws)?;
        let mut passed_over = match self.pending.unsent_unclaimable(ws) {
            Some(ids) => ids,
            None => {
                // A task made ready or freed may come before the pool's.
                self.pool = None;
                self.flush_rows()?;
                Vec::new()
            }
        };
        if let Some(slot) = self.claiming {
            passed_over.extend(slot.claiming.held_by_others(slot.writer, ws));
        }
        Ok(passed_over)
    }

    /// Whether a claim of an agent with `agent_capabilities` in `ws` may be served from the
    /// pool or fill it: a write transaction's claim from the floor (agents without
    /// capabilities, no task made ready here by this transaction), with no child ended
    /// here by it (a claim must see the parent it may have freed).
    fn pools(&self, ws: &str, agent_capabilities: Option<&[String]>) -> bool {
        self.writing
            && agent_capabilities.is_some_and(|caps| caps.is_empty())
            && !self.readied.contains(ws)
            && !self.freed.contains(ws)
    }

    /// The first `limit` tasks of the pool, if it holds that many of `ws` and may serve
    /// this claim.
    fn take_pooled(
        &mut self,
        ws: &str,
        limit: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Option<Vec<Task>> {
        if !self.pools(ws, agent_capabilities) {
            self.pool = None;
            return None;
        }
        let (pool_ws, tasks) = self.pool.as_mut()?;
        if pool_ws != ws || tasks.len() < limit as usize {
            return None;
        }
        Some(tasks.drain(..limit as usize).collect())
    }

    /// How many tasks a claim's statement takes: `limit` for each claim job yet to run,
    /// when the rest may go to the pool (a later job that claims fewer, or none, leaves
    /// tasks locked to the commit, which other claimers pass over until then).
    fn claims_to_fetch(&self, ws: &str, limit: u32, agent_capabilities: Option<&[String]>) -> u32 {
        if self.pools(ws, agent_capabilities) {
            limit
                .saturating_mul(self.claims_left)
                .min(POOL_MAX.max(limit))
        } else {
            limit
        }
    }

    /// The job's own `limit` of `ready`; the rest, if any, becomes the pool.
    fn pool_rest(&mut self, ws: &str, mut ready: Vec<Task>, limit: u32) -> Vec<Task> {
        if ready.len() > limit as usize {
            let rest = ready.split_off(limit as usize);
            self.pool = Some((ws.to_string(), rest));
            self.pool_fills += 1;
        } else {
            self.pool = None;
        }
        ready
    }

    /// Records the tasks a claim's query locked, for the other writers to pass over.
    fn hold(&self, ws: &str, tasks: &[Task]) {
        if let Some(slot) = self.claiming {
            slot.claiming.hold(slot.writer, ws, tasks.iter());
        }
    }

    /// [`Tx::expired_leases`]' statement (`$1` the workspace, `$2` now), passing over the
    /// tasks in parameter `passed_over` if given.
    fn expired_query(&self, limit: u32, passed_over: Option<usize>) -> String {
        // Locked to be expired; one a heartbeat holds is passed over (it may be extending it).
        let lock = if self.writing {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let skip = passed_over
            .map(|n| format!("AND id <> ALL(${n})"))
            .unwrap_or_default();
        format!(
            "SELECT body FROM tasks WHERE workspace_id = $1 AND lease_expires_at IS NOT NULL
             AND lease_expires_at <= $2 {skip} ORDER BY lease_expires_at LIMIT {limit} {lock}"
        )
    }

    /// The first row of [`PgTx::scoped`], if any.
    fn scoped_one<T: DeserializeOwned>(
        &mut self,
        ws: &str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<T>> {
        Ok(self.scoped(ws, sql, args)?.into_iter().next())
    }

    fn scoped<T: DeserializeOwned>(&mut self, ws: &str, sql: &str, args: &[Arg]) -> Result<Vec<T>> {
        self.lock(ws)?;
        self.many(sql, args)
    }
}

/// The first column of a statement's first row, if it returned one.
fn first_value<T>(rows: &[PgRow]) -> Result<Option<T>>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    rows.first()
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db_err)
}

impl Tx for PgTx<'_> {
    fn workspaces(&mut self) -> Result<Vec<Workspace>> {
        self.many("SELECT body FROM workspaces ORDER BY id", &[])
    }

    fn workspace_by_name(&mut self, name: &str) -> Result<Option<Workspace>> {
        self.one("SELECT body FROM workspaces WHERE name = $1", &[t(name)])
    }

    fn workspace(&mut self, id: &str) -> Result<Option<Workspace>> {
        self.scoped_one(id, "SELECT body FROM workspaces WHERE id = $1", &[t(id)])
    }

    fn put_workspace(&mut self, ws: &Workspace) -> Result<()> {
        self.exec(
            "INSERT INTO workspaces (id, name, killed, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, killed = excluded.killed,
                                            body = excluded.body",
            &[
                t(&ws.id),
                t(&ws.name),
                Arg::Bool(ws.killed),
                Arg::Text(Some(to_json(ws)?)),
            ],
        )?;
        self.lock(&ws.id)
    }

    fn kill_switch(
        &mut self,
        ws: &str,
        project_id: &str,
        agent_id: &str,
    ) -> Result<Option<KillSwitch>> {
        self.lock(ws)?;
        let rows = self.rows_now(
            "SELECT 'workspace', name, 1 AS rank FROM workspaces WHERE id = $1 AND killed
             UNION ALL
             SELECT 'project', name, 2 FROM projects WHERE workspace_id = $1 AND id = $2 AND killed
             UNION ALL
             SELECT 'agent', name, 3 FROM agents
              WHERE workspace_id = $1 AND id = $3 AND body::jsonb ->> 'status' = 'killed'
             ORDER BY rank",
            &[t(ws), t(project_id), t(agent_id)],
        )?;
        for row in rows {
            let kind: String = row.try_get(0).map_err(db_err)?;
            let name: String = row.try_get(1).map_err(db_err)?;
            if let Some(switch) = KillSwitch::from_row(&kind, name) {
                return Ok(Some(switch));
            }
        }
        Ok(None)
    }

    fn project(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Project>> {
        self.scoped_one(
            ws,
            "SELECT body FROM projects WHERE workspace_id = $1 AND (id = $2 OR name = $2) ORDER BY (id = $2) DESC LIMIT 1",
            &[t(ws), t(id_or_name)],
        )
    }

    fn put_project(&mut self, p: &Project) -> Result<()> {
        self.lock(&p.workspace_id)?;
        self.exec(
            "INSERT INTO projects (workspace_id, id, name, killed, max_conc, body)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (workspace_id, id) DO UPDATE SET name = excluded.name,
                 killed = excluded.killed, max_conc = excluded.max_conc, body = excluded.body",
            &[
                t(&p.workspace_id),
                t(&p.id),
                t(&p.name),
                Arg::Bool(p.killed),
                Arg::Int(p.max_concurrency.map(i64::from)),
                Arg::Text(Some(to_json(p)?)),
            ],
        )?;
        // Claims later in this transaction see the limit as written.
        if let Some((ws, limits)) = &mut self.project_limits {
            if *ws == p.workspace_id {
                limits.retain(|(id, _)| *id != p.id);
                limits.extend(p.max_concurrency.map(|max| (p.id.clone(), max)));
            }
        }
        Ok(())
    }

    fn projects(&mut self, ws: &str) -> Result<Vec<Project>> {
        self.scoped(
            ws,
            "SELECT body FROM projects WHERE workspace_id = $1 ORDER BY name COLLATE \"C\"",
            &[t(ws)],
        )
    }

    fn key_by_hash(&mut self, token_sha256: &str) -> Result<Option<ApiKey>> {
        self.one(
            "SELECT body FROM api_keys WHERE token_sha256 = $1",
            &[t(token_sha256)],
        )
    }

    fn put_key(&mut self, k: &ApiKey) -> Result<()> {
        self.lock(&k.workspace_id)?;
        self.exec(
            "INSERT INTO api_keys (workspace_id, id, token_sha256, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, id) DO UPDATE SET token_sha256 = excluded.token_sha256, body = excluded.body",
            &[t(&k.workspace_id), t(&k.id), t(&k.token_sha256), Arg::Text(Some(to_json(k)?))],
        )?;
        Ok(())
    }

    fn agent(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Agent>> {
        // In a shared write, locked: two claims by one agent on two connections must not
        // write back each other's stale copy (capabilities, last seen).
        let lock = if self.writing && self.mode == LockMode::Shared {
            "FOR UPDATE"
        } else {
            ""
        };
        let sql = format!(
            "SELECT body FROM agents WHERE workspace_id = $1 AND (name = $2 OR id = $2)
             ORDER BY (name = $2) DESC LIMIT 1 {lock}"
        );
        let args = [t(ws), t(id_or_name)];
        // Agents are written at once, never held back: no flush needed to read one.
        self.lock(ws)?;
        if let Some(agent) = self
            .agents_ahead
            .iter()
            .find(|a| a.workspace_id == ws && a.name == id_or_name)
        {
            return Ok(Some(agent.clone()));
        }
        let found = self.many_now(&sql, &args)?.into_iter().next();
        if found.is_none() && self.lock_name(ws, "agent", id_or_name)? {
            return Ok(self.many_now(&sql, &args)?.into_iter().next());
        }
        Ok(found)
    }

    fn put_agent(&mut self, a: &Agent) -> Result<()> {
        self.lock(&a.workspace_id)?;
        for ahead in &mut self.agents_ahead {
            if ahead.workspace_id == a.workspace_id && ahead.id == a.id {
                *ahead = a.clone();
            }
        }
        self.exec(
            "INSERT INTO agents (workspace_id, id, name, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, id) DO UPDATE SET name = excluded.name, body = excluded.body",
            &[t(&a.workspace_id), t(&a.id), t(&a.name), Arg::Text(Some(to_json(a)?))],
        )?;
        Ok(())
    }

    fn agents(&mut self, ws: &str) -> Result<Vec<Agent>> {
        self.scoped(
            ws,
            "SELECT body FROM agents WHERE workspace_id = $1 ORDER BY name COLLATE \"C\"",
            &[t(ws)],
        )
    }

    fn task(&mut self, ws: &str, id: &str) -> Result<Option<Task>> {
        self.scoped_one(
            ws,
            "SELECT body FROM tasks WHERE workspace_id = $1 AND id = $2",
            &[t(ws), t(id)],
        )
    }

    fn task_for_update(&mut self, ws: &str, id: &str) -> Result<Option<Task>> {
        if !self.writing {
            return self.task(ws, id);
        }
        let locked = "SELECT body FROM tasks WHERE workspace_id = $1 AND id = $2 FOR UPDATE";
        if self.mode == LockMode::Exclusive {
            // Planners' operations may move a task to another parent, which the answers
            // read here would not see: they read those answers when they need them.
            return self.scoped_one(ws, locked, &[t(ws), t(id)]);
        }
        // What was read with this task before is replaced by what is read now, or by nothing.
        self.loaded.retain(|l| !(l.ws == ws && l.task_id == id));
        if let Some(at) = self
            .ahead
            .iter()
            .position(|(t, _)| t.workspace_id == ws && t.id == id)
        {
            let (task, loaded) = self.ahead.swap_remove(at);
            self.loaded.push(loaded);
            return Ok(Some(task));
        }
        self.lock(ws)?;
        // Writes held back for other tasks cannot change what this reads (no claim or lease
        // operation moves a task to another parent).
        if self.pending.touches_task(ws, id) {
            self.flush_rows()?;
        }
        let found = self.load_unlocked(ws, vec![id.to_string()])?.pop();
        let Some((task, loaded)) = found else {
            // Absent, or locked by another transaction. Waiting for the lock here would
            // re-read the task after that transaction's commit but keep the run and the
            // children as the statement first saw them: wait with the task alone, and
            // let the run and children be read afresh when asked.
            return self.scoped_one(ws, locked, &[t(ws), t(id)]);
        };
        self.loaded.extend(loaded);
        Ok(Some(task))
    }

    fn task_by_key(&mut self, ws: &str, key: &str) -> Result<Option<Task>> {
        self.scoped_one(
            ws,
            "SELECT body FROM tasks WHERE workspace_id = $1 AND idem_key = $2",
            &[t(ws), t(key)],
        )
    }

    fn put_task(&mut self, task: &Task, body: &str) -> Result<()> {
        self.lock(&task.workspace_id)?;
        self.drop_ahead(&task.workspace_id, &task.id, task.parent_id.as_deref());
        // A child changed: its parent's open-children count read earlier may be off.
        if let Some(parent) = &task.parent_id {
            self.loaded
                .retain(|l| !(l.ws == task.workspace_id && &l.task_id == parent));
        }
        // A task this transaction writes is no longer as the pool read it.
        if let Some((ws, pooled)) = &mut self.pool {
            if *ws == task.workspace_id {
                pooled.retain(|t| t.id != task.id);
            }
        }
        let columns = TaskColumns::of(task);
        if columns.status == "ready" && columns.caps.is_empty() {
            self.readied.insert(task.workspace_id.clone());
        }
        if columns.parent_id.is_some() && matches!(columns.status, "done" | "failed" | "canceled") {
            self.freed.insert(task.workspace_id.clone());
        }
        self.pending.tasks.push(TaskRow {
            ws: task.workspace_id.clone(),
            id: task.id.clone(),
            columns,
            body: body.to_string(),
        });
        Ok(())
    }

    fn list_tasks(&mut self, ws: &str, f: &TaskFilter) -> Result<Vec<Task>> {
        let mut sql = String::from("SELECT body FROM tasks WHERE workspace_id = $1");
        // The status as a literal (one of a fixed set of words), not a parameter: the
        // status indexes are partial (open tasks; failed or canceled ones), and the planner
        // uses a partial index only where it can see the query implies its predicate. Done
        // tasks have no status index: they are read in id order through the primary key,
        // which finds them at once in a history that is mostly done, and reads past the
        // open tasks where it is not.
        if let Some(status) = f.status {
            sql.push_str(&format!(" AND status = '{}'", status.as_str()));
        }
        let mut args = vec![t(ws)];
        let filters = [
            ("parent_id =", f.parent_id.clone()),
            ("strpos(labels, ',' || ", f.label.clone()),
            ("project_id =", f.project_id.clone()),
            ("id >", f.after_id.clone()),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                args.push(Arg::Text(Some(value)));
                if clause.starts_with("strpos") {
                    sql.push_str(&format!(" AND {clause}${} || ',') > 0", args.len()));
                } else {
                    sql.push_str(&format!(" AND {clause} ${}", args.len()));
                }
            }
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", f.limit));
        self.scoped(ws, &sql, &args)
    }

    fn claim_candidates(
        &mut self,
        ws: &str,
        now: Millis,
        limit: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Result<Vec<Task>> {
        let passed_over = self.before_claim_query(ws)?;
        if let Some(pooled) = self.take_pooled(ws, limit, agent_capabilities) {
            return Ok(pooled);
        }
        let fetch = self.claims_to_fetch(ws, limit, agent_capabilities);
        let candidates = self.candidates_query(ws, now, fetch, agent_capabilities, &passed_over)?;
        let (_, ready) = self.claim_rows(ws, None, candidates)?;
        Ok(self.pool_rest(ws, ready, limit))
    }

    fn expired_leases(&mut self, ws: &str, now: Millis, limit: u32) -> Result<Vec<Task>> {
        let sql = self.expired_query(limit, None);
        self.scoped(ws, &sql, &[t(ws), i(now)])
    }

    fn expired_or_candidates(
        &mut self,
        ws: &str,
        now: Millis,
        reap_limit: u32,
        page: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Result<(Vec<Task>, Vec<Task>)> {
        let passed_over = self.before_claim_query(ws)?;
        if let Some(pooled) = self.take_pooled(ws, page, agent_capabilities) {
            return Ok((Vec::new(), pooled));
        }
        let fetch = self.claims_to_fetch(ws, page, agent_capabilities);
        let candidates = self.candidates_query(ws, now, fetch, agent_capabilities, &passed_over)?;
        // The candidates' branch runs only when no lease is due (a one-time filter), so it
        // locks nothing then.
        let due = self.expired_query(reap_limit, candidates.skip);
        let (due, ready) = self.claim_rows(ws, Some(due), candidates)?;
        Ok((due, self.pool_rest(ws, ready, page)))
    }

    fn open_task_counts(&mut self, ws: &str) -> Result<Vec<(baton_core::state::Status, u64)>> {
        // The predicate is the open-status index's own, so the count reads that index only.
        let rows = self.rows(
            &format!(
                "SELECT status, count(*) FROM tasks WHERE workspace_id = $1 AND {OPEN} \
                 GROUP BY status"
            ),
            &[t(ws)],
        )?;
        let mut counts = Vec::new();
        for row in rows {
            let status: String = row.try_get(0).map_err(db_err)?;
            let n: i64 = row.try_get(1).map_err(db_err)?;
            counts.push((baton_core::state::Status::parse(&status)?, n as u64));
        }
        counts.sort();
        Ok(counts)
    }

    fn agent_leases(&mut self, ws: &str, agent_id: &str, now: Millis) -> Result<u64> {
        // The live leases through `tasks_lease`, each body read for its holder: as many
        // rows as the workspace has leases, and only for agents with a limit. `rows` sends
        // this transaction's held-back writes first: its own grants count.
        self.lock(ws)?;
        let rows = self.rows(
            "SELECT count(*) FROM tasks WHERE workspace_id = $1 AND lease_expires_at > $3
             AND (body::json -> 'lease' ->> 'agent_id') = $2",
            &[t(ws), t(agent_id), i(now)],
        )?;
        Ok(first_value::<i64>(&rows)?.unwrap_or(0) as u64)
    }

    fn try_hold(&mut self, ws: &str, name: &str) -> Result<bool> {
        if !self.writing {
            return Ok(true);
        }
        self.lock(ws)?;
        // Tried, not waited for: a claim that finds a name held passes its task over rather
        // than risk a deadlock with a transaction holding names in another order. What it
        // reads next is a statement of its own, so its snapshot is taken with the name held
        // and sees the writes of every transaction that held it before.
        let held = self.rows_now(
            &format!("SELECT pg_try_advisory_xact_lock({HOLD_LOCK}, hashtext($1 || '/' || $2))"),
            &[t(ws), t(name)],
        )?;
        Ok(first_value(&held)?.unwrap_or(false))
    }

    fn leased_with_key(&mut self, ws: &str, key: &str) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT body FROM tasks WHERE workspace_id = $1 AND conc_key = $2 AND {LEASED_WITH_KEY}"
        );
        self.scoped(ws, &sql, &[t(ws), t(key)])
    }

    fn ready_with_key_above(
        &mut self,
        ws: &str,
        key: &str,
        priority: i64,
        now: Millis,
    ) -> Result<Option<Task>> {
        self.scoped_one(
            ws,
            "SELECT body FROM tasks WHERE workspace_id = $1 AND conc_key = $2
               AND conc_key IS NOT NULL AND status = 'ready' AND neg_priority < $3
               AND (not_before IS NULL OR not_before <= $4)
               AND project_id NOT IN (SELECT id FROM projects WHERE workspace_id = $1 AND killed)
               AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.workspace_id = $1
                               AND c.parent_id = tasks.id AND c.status NOT IN ('done', 'failed', 'canceled'))
             ORDER BY neg_priority, due_key, id LIMIT 1",
            &[t(ws), t(key), i(priority.saturating_neg()), i(now)],
        )
    }

    fn key_leases(&mut self, ws: &str, key: &str) -> Result<u64> {
        self.lock(ws)?;
        // `rows` sends this transaction's held-back writes first: its own grants count.
        let rows = self.rows(
            &format!(
                "SELECT count(*) FROM tasks WHERE workspace_id = $1 AND conc_key = $2 \
                 AND {LEASED_WITH_KEY}"
            ),
            &[t(ws), t(key)],
        )?;
        Ok(first_value::<i64>(&rows)?.unwrap_or(0) as u64)
    }

    fn project_limit(&mut self, ws: &str, task: &Task) -> Result<Option<u32>> {
        if let Some((seen, limits)) = &self.project_limits {
            if seen == ws {
                let limit = limits.iter().find(|(id, _)| *id == task.project_id);
                return Ok(limit.map(|(_, max)| *max));
            }
        }
        baton_core::store::read_project_limit(self, ws, task)
    }

    fn project_leases(&mut self, ws: &str, project_id: &str) -> Result<u64> {
        self.lock(ws)?;
        // `rows` sends this transaction's held-back writes first: its own grants count.
        let rows = self.rows(
            "SELECT count(*) FROM tasks WHERE workspace_id = $1 AND project_id = $2
             AND status IN ('claimed', 'in_progress', 'waiting')",
            &[t(ws), t(project_id)],
        )?;
        Ok(first_value::<i64>(&rows)?.unwrap_or(0) as u64)
    }

    fn open_children(&mut self, ws: &str, id: &str) -> Result<u64> {
        if let Some(l) = self.loaded.iter().find(|l| l.ws == ws && l.task_id == id) {
            return Ok(l.open_children);
        }
        self.lock(ws)?;
        let rows = self.rows(
            &format!(
                "SELECT count(*) FROM tasks WHERE workspace_id = $1 AND parent_id = $2 AND {OPEN}"
            ),
            &[t(ws), t(id)],
        )?;
        let n: i64 = first_value(&rows)?.unwrap_or(0);
        Ok(n as u64)
    }

    fn run(&mut self, ws: &str, task_id: &str, id: &str) -> Result<Option<Run>> {
        let loaded = self
            .loaded
            .iter()
            .filter_map(|l| l.run.as_ref())
            .find(|r| r.workspace_id == ws && r.task_id == task_id && r.id == id);
        if let Some(run) = loaded {
            return Ok(Some(run.clone()));
        }
        self.scoped_one(
            ws,
            "SELECT body FROM runs WHERE workspace_id = $1 AND id = $2 AND task_id = $3",
            &[t(ws), t(id), t(task_id)],
        )
    }

    fn put_run(&mut self, r: &Run) -> Result<()> {
        self.lock(&r.workspace_id)?;
        self.drop_ahead(&r.workspace_id, &r.task_id, None);
        for l in &mut self.loaded {
            if l.run
                .as_ref()
                .is_some_and(|run| run.workspace_id == r.workspace_id && run.id == r.id)
            {
                l.run = Some(r.clone());
            }
        }
        self.pending.runs.push(RunRow {
            ws: r.workspace_id.clone(),
            id: r.id.clone(),
            task_id: r.task_id.clone(),
            body: to_json(r)?,
        });
        Ok(())
    }

    fn runs_of(&mut self, ws: &str, task_id: &str, limit: u32) -> Result<Vec<Run>> {
        self.scoped(
            ws,
            &format!("SELECT body FROM runs WHERE workspace_id = $1 AND task_id = $2 ORDER BY id DESC LIMIT {limit}"),
            &[t(ws), t(task_id)],
        )
    }

    fn deps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>> {
        self.scoped(
            ws,
            "SELECT body FROM dependencies WHERE workspace_id = $1 AND blocked_id = $2 ORDER BY blocker_id, kind",
            &[t(ws), t(task_id)],
        )
    }

    fn unfinished_blocker(
        &mut self,
        ws: &str,
        task_id: &str,
    ) -> Result<Option<baton_core::state::Status>> {
        self.lock(ws)?;
        // Blockers not done, failed or canceled ones first; statuses from the column, so no
        // blocker is decoded.
        let rows = self.rows(
            "SELECT t.status FROM dependencies AS d
             JOIN tasks AS t ON t.workspace_id = d.workspace_id AND t.id = d.blocker_id
             WHERE d.workspace_id = $1 AND d.blocked_id = $2 AND d.kind = 'blocks' AND t.status <> 'done'
             ORDER BY t.status IN ('failed', 'canceled') DESC LIMIT 1",
            &[t(ws), t(task_id)],
        )?;
        let status: Option<String> = first_value(&rows)?;
        status
            .map(|s| baton_core::state::Status::parse(&s))
            .transpose()
    }

    fn dependents_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>> {
        let none = self
            .loaded
            .iter()
            .any(|l| l.ws == ws && l.task_id == task_id && !l.has_dependents);
        if none {
            return Ok(vec![]);
        }
        self.scoped(
            ws,
            "SELECT body FROM dependencies WHERE workspace_id = $1 AND blocker_id = $2 ORDER BY blocked_id, kind",
            &[t(ws), t(task_id)],
        )
    }

    fn put_dep(&mut self, d: &Dependency) -> Result<()> {
        self.lock(&d.workspace_id)?;
        self.loaded.clear();
        self.ahead.clear();
        self.exec(
            "INSERT INTO dependencies (workspace_id, blocked_id, blocker_id, kind, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workspace_id, blocked_id, blocker_id, kind) DO UPDATE SET body = excluded.body",
            &[t(&d.workspace_id), t(&d.blocked_id), t(&d.blocker_id), t(dep_kind(d.kind)), Arg::Text(Some(to_json(d)?))],
        )?;
        Ok(())
    }

    fn delete_dep(
        &mut self,
        ws: &str,
        blocker: &str,
        blocked: &str,
        kind: DepKind,
    ) -> Result<bool> {
        self.lock(ws)?;
        self.loaded.clear();
        self.ahead.clear();
        let n = self.exec(
            "DELETE FROM dependencies WHERE workspace_id = $1 AND blocked_id = $2 AND blocker_id = $3 AND kind = $4",
            &[t(ws), t(blocked), t(blocker), t(dep_kind(kind))],
        )?;
        Ok(n > 0)
    }

    fn context(&mut self, ws: &str, id: &str) -> Result<Option<ContextEntry>> {
        self.scoped_one(
            ws,
            "SELECT body FROM context WHERE workspace_id = $1 AND id = $2",
            &[t(ws), t(id)],
        )
    }

    fn put_context(&mut self, c: &ContextEntry) -> Result<()> {
        self.lock(&c.workspace_id)?;
        self.exec(
            "INSERT INTO context (workspace_id, id, task_id, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, id) DO UPDATE SET body = excluded.body",
            &[
                t(&c.workspace_id),
                t(&c.id),
                t(&c.task_id),
                Arg::Text(Some(to_json(c)?)),
            ],
        )?;
        Ok(())
    }

    fn context_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<ContextEntry>> {
        self.scoped(
            ws,
            "SELECT body FROM context WHERE workspace_id = $1 AND task_id = $2 ORDER BY id",
            &[t(ws), t(task_id)],
        )
    }

    fn artifact(&mut self, ws: &str, id: &str) -> Result<Option<Artifact>> {
        self.scoped_one(
            ws,
            "SELECT body FROM artifacts WHERE workspace_id = $1 AND id = $2",
            &[t(ws), t(id)],
        )
    }

    fn put_artifact(&mut self, a: &Artifact) -> Result<()> {
        self.lock(&a.workspace_id)?;
        self.exec(
            "INSERT INTO artifacts (workspace_id, id, task_id, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, id) DO UPDATE SET body = excluded.body",
            &[
                t(&a.workspace_id),
                t(&a.id),
                t(&a.task_id),
                Arg::Text(Some(to_json(a)?)),
            ],
        )?;
        Ok(())
    }

    fn artifacts_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Artifact>> {
        self.scoped(
            ws,
            "SELECT body FROM artifacts WHERE workspace_id = $1 AND task_id = $2 ORDER BY id",
            &[t(ws), t(task_id)],
        )
    }

    fn put_step(&mut self, s: &Step) -> Result<()> {
        self.lock(&s.workspace_id)?;
        self.exec(
            "INSERT INTO steps (workspace_id, id, task_id, position, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workspace_id, id) DO UPDATE SET position = excluded.position, body = excluded.body",
            &[t(&s.workspace_id), t(&s.id), t(&s.task_id), i(i64::from(s.position)), Arg::Text(Some(to_json(s)?))],
        )?;
        Ok(())
    }

    fn steps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Step>> {
        self.scoped(
            ws,
            "SELECT body FROM steps WHERE workspace_id = $1 AND task_id = $2 ORDER BY position",
            &[t(ws), t(task_id)],
        )
    }

    fn append_event(&mut self, e: NewEvent<'_>) -> Result<()> {
        self.lock(e.workspace_id)?;
        self.pending.events.push(EventRow {
            ws: e.workspace_id.to_string(),
            kind: e.kind.to_string(),
            at: e.at,
            actor: e.actor.to_string(),
            task_id: e.task_id.map(str::to_string),
            data: e.data.to_string(),
            request_id: e.request_id.map(str::to_string),
        });
        if e.wakes_waiters() {
            self.task_events += 1;
        }
        Ok(())
    }

    fn task_event_at(
        &mut self,
        ws: &str,
        task_id: &str,
        seq: u64,
    ) -> Result<Option<(u64, String)>> {
        let rows = self.rows(
            "SELECT seq, data FROM events WHERE workspace_id = $1 AND seq <= $3 AND task_id = $2
             ORDER BY seq DESC LIMIT 1",
            &[t(ws), t(task_id), i(seq as i64)],
        )?;
        rows.first()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0).map_err(db_err)? as u64,
                    r.try_get::<String, _>(1).map_err(db_err)?,
                ))
            })
            .transpose()
    }

    fn events(&mut self, ws: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let rows = self.rows(
            &format!(
                "SELECT seq, type, at, actor, task_id, data, request_id FROM events WHERE workspace_id = $1 AND seq > $2
                 ORDER BY seq LIMIT {limit}"
            ),
            &[t(ws), i(after as i64)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    seq: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
                    workspace_id: ws.to_string(),
                    kind: r.try_get(1).map_err(db_err)?,
                    at: r.try_get(2).map_err(db_err)?,
                    actor: r.try_get(3).map_err(db_err)?,
                    task_id: r.try_get(4).map_err(db_err)?,
                    data: from_json(&r.try_get::<String, _>(5).map_err(db_err)?)?,
                    request_id: r.try_get(6).map_err(db_err)?,
                })
            })
            .collect()
    }

    fn last_seq(&mut self, ws: &str) -> Result<u64> {
        let rows = self.rows("SELECT last_seq FROM workspaces WHERE id = $1", &[t(ws)])?;
        let n: i64 = first_value(&rows)?.unwrap_or(0);
        let held_back = self.pending.events.iter().filter(|e| e.ws == ws).count();
        Ok(n as u64 + held_back as u64)
    }

    fn idempotency(&mut self, ws: &str, key: &str) -> Result<Option<(String, String)>> {
        self.lock(ws)?;
        let sql =
            "SELECT request_sha256, response FROM idempotency WHERE workspace_id = $1 AND key = $2";
        let args = [t(ws), t(key)];
        let mut rows = self.rows(sql, &args)?;
        if rows.is_empty() && self.lock_name(ws, "idempotency", key)? {
            rows = self.rows(sql, &args)?;
        }
        rows.first()
            .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?)))
            .transpose()
    }

    fn put_idempotency(
        &mut self,
        ws: &str,
        key: &str,
        sha: &str,
        response: &str,
        at: Millis,
    ) -> Result<()> {
        self.lock(ws)?;
        self.exec(
            "INSERT INTO idempotency (workspace_id, key, request_sha256, response, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[t(ws), t(key), t(sha), t(response), i(at)],
        )?;
        Ok(())
    }

    fn projection_rows(&mut self) -> Result<Vec<(String, String)>> {
        // Whole tables, each in one answer: as long as they take (replay is offline work).
        let limit = self.conn.limit.take();
        let out = self.all_projection_rows();
        self.conn.limit = limit;
        out
    }
}

impl PgTx<'_> {
    fn all_projection_rows(&mut self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for q in baton_core::store::PROJECTION_QUERIES {
            // This store also keeps the counter in the workspace row: the same text as every
            // backend's while it agrees with the log, and one that differs when it does not.
            let q = match q {
                baton_core::store::WORKSPACES_PROJECTION => WORKSPACES_WITH_COUNTER,
                other => other,
            };
            for r in self.rows(q, &[])? {
                out.push((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?));
            }
        }
        Ok(out)
    }
}

/// [`WORKSPACES_PROJECTION`](baton_core::store::WORKSPACES_PROJECTION), with the stored
/// `last_seq` shown beside the log's last number when the two disagree.
const WORKSPACES_WITH_COUNTER: &str =
    "SELECT 'workspaces/' || w.id, w.body || ' last_seq=' || log.seq
       || CASE WHEN w.last_seq = log.seq THEN '' ELSE ' (counter ' || w.last_seq || ')' END
     FROM workspaces AS w,
          LATERAL (SELECT coalesce(max(seq), 0) AS seq FROM events WHERE workspace_id = w.id) AS log
     ORDER BY w.id";

fn dep_kind(kind: DepKind) -> &'static str {
    match kind {
        DepKind::Blocks => "blocks",
        DepKind::RelatesTo => "relates_to",
        DepKind::DiscoveredFrom => "discovered_from",
    }
}
