//! Writes held back by a write transaction and sent together: task and run rows, and events.
//!
//! A claim or a completion writes a run, a task and an event; sent one by one, each is a
//! round trip, and round trips (not the rows) are most of what PostgreSQL spends on a task.
//! [`Pending`] holds them until a statement that could read them (see `PgTx`) or the commit,
//! and [`Pending::flush`] writes them all in one statement: an `UNNEST` upsert per table in
//! data-modifying `WITH` clauses, and the events numbered under the workspace row's lock.

use crate::Conn;
use baton_core::error::{Error, Result};
use baton_core::store::TaskColumns;
use baton_core::time::Millis;
use std::collections::HashSet;

/// A task row to upsert: the derived columns and the JSON body.
pub(crate) struct TaskRow {
    pub(crate) ws: String,
    pub(crate) id: String,
    pub(crate) columns: TaskColumns,
    pub(crate) body: String,
}

/// A run row to upsert.
pub(crate) struct RunRow {
    pub(crate) ws: String,
    pub(crate) id: String,
    pub(crate) task_id: String,
    pub(crate) body: String,
}

/// An event appended in this transaction, numbered when it is flushed.
pub(crate) struct EventRow {
    pub(crate) ws: String,
    pub(crate) kind: String,
    pub(crate) at: Millis,
    pub(crate) actor: String,
    pub(crate) task_id: Option<String>,
    pub(crate) data: String,
    pub(crate) request_id: Option<String>,
}

/// Where a claim's statement found the first ready task needing no capabilities from its
/// workspace's claim floor on, and the workspace's count of tasks made ready it read then.
/// The transaction raises the floor there as it commits, if that count has not moved
/// (schema version 5: no task was made ready since that statement's snapshot).
pub(crate) struct Observed {
    pub(crate) ws: String,
    pub(crate) neg_priority: i64,
    pub(crate) due_key: i64,
    pub(crate) id: String,
    pub(crate) ready_gen: i64,
}

/// How much of each buffer a job found when it started, to drop just its own writes when
/// its savepoint is rolled back.
#[derive(Clone, Copy)]
pub(crate) struct Lens {
    tasks: usize,
    runs: usize,
    events: usize,
    observations: usize,
}

/// The writes not yet sent, in the order they were made.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) tasks: Vec<TaskRow>,
    pub(crate) runs: Vec<RunRow>,
    pub(crate) events: Vec<EventRow>,
    /// The newest observation of each workspace's floor, for the commit.
    observed: Vec<Observed>,
    /// Observations made so far, to tell whether an undone job made one.
    observations: usize,
}

impl Pending {
    /// Whether row writes are waiting (events wait for the commit in any case).
    pub(crate) fn has_rows(&self) -> bool {
        !self.tasks.is_empty() || !self.runs.is_empty()
    }

    /// Whether a held-back row is task `id`, one of its children, or one of its runs: what a
    /// read of the task with its run and children would miss.
    pub(crate) fn touches_task(&self, ws: &str, id: &str) -> bool {
        self.tasks
            .iter()
            .any(|t| t.ws == ws && (t.id == id || t.columns.parent_id.as_deref() == Some(id)))
            || self.runs.iter().any(|r| r.ws == ws && r.task_id == id)
    }

    /// The tasks of workspace `ws` written and not sent yet, unless one of them is
    /// `ready` or a child that ended, which may free its parent (`None`): a claim's query
    /// may then run without sending them first, passing over these tasks (which in the
    /// database may still look claimable), as no task it should see is among them or
    /// waits on them.
    pub(crate) fn unsent_unclaimable(&self, ws: &str) -> Option<Vec<String>> {
        let mine = self.tasks.iter().filter(|t| t.ws == ws);
        let ended = |status: &str| matches!(status, "done" | "failed" | "canceled");
        if mine.clone().any(|t| {
            let c = &t.columns;
            c.status == "ready" || (c.parent_id.is_some() && ended(c.status))
        }) {
            return None;
        }
        Some(mine.map(|t| t.id.clone()).collect())
    }

    /// Records where the claim floor of `seen.ws` may rise to, in place of an earlier
    /// observation (a later snapshot knows more).
    pub(crate) fn observe(&mut self, seen: Observed) {
        self.observed.retain(|o| o.ws != seen.ws);
        self.observed.push(seen);
        self.observations += 1;
    }

    pub(crate) fn lens(&self) -> Lens {
        Lens {
            tasks: self.tasks.len(),
            runs: self.runs.len(),
            events: self.events.len(),
            observations: self.observations,
        }
    }

    /// Forgets what was added after `lens` was taken. An observation of the floor made
    /// since goes with every other: its statement saw the undone job's writes (a task it
    /// took out of `ready` may be ready again), so the floor must not rise on it.
    pub(crate) fn truncate(&mut self, lens: Lens) {
        self.tasks.truncate(lens.tasks);
        self.runs.truncate(lens.runs);
        self.events.truncate(lens.events);
        if self.observations != lens.observations {
            self.observed.clear();
        }
    }

    /// Sends the held-back rows, and the events too when `events` (the commit is next: the
    /// workspace rows the events lock are held until then). One statement for the rows and
    /// the events of the first workspace; one more per further workspace.
    pub(crate) fn flush(&mut self, conn: &mut Conn, events: bool) -> Result<()> {
        let tasks = last_write_wins(std::mem::take(&mut self.tasks), |t| (&t.ws, &t.id));
        let runs = last_write_wins(std::mem::take(&mut self.runs), |r| (&r.ws, &r.id));
        let mut pending = if events {
            std::mem::take(&mut self.events)
        } else {
            Vec::new()
        };
        if tasks.is_empty() && runs.is_empty() && pending.is_empty() {
            return Ok(());
        }
        pending.sort_by(|a, b| a.ws.cmp(&b.ws)); // stable: append order within a workspace
        let observed = if events {
            std::mem::take(&mut self.observed)
        } else {
            Vec::new()
        };
        let seen = |group: Option<&[EventRow]>| {
            group.and_then(|g| observed.iter().find(|o| o.ws == g[0].ws))
        };
        let mut groups = pending.chunk_by(|a, b| a.ws == b.ws);
        let first = groups.next();
        send(conn, &tasks, &runs, first, seen(first))?;
        for group in groups {
            send(conn, &[], &[], Some(group), seen(Some(group)))?;
        }
        Ok(())
    }
}

/// The rows with only the last write of each key kept (an upsert may not touch a row twice
/// in one statement), in key order (replicas lock rows in the same order).
fn last_write_wins<T>(rows: Vec<T>, key: impl Fn(&T) -> (&String, &String)) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut kept: Vec<T> = Vec::with_capacity(rows.len());
    for row in rows.into_iter().rev() {
        let (ws, id) = key(&row);
        if seen.insert((ws.clone(), id.clone())) {
            kept.push(row);
        }
    }
    kept.sort_by(|a, b| key(a).cmp(&key(b)));
    kept
}

/// One bound array parameter.
enum Col {
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    One(String),
    OneInt(i64),
}

/// Writes `tasks`, `runs` and one workspace's `events` in one statement, raising the
/// workspace's claim floor to what a claim `observed` if it may.
fn send(
    conn: &mut Conn,
    tasks: &[TaskRow],
    runs: &[RunRow],
    events: Option<&[EventRow]>,
    observed: Option<&Observed>,
) -> Result<()> {
    let mut ctes = Vec::new();
    let mut cols: Vec<Col> = Vec::new();
    // `$n` for the next parameter, whose value is pushed right after.
    let param = |cols: &mut Vec<Col>, col: Col, ty: &str| {
        cols.push(col);
        format!("${}::{ty}", cols.len())
    };
    if !runs.is_empty() {
        let text =
            |f: fn(&RunRow) -> &String| Col::Text(runs.iter().map(|r| f(r).clone()).collect());
        let args = [
            param(&mut cols, text(|r| &r.ws), "text[]"),
            param(&mut cols, text(|r| &r.id), "text[]"),
            param(&mut cols, text(|r| &r.task_id), "text[]"),
            param(&mut cols, text(|r| &r.body), "text[]"),
        ];
        ctes.push(format!(
            "r AS (INSERT INTO runs (workspace_id, id, task_id, body)
                   SELECT * FROM UNNEST({})
                   ON CONFLICT (workspace_id, task_id, id) DO UPDATE SET body = excluded.body
                   RETURNING 1)",
            args.join(", ")
        ));
    }
    if !tasks.is_empty() {
        let text =
            |f: fn(&TaskRow) -> &String| Col::Text(tasks.iter().map(|t| f(t).clone()).collect());
        let args = [
            param(&mut cols, text(|t| &t.ws), "text[]"),
            param(&mut cols, text(|t| &t.id), "text[]"),
            param(&mut cols, text(|t| &t.columns.project_id), "text[]"),
            param(
                &mut cols,
                Col::OptText(tasks.iter().map(|t| t.columns.parent_id.clone()).collect()),
                "text[]",
            ),
            param(
                &mut cols,
                Col::Text(tasks.iter().map(|t| t.columns.status.to_string()).collect()),
                "text[]",
            ),
            param(
                &mut cols,
                Col::Int(tasks.iter().map(|t| t.columns.neg_priority).collect()),
                "bigint[]",
            ),
            param(
                &mut cols,
                Col::Int(tasks.iter().map(|t| t.columns.due_key).collect()),
                "bigint[]",
            ),
            param(
                &mut cols,
                Col::OptInt(tasks.iter().map(|t| t.columns.not_before).collect()),
                "bigint[]",
            ),
            param(
                &mut cols,
                Col::OptInt(tasks.iter().map(|t| t.columns.lease_expires_at).collect()),
                "bigint[]",
            ),
            param(
                &mut cols,
                Col::OptText(tasks.iter().map(|t| t.columns.idem_key.clone()).collect()),
                "text[]",
            ),
            param(&mut cols, text(|t| &t.columns.labels), "text[]"),
            param(&mut cols, text(|t| &t.columns.caps), "text[]"),
            param(
                &mut cols,
                Col::OptText(tasks.iter().map(|t| t.columns.conc_key.clone()).collect()),
                "text[]",
            ),
            param(
                &mut cols,
                Col::OptInt(tasks.iter().map(|t| t.columns.conc_limit).collect()),
                "bigint[]",
            ),
            param(&mut cols, text(|t| &t.body), "text[]"),
        ];
        ctes.push(format!(
            "t AS (INSERT INTO tasks (workspace_id, id, project_id, parent_id, status, neg_priority,
                       due_key, not_before, lease_expires_at, idem_key, labels, caps, conc_key,
                       conc_limit, body)
                   SELECT * FROM UNNEST({})
                   ON CONFLICT (workspace_id, id) DO UPDATE SET project_id = excluded.project_id,
                       parent_id = excluded.parent_id, status = excluded.status,
                       neg_priority = excluded.neg_priority, due_key = excluded.due_key,
                       not_before = excluded.not_before, lease_expires_at = excluded.lease_expires_at,
                       idem_key = excluded.idem_key, labels = excluded.labels, caps = excluded.caps,
                       conc_key = excluded.conc_key, conc_limit = excluded.conc_limit,
                       body = excluded.body
                   RETURNING 1)",
            args.join(", ")
        ));
    }
    let main = match events {
        Some(group) => {
            // Take the numbers (locking the workspace row to the commit) and insert the
            // events under them, in append order.
            let ws = param(&mut cols, Col::One(group[0].ws.clone()), "text");
            let n = param(&mut cols, Col::OneInt(group.len() as i64), "bigint");
            let args = [
                param(
                    &mut cols,
                    Col::Text(group.iter().map(|e| e.kind.clone()).collect()),
                    "text[]",
                ),
                param(
                    &mut cols,
                    Col::Int(group.iter().map(|e| e.at).collect()),
                    "bigint[]",
                ),
                param(
                    &mut cols,
                    Col::Text(group.iter().map(|e| e.actor.clone()).collect()),
                    "text[]",
                ),
                param(
                    &mut cols,
                    Col::OptText(group.iter().map(|e| e.task_id.clone()).collect()),
                    "text[]",
                ),
                param(
                    &mut cols,
                    Col::Text(group.iter().map(|e| e.data.clone()).collect()),
                    "text[]",
                ),
                param(
                    &mut cols,
                    Col::OptText(group.iter().map(|e| e.request_id.clone()).collect()),
                    "text[]",
                ),
            ];
            // The rows first: the workspace row stays locked from its update to the commit,
            // so nothing else should happen while it is held. A condition on the rows'
            // counts makes their upserts run before the update takes the row.
            let written: Vec<&str> = ["r", "t"]
                .into_iter()
                .filter(|cte| ctes.iter().any(|c| c.starts_with(cte)))
                .collect();
            let after_rows = written
                .iter()
                .map(|cte| format!(" AND (SELECT count(*) FROM {cte}) >= 0"))
                .collect::<String>();
            // Under the row's lock, `ready_gen` as the claim read it means no task was made
            // ready since: the floor may rise to the first ready task the claim saw (the
            // triggers of schema version 5 lower it again at the commit, after this, if
            // this transaction made one ready). Never below where it is: both are lower
            // bounds.
            let raise = observed
                .map(|o| {
                    let gen = param(&mut cols, Col::OneInt(o.ready_gen), "bigint");
                    let neg = param(&mut cols, Col::OneInt(o.neg_priority), "bigint");
                    let due = param(&mut cols, Col::OneInt(o.due_key), "bigint");
                    let id = param(&mut cols, Col::One(o.id.clone()), "text");
                    let rises = format!(
                        "w.ready_gen = {gen} AND ({neg}, {due}, {id}) > (w.floor_neg, w.floor_due, w.floor_id)"
                    );
                    format!(
                        ", floor_neg = CASE WHEN {rises} THEN {neg} ELSE w.floor_neg END,
                         floor_due = CASE WHEN {rises} THEN {due} ELSE w.floor_due END,
                         floor_id = CASE WHEN {rises} THEN {id} ELSE w.floor_id END"
                    )
                })
                .unwrap_or_default();
            ctes.push(format!(
                "numbered AS (UPDATE workspaces AS w SET last_seq = w.last_seq + {n}{raise}
                              WHERE w.id = {ws}{after_rows} RETURNING w.id, w.last_seq)"
            ));
            format!(
                "INSERT INTO events (workspace_id, seq, type, at, actor, task_id, data, request_id)
                 SELECT numbered.id, numbered.last_seq - {n} + e.n, e.type, e.at, e.actor, e.task_id,
                        e.data, e.request_id
                 FROM numbered,
                      UNNEST({}) WITH ORDINALITY AS e(type, at, actor, task_id, data, request_id, n)",
                args.join(", ")
            )
        }
        None => "SELECT 1".to_string(),
    };
    let sql = format!("WITH {} {main}", ctes.join(", "));
    let mut q = sqlx::query(&sql);
    for col in cols {
        q = match col {
            Col::Text(v) => q.bind(v),
            Col::OptText(v) => q.bind(v),
            Col::Int(v) => q.bind(v),
            Col::OptInt(v) => q.bind(v),
            Col::One(v) => q.bind(v),
            Col::OneInt(v) => q.bind(v),
        };
    }
    let done = conn.trip(async |pg| q.execute(pg).await)?;
    if let Some(group) = events {
        if done.rows_affected() != group.len() as u64 {
            return Err(Error::not_found("workspace", &group[0].ws));
        }
    }
    Ok(())
}
