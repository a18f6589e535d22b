//! [`Tx`] over one rusqlite connection: cached prepared statements, bodies as JSON.

use crate::columns;
use baton_core::model::*;
use baton_core::state::Status;
use baton_core::store::{caps_within, KillSwitch, NewEvent, TaskColumns, TaskFilter, Tx};
use baton_core::time::Millis;
use baton_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;

/// A task's place in claim order as stored: `neg_priority`, `due_key`, `id`.
type ClaimKey = (i64, i64, String);

/// A transaction on a connection; the caller begins and ends it.
pub(crate) struct SqliteTx<'c> {
    pub(crate) conn: &'c Connection,
    /// Events appended so far that wake waiters ([`NewEvent::wakes_waiters`]): a batch
    /// that appended any wakes long-poll claims and streams.
    pub(crate) events_appended: usize,
    /// Event numbers handed out in the transaction (the events themselves are the record).
    pub(crate) numbering: Numbering,
    /// The stored columns of the tasks this job has read or written, by id (with the
    /// workspace), so that `put_task` sets only the columns that changed (see `columns.rs`);
    /// `None` in read transactions. Right because `put_task` is the only write of `tasks`
    /// rows: anything else that changed them would have to forget them here.
    seen: Option<HashMap<String, (String, TaskColumns)>>,
}

impl<'c> SqliteTx<'c> {
    /// A write transaction's view for one job; `numbering` carries on from the jobs before.
    pub(crate) fn new(conn: &'c Connection, numbering: Numbering) -> Self {
        SqliteTx {
            conn,
            events_appended: 0,
            numbering,
            seen: Some(HashMap::new()),
        }
    }

    /// A read transaction's view.
    pub(crate) fn read(conn: &'c Connection) -> Self {
        SqliteTx {
            seen: None,
            ..SqliteTx::new(conn, Numbering::default())
        }
    }
}

/// Event numbers handed out in a write transaction. A workspace's last number is not stored
/// anywhere but in its events: the first event a transaction appends in a workspace reads
/// the highest stored `seq` (one seek at the end of the events index), the rest count on
/// in memory. Writing a `last_seq` into the workspace row instead cost a page per commit
/// (one of the ten to twenty a commit writes) and a statement. Events are never deleted, so
/// the log's last number is the counter. Numbers stay gap-free: the single writer is the only
/// one handing them out (another process's writer waits for SQLite's write lock and then
/// reads what this one committed), and a job rolled back to its savepoint gives its numbers
/// back (the caller restores a copy taken before it).
#[derive(Debug, Default, Clone)]
pub(crate) struct Numbering(Vec<(String, u64)>);

impl Numbering {
    /// The next event number of workspace `ws`.
    pub(crate) fn next(&mut self, conn: &Connection, ws: &str) -> Result<u64> {
        if let Some((_, last)) = self.0.iter_mut().find(|(w, _)| w == ws) {
            *last += 1;
            return Ok(*last);
        }
        let last = stored_last_seq(conn, ws)?.ok_or_else(|| Error::not_found("workspace", ws))?;
        self.0.push((ws.to_string(), last + 1));
        Ok(last + 1)
    }

    /// The last number handed out in workspace `ws` in this transaction, if any.
    fn last(&self, ws: &str) -> Option<u64> {
        self.0.iter().find(|(w, _)| w == ws).map(|(_, last)| *last)
    }
}

/// The last event number stored for workspace `ws` (0 before its first event); `None` if
/// there is no such workspace.
fn stored_last_seq(conn: &Connection, ws: &str) -> Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT (SELECT coalesce(max(seq), 0) FROM events WHERE workspace_id = +?1)
         FROM workspaces WHERE id = +?1",
    )
    .and_then(|mut stmt| stmt.query_row([ws], |r| r.get::<_, i64>(0)).optional())
    .map(|seq| seq.map(|seq| seq as u64))
    .map_err(db_err)
}

pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    Error::storage(e)
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::storage(format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    baton_core::store::from_stored_json(text).map_err(|e| Error::storage(format!("decode: {e}")))
}

impl SqliteTx<'_> {
    fn one<T: DeserializeOwned>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Option<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let body: Option<String> = stmt
            .query_row(args, |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        body.map(|b| from_json(&b)).transpose()
    }

    fn many<T: DeserializeOwned>(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let rows = stmt
            .query_map(args, |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json(&row.map_err(db_err)?)?);
        }
        Ok(out)
    }

    /// Remembers the stored columns of tasks just read, for [`Tx::put_task`].
    fn saw(&mut self, tasks: &[Task]) {
        for task in tasks {
            self.remember(task, || TaskColumns::of(task));
        }
    }

    fn remember(&mut self, task: &Task, columns: impl FnOnce() -> TaskColumns) {
        if let Some(seen) = &mut self.seen {
            let entry = (task.workspace_id.clone(), columns());
            seen.insert(task.id.clone(), entry);
        }
    }

    /// The columns of task `id` of workspace `ws` as this job last read or wrote them.
    fn stored_columns(&self, ws: &str, id: &str) -> Option<&TaskColumns> {
        match self.seen.as_ref()?.get(id) {
            Some((w, columns)) if w == ws => Some(columns),
            _ => None,
        }
    }

    /// The distinct capability sets among the workspace's ready tasks, one index seek each
    /// (a skip scan over `tasks_claim`, which leads with the set).
    fn ready_capability_sets(&self, ws: &str) -> Result<Vec<String>> {
        let mut sets = Vec::new();
        let mut first = self
            .conn
            .prepare_cached(
                "SELECT caps FROM tasks WHERE workspace_id = +?1 AND status = 'ready'
                 ORDER BY workspace_id, caps LIMIT 1",
            )
            .map_err(db_err)?;
        let mut next = first.query_row([ws], |r| r.get::<_, String>(0)).optional();
        let mut after = self
            .conn
            .prepare_cached(
                "SELECT caps FROM tasks WHERE workspace_id = +?1 AND status = 'ready' AND caps > ?2
                 ORDER BY workspace_id, caps LIMIT 1",
            )
            .map_err(db_err)?;
        while let Some(set) = next.map_err(db_err)? {
            next = after
                .query_row(params![ws, set], |r| r.get::<_, String>(0))
                .optional();
            sets.push(set);
        }
        Ok(sets)
    }

    /// Claim candidates among the ready tasks that need exactly the capability set `caps`,
    /// in claim order: each its claim key (`neg_priority`, `due_key`, `id`) and its body, not
    /// yet decoded (a merge of several sets decodes only the ones it keeps).
    fn candidates_needing(
        &self,
        ws: &str,
        caps: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(ClaimKey, String)>> {
        // The limit is written into the SQL: a bound LIMIT next to ORDER BY makes SQLite
        // re-prepare the statement on every execution. Limits take few distinct values.
        let sql = format!(
            "SELECT t.neg_priority, t.due_key, t.id, t.body FROM tasks AS t
             WHERE t.workspace_id = +?1 AND t.caps = +?2
               AND t.status = 'ready' AND (t.not_before IS NULL OR t.not_before <= +?3)
               AND t.project_id NOT IN ({CLOSED_PROJECTS})
               AND NOT EXISTS (SELECT 1 FROM workspaces WHERE id = +?1 AND killed = 1)
               AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.workspace_id = +?1 AND c.parent_id = t.id
                               AND c.status NOT IN ('done', 'failed', 'canceled'))
               AND (t.conc_key IS NULL OR ({KEY_LEASES}) < t.conc_limit)
             ORDER BY t.neg_priority, t.due_key, t.id LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = stmt
            .query_map(params![ws, caps, now], |r| {
                Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?))
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)
    }

    fn exec(&self, sql: &str, args: impl rusqlite::Params) -> Result<usize> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        stmt.execute(args).map_err(db_err)
    }
}

fn dep_kind(kind: DepKind) -> &'static str {
    match kind {
        DepKind::Blocks => "blocks",
        DepKind::RelatesTo => "relates_to",
        DepKind::DiscoveredFrom => "discovered_from",
    }
}

/// An optional filter value as a SQL parameter.
fn arg<T: rusqlite::ToSql>(value: &Option<T>) -> Option<&dyn rusqlite::ToSql> {
    value.as_ref().map(|v| v as &dyn rusqlite::ToSql)
}

const OPEN: &str = "status NOT IN ('done', 'failed', 'canceled')";

/// The partial index `tasks_conc`'s condition, restated as it is written there so the
/// planner uses the index: leased tasks with a concurrency key.
const LEASED_WITH_KEY: &str =
    "conc_key IS NOT NULL AND status IN ('claimed', 'in_progress', 'waiting')";

/// How many leased tasks share candidate `t`'s concurrency key (`?1` the workspace).
const KEY_LEASES: &str = "SELECT count(*) FROM tasks AS k WHERE k.workspace_id = +?1 \
     AND k.conc_key = t.conc_key AND k.conc_key IS NOT NULL \
     AND k.status IN ('claimed', 'in_progress', 'waiting')";

/// The projects whose tasks no claim may take now (`?1` the workspace): killed ones, and
/// those with as many tasks leased as their `max_concurrency` (schema version 10).
const CLOSED_PROJECTS: &str = "SELECT p.id FROM projects AS p WHERE p.workspace_id = +?1 \
     AND (p.killed = 1 OR (p.max_conc IS NOT NULL AND (SELECT count(*) FROM tasks AS l \
         WHERE l.workspace_id = +?1 AND l.project_id = p.id \
         AND l.status IN ('claimed', 'in_progress', 'waiting')) >= p.max_conc))";

/// [`Tx::unfinished_blocker`]: blockers not done, failed or canceled ones first; the
/// statuses come from the tasks' columns, so no blocker is decoded.
const UNFINISHED_BLOCKER: &str = "SELECT t.status FROM dependencies AS d
    JOIN tasks AS t ON t.workspace_id = d.workspace_id AND t.id = d.blocker_id
    WHERE d.workspace_id = +?1 AND d.blocked_id = +?2 AND d.kind = 'blocks' AND t.status <> 'done'
    ORDER BY t.status IN ('failed', 'canceled') DESC LIMIT 1";

impl Tx for SqliteTx<'_> {
    fn workspaces(&mut self) -> Result<Vec<Workspace>> {
        self.many("SELECT body FROM workspaces ORDER BY id", [])
    }

    fn workspace_by_name(&mut self, name: &str) -> Result<Option<Workspace>> {
        self.one("SELECT body FROM workspaces WHERE name = +?1", [name])
    }

    fn workspace(&mut self, id: &str) -> Result<Option<Workspace>> {
        self.one("SELECT body FROM workspaces WHERE id = +?1", [id])
    }

    fn put_workspace(&mut self, ws: &Workspace) -> Result<()> {
        self.exec(
            "INSERT INTO workspaces (id, name, killed, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, killed = excluded.killed,
                                            body = excluded.body",
            params![ws.id, ws.name, ws.killed, to_json(ws)?],
        )?;
        Ok(())
    }

    fn kill_switch(
        &mut self,
        ws: &str,
        project_id: &str,
        agent_id: &str,
    ) -> Result<Option<KillSwitch>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT 'workspace', name, 1 AS rank FROM workspaces WHERE id = +?1 AND killed = 1
                 UNION ALL
                 SELECT 'project', name, 2 FROM projects
                  WHERE workspace_id = +?1 AND id = +?2 AND killed = 1
                 UNION ALL
                 SELECT 'agent', name, 3 FROM agents
                  WHERE workspace_id = +?1 AND id = +?3 AND body ->> '$.status' = 'killed'
                 ORDER BY rank",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([ws, project_id, agent_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?;
        for row in rows {
            let (kind, name) = row.map_err(db_err)?;
            if let Some(switch) = KillSwitch::from_row(&kind, name) {
                return Ok(Some(switch));
            }
        }
        Ok(None)
    }

    fn project(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Project>> {
        match self.one(
            "SELECT body FROM projects WHERE workspace_id = +?1 AND id = +?2",
            [ws, id_or_name],
        )? {
            Some(p) => Ok(Some(p)),
            None => self.one(
                "SELECT body FROM projects WHERE workspace_id = +?1 AND name = +?2",
                [ws, id_or_name],
            ),
        }
    }

    fn put_project(&mut self, p: &Project) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO projects (workspace_id, id, name, killed, max_conc, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                p.workspace_id,
                p.id,
                p.name,
                p.killed,
                p.max_concurrency,
                to_json(p)?
            ],
        )?;
        Ok(())
    }

    fn projects(&mut self, ws: &str) -> Result<Vec<Project>> {
        self.many(
            "SELECT body FROM projects WHERE workspace_id = ?1 ORDER BY name",
            [ws],
        )
    }

    fn key_by_hash(&mut self, token_sha256: &str) -> Result<Option<ApiKey>> {
        self.one(
            "SELECT body FROM api_keys WHERE token_sha256 = ?1",
            [token_sha256],
        )
    }

    fn put_key(&mut self, k: &ApiKey) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO api_keys (workspace_id, id, token_sha256, body) VALUES (?1, ?2, ?3, ?4)",
            params![k.workspace_id, k.id, k.token_sha256, to_json(k)?],
        )?;
        Ok(())
    }

    fn agent(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Agent>> {
        // Names are what agents pass on every claim: look them up first.
        match self.one(
            "SELECT body FROM agents WHERE workspace_id = +?1 AND name = +?2",
            [ws, id_or_name],
        )? {
            Some(a) => Ok(Some(a)),
            None => self.one(
                "SELECT body FROM agents WHERE workspace_id = +?1 AND id = +?2",
                [ws, id_or_name],
            ),
        }
    }

    fn put_agent(&mut self, a: &Agent) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO agents (workspace_id, id, name, body) VALUES (?1, ?2, ?3, ?4)",
            params![a.workspace_id, a.id, a.name, to_json(a)?],
        )?;
        Ok(())
    }

    fn agents(&mut self, ws: &str) -> Result<Vec<Agent>> {
        self.many(
            "SELECT body FROM agents WHERE workspace_id = ?1 ORDER BY name",
            [ws],
        )
    }

    fn task(&mut self, ws: &str, id: &str) -> Result<Option<Task>> {
        let task: Option<Task> = self.one(
            "SELECT body FROM tasks WHERE workspace_id = +?1 AND id = +?2",
            [ws, id],
        )?;
        self.saw(task.as_slice());
        Ok(task)
    }

    fn task_by_key(&mut self, ws: &str, key: &str) -> Result<Option<Task>> {
        self.one(
            "SELECT body FROM tasks WHERE workspace_id = +?1 AND idem_key = +?2",
            [ws, key],
        )
    }

    fn put_task(&mut self, t: &Task, body: &str) -> Result<()> {
        let columns = TaskColumns::of(t);
        let updated = match self.stored_columns(&t.workspace_id, &t.id) {
            Some(before) => {
                let (sql, changed) = columns::update(&columns, before);
                let mut args: Vec<&dyn rusqlite::ToSql> = vec![&body, &t.workspace_id, &t.id];
                args.extend(changed);
                self.exec(&sql, args.as_slice())? == 1
            }
            None => false,
        };
        if !updated {
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&t.workspace_id, &t.id];
            args.extend(columns::values(&columns));
            args.push(&body);
            self.exec(
                // An upsert, not INSERT OR REPLACE: an update in place touches only the indexes
                // whose columns it sets, where a replace deletes and re-inserts every entry.
                "INSERT INTO tasks (workspace_id, id, project_id, parent_id, status, neg_priority, due_key,
                     not_before, lease_expires_at, idem_key, labels, caps, conc_key, conc_limit, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (workspace_id, id) DO UPDATE SET project_id = excluded.project_id,
                     parent_id = excluded.parent_id, status = excluded.status, neg_priority = excluded.neg_priority,
                     due_key = excluded.due_key, not_before = excluded.not_before,
                     lease_expires_at = excluded.lease_expires_at, idem_key = excluded.idem_key,
                     labels = excluded.labels, caps = excluded.caps, conc_key = excluded.conc_key,
                     conc_limit = excluded.conc_limit, body = excluded.body",
                args.as_slice(),
            )?;
        }
        self.remember(t, || columns);
        Ok(())
    }

    fn list_tasks(&mut self, ws: &str, f: &TaskFilter) -> Result<Vec<Task>> {
        // Only the filters given appear in the SQL, so the planner sees real equalities and
        // seeks an index (status → tasks_status, parent → tasks_parent) instead of scanning.
        let mut sql = String::from("SELECT body FROM tasks WHERE workspace_id = +?1");
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&ws];
        let status = f.status.map(|s| s.as_str());
        let label = f.label.clone();
        let filters = [
            ("status =", arg(&status)),
            ("parent_id =", arg(&f.parent_id)),
            ("instr(labels, ',' ||", arg(&label)),
            ("project_id =", arg(&f.project_id)),
            ("id >", arg(&f.after_id)),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                args.push(value);
                if clause.starts_with("instr") {
                    // An exact, case-sensitive label match, as on PostgreSQL.
                    sql.push_str(&format!(" AND {clause} ?{} || ',') > 0", args.len()));
                } else {
                    sql.push_str(&format!(" AND {clause} +?{}", args.len()));
                }
            }
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", f.limit));
        self.many(&sql, args.as_slice())
    }

    fn claim_candidates(
        &mut self,
        ws: &str,
        now: Millis,
        limit: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Result<Vec<Task>> {
        // The claim index leads with the capability set, so each set the agent can serve is
        // one seek, and the sets' pages are merged here: an agent without capabilities (the
        // common case) reads only the tasks that need none.
        let sets = match agent_capabilities {
            Some([]) => vec![String::new()],
            _ => {
                let mut sets = self.ready_capability_sets(ws)?;
                sets.retain(|set| caps_within(set, agent_capabilities));
                sets
            }
        };
        let mut rows = Vec::new();
        for set in &sets {
            rows.extend(self.candidates_needing(ws, set, now, limit)?);
        }
        if sets.len() > 1 {
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            rows.truncate(limit as usize);
        }
        let candidates = rows
            .iter()
            .map(|(_, body)| from_json(body))
            .collect::<Result<Vec<Task>>>()?;
        self.saw(&candidates);
        Ok(candidates)
    }

    fn expired_leases(&mut self, ws: &str, now: Millis, limit: u32) -> Result<Vec<Task>> {
        let due: Vec<Task> = self.many(
            &format!(
                "SELECT body FROM tasks WHERE workspace_id = +?1 AND lease_expires_at IS NOT NULL
                 AND lease_expires_at <= +?2 ORDER BY lease_expires_at LIMIT {limit}"
            ),
            params![ws, now],
        )?;
        self.saw(&due);
        Ok(due)
    }

    fn open_task_counts(&mut self, ws: &str) -> Result<Vec<(Status, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT status, count(*) FROM tasks WHERE workspace_id = +?1 AND {OPEN} \
                 GROUP BY status"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map([ws], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(db_err)?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row.map_err(db_err)?;
            counts.push((Status::parse(&status)?, n as u64));
        }
        counts.sort();
        Ok(counts)
    }

    fn agent_leases(&mut self, ws: &str, agent_id: &str, now: Millis) -> Result<u64> {
        // The live leases through `tasks_lease`, each body read for its holder: as many
        // rows as the workspace has leases, and only for agents with a limit.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM tasks WHERE workspace_id = +?1 AND lease_expires_at IS NOT NULL
                 AND lease_expires_at > +?3 AND json_extract(body, '$.lease.agent_id') = ?2",
            )
            .map_err(db_err)?;
        let n: i64 = stmt
            .query_row(params![ws, agent_id, now], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn project_leases(&mut self, ws: &str, project_id: &str) -> Result<u64> {
        // Through the status index: as many rows as the workspace has leased tasks, and
        // only for projects with a limit.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM tasks WHERE workspace_id = +?1 AND project_id = ?2
                 AND status IN ('claimed', 'in_progress', 'waiting')",
            )
            .map_err(db_err)?;
        let n: i64 = stmt
            .query_row(params![ws, project_id], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn try_hold(&mut self, _ws: &str, _name: &str) -> Result<bool> {
        // One writer: transactions already take turns.
        Ok(true)
    }

    fn leased_with_key(&mut self, ws: &str, key: &str) -> Result<Vec<Task>> {
        self.many(
            &format!(
                "SELECT body FROM tasks WHERE workspace_id = +?1 AND conc_key = +?2 AND {LEASED_WITH_KEY}"
            ),
            params![ws, key],
        )
    }

    fn ready_with_key_above(
        &mut self,
        ws: &str,
        key: &str,
        priority: i64,
        now: Millis,
    ) -> Result<Option<Task>> {
        let found: Vec<Task> = self.many(
            "SELECT body FROM tasks WHERE workspace_id = +?1 AND conc_key = +?2
               AND conc_key IS NOT NULL AND status = 'ready' AND neg_priority < +?3
               AND (not_before IS NULL OR not_before <= +?4)
               AND project_id NOT IN (SELECT id FROM projects WHERE workspace_id = +?1 AND killed = 1)
               AND NOT EXISTS (SELECT 1 FROM tasks AS c WHERE c.workspace_id = +?1
                               AND c.parent_id = tasks.id AND c.status NOT IN ('done', 'failed', 'canceled'))
             ORDER BY neg_priority, due_key, id LIMIT 1",
            params![ws, key, priority.saturating_neg(), now],
        )?;
        Ok(found.into_iter().next())
    }

    fn key_leases(&mut self, ws: &str, key: &str) -> Result<u64> {
        // The count sees this transaction's writes.
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM tasks WHERE workspace_id = +?1 AND conc_key = +?2 AND {LEASED_WITH_KEY}"
            ))
            .map_err(db_err)?;
        let n: i64 = stmt
            .query_row(params![ws, key], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn open_children(&mut self, ws: &str, id: &str) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM tasks WHERE workspace_id = +?1 AND parent_id = +?2 AND {OPEN}"
            ))
            .map_err(db_err)?;
        stmt.query_row([ws, id], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn run(&mut self, ws: &str, task_id: &str, id: &str) -> Result<Option<Run>> {
        self.one(
            "SELECT body FROM runs WHERE workspace_id = +?1 AND task_id = +?2 AND id = +?3",
            [ws, task_id, id],
        )
    }

    fn put_run(&mut self, r: &Run) -> Result<()> {
        self.exec(
            "INSERT INTO runs (workspace_id, task_id, id, body) VALUES (?1, ?3, ?2, ?4)
             ON CONFLICT (workspace_id, task_id, id) DO UPDATE SET body = excluded.body",
            params![r.workspace_id, r.id, r.task_id, to_json(r)?],
        )?;
        Ok(())
    }

    fn runs_of(&mut self, ws: &str, task_id: &str, limit: u32) -> Result<Vec<Run>> {
        self.many(
            "SELECT body FROM runs WHERE workspace_id = +?1 AND task_id = +?2 ORDER BY id DESC LIMIT ?3",
            params![ws, task_id, limit],
        )
    }

    fn deps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>> {
        self.many("SELECT body FROM dependencies WHERE workspace_id = +?1 AND blocked_id = +?2 ORDER BY blocker_id, kind", [ws, task_id])
    }

    fn dependents_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>> {
        self.many("SELECT body FROM dependencies WHERE workspace_id = +?1 AND blocker_id = +?2 ORDER BY blocked_id, kind", [ws, task_id])
    }

    fn unfinished_blocker(&mut self, ws: &str, task_id: &str) -> Result<Option<Status>> {
        let mut stmt = self
            .conn
            .prepare_cached(UNFINISHED_BLOCKER)
            .map_err(db_err)?;
        let status: Option<String> = stmt
            .query_row([ws, task_id], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        status.map(|s| Status::parse(&s)).transpose()
    }

    fn put_dep(&mut self, d: &Dependency) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO dependencies (workspace_id, blocked_id, blocker_id, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.workspace_id, d.blocked_id, d.blocker_id, dep_kind(d.kind), to_json(d)?],
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
        let n = self.exec(
            "DELETE FROM dependencies WHERE workspace_id = ?1 AND blocked_id = ?2 AND blocker_id = ?3 AND kind = ?4",
            params![ws, blocked, blocker, dep_kind(kind)],
        )?;
        Ok(n > 0)
    }

    fn context(&mut self, ws: &str, id: &str) -> Result<Option<ContextEntry>> {
        self.one(
            "SELECT body FROM context WHERE workspace_id = +?1 AND id = +?2",
            [ws, id],
        )
    }

    fn put_context(&mut self, c: &ContextEntry) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO context (workspace_id, id, task_id, body) VALUES (?1, ?2, ?3, ?4)",
            params![c.workspace_id, c.id, c.task_id, to_json(c)?],
        )?;
        Ok(())
    }

    fn context_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<ContextEntry>> {
        self.many(
            "SELECT body FROM context WHERE workspace_id = +?1 AND task_id = +?2 ORDER BY id",
            [ws, task_id],
        )
    }

    fn artifact(&mut self, ws: &str, id: &str) -> Result<Option<Artifact>> {
        self.one(
            "SELECT body FROM artifacts WHERE workspace_id = +?1 AND id = +?2",
            [ws, id],
        )
    }

    fn put_artifact(&mut self, a: &Artifact) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO artifacts (workspace_id, id, task_id, body) VALUES (?1, ?2, ?3, ?4)",
            params![a.workspace_id, a.id, a.task_id, to_json(a)?],
        )?;
        Ok(())
    }

    fn artifacts_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Artifact>> {
        self.many(
            "SELECT body FROM artifacts WHERE workspace_id = +?1 AND task_id = +?2 ORDER BY id",
            [ws, task_id],
        )
    }

    fn put_step(&mut self, s: &Step) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO steps (workspace_id, id, task_id, position, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.workspace_id, s.id, s.task_id, s.position, to_json(s)?],
        )?;
        Ok(())
    }

    fn steps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Step>> {
        self.many(
            "SELECT body FROM steps WHERE workspace_id = +?1 AND task_id = +?2 ORDER BY position",
            [ws, task_id],
        )
    }

    fn append_event(&mut self, e: NewEvent<'_>) -> Result<()> {
        if self.seen.is_none() {
            return Err(Error::storage(
                "an event can only be appended in a write transaction",
            ));
        }
        let seq = self.numbering.next(self.conn, e.workspace_id)? as i64;
        self.exec(
            "INSERT INTO events (workspace_id, seq, type, at, actor, task_id, data, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.workspace_id,
                seq,
                e.kind,
                e.at,
                e.actor,
                e.task_id,
                e.data,
                e.request_id
            ],
        )?;
        if e.wakes_waiters() {
            self.events_appended += 1;
        }
        Ok(())
    }

    fn task_event_at(
        &mut self,
        ws: &str,
        task_id: &str,
        seq: u64,
    ) -> Result<Option<(u64, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, data FROM events WHERE workspace_id = +?1 AND seq <= +?3 AND task_id = +?2
                 ORDER BY seq DESC LIMIT 1",
            )
            .map_err(db_err)?;
        stmt.query_row(params![ws, task_id, seq as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })
        .optional()
        .map_err(db_err)
    }

    fn events(&mut self, ws: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, type, at, actor, task_id, data, request_id FROM events WHERE workspace_id = +?1 AND seq > +?2
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![ws, after as i64, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, kind, at, actor, task_id, data, request_id) = row.map_err(db_err)?;
            out.push(Event {
                seq: seq as u64,
                workspace_id: ws.to_string(),
                kind,
                at,
                actor,
                task_id,
                data: from_json(&data)?,
                request_id,
            });
        }
        Ok(out)
    }

    fn last_seq(&mut self, ws: &str) -> Result<u64> {
        match self.numbering.last(ws) {
            Some(last) => Ok(last),
            None => Ok(stored_last_seq(self.conn, ws)?.unwrap_or(0)),
        }
    }

    fn idempotency(&mut self, ws: &str, key: &str) -> Result<Option<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT request_sha256, response FROM idempotency WHERE workspace_id = +?1 AND key = +?2")
            .map_err(db_err)?;
        stmt.query_row([ws, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)
    }

    fn put_idempotency(
        &mut self,
        ws: &str,
        key: &str,
        sha: &str,
        response: &str,
        at: Millis,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO idempotency (workspace_id, key, request_sha256, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ws, key, sha, response, at],
        )?;
        Ok(())
    }

    fn projection_rows(&mut self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for sql in baton_core::store::PROJECTION_QUERIES {
            let mut stmt = self.conn.prepare(sql).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db_err)?;
            for row in rows {
                out.push(row.map_err(db_err)?);
            }
        }
        Ok(out)
    }
}
