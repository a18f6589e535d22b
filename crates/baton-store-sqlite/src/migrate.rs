//! Forward-only, versioned migrations, tracked in `PRAGMA user_version`. Each runs in an
//! immediate transaction that re-checks the version, so processes starting at once on a new
//! file apply each migration exactly once.

use crate::tx::db_err;
use baton_core::{Code, Error, Result};
use rusqlite::{Connection, OptionalExtension};

/// The migrations in order; index + 1 is the version each leaves the schema at.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2_keys.sql"),
    include_str!("schema_3_seq.sql"),
    include_str!("schema_4_runs.sql"),
    include_str!("schema_5_caps.sql"),
    include_str!("schema_6_kill.sql"),
    include_str!("schema_7_artifacts.sql"),
    include_str!("schema_8_concurrency.sql"),
    include_str!("schema_9_requests.sql"),
    include_str!("schema_10_project_limits.sql"),
];

/// Brings the schema up to the newest version.
pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
        let result = (|| {
            let current: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(db_err)?;
            if current > MIGRATIONS.len() as i64 {
                return Err(Error::new(
                    Code::Storage,
                    format!(
                        "the store is at schema version {current}, newer than this baton knows"
                    ),
                    "upgrade baton",
                ));
            }
            if current < version {
                if version == 3 {
                    counters_match_logs(conn)?;
                }
                conn.execute_batch(sql).map_err(db_err)?;
                conn.execute_batch(&format!("PRAGMA user_version = {version}"))
                    .map_err(db_err)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT").map_err(db_err)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Before version 3 drops the workspace counters: each must equal its log's last number,
/// or numbering from the log would hand out again numbers readers may have seen.
fn counters_match_logs(conn: &Connection) -> Result<()> {
    let differing: Option<String> = conn
        .query_row(
            "SELECT id FROM workspaces AS w
             WHERE last_seq <> (SELECT coalesce(max(seq), 0) FROM events WHERE workspace_id = w.id)
             LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    match differing {
        None => Ok(()),
        Some(ws) => Err(Error::new(
            Code::Storage,
            format!("workspace {ws}: its event counter and its event log disagree; not migrating"),
            "run `baton replay --verify` with the previous baton to find the damage",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store at version 2 whose workspace `ws_1` has counted to `last_seq` and logged the
    /// events numbered 1 to `logged`.
    fn at_version_2(last_seq: i64, logged: i64) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("older version");
        }
        conn.execute_batch(&format!(
            "PRAGMA user_version = 2;
             INSERT INTO workspaces (id, name, last_seq, body) VALUES ('ws_1', 'default', {last_seq}, '{{}}');"
        ))
        .expect("workspace at version 2");
        for seq in 1..=logged {
            conn.execute(
                "INSERT INTO events (workspace_id, seq, type, at, actor, data)
                 VALUES ('ws_1', ?1, 'e', 0, 'x', '{}')",
                [seq],
            )
            .expect("event at version 2");
        }
        conn
    }

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version")
    }

    /// A store written at version 2 keeps its event numbering at version 3: the next event
    /// follows the last one stored, with the workspace's counter gone.
    #[test]
    fn version_3_keeps_numbering() {
        let conn = at_version_2(2, 2);
        migrate(&conn).expect("migrate");
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        let mut numbering = crate::tx::Numbering::default();
        assert_eq!(numbering.next(&conn, "ws_1").expect("next"), 3);
        assert!(numbering.next(&conn, "ws_unknown").is_err());
        // Migrating again changes nothing.
        migrate(&conn).expect("migrate again");
    }

    /// Runs written at version 3 (a rowid table with two indexes) are all there at version
    /// 4, found by task and id, newest first per task, and a run's update replaces it.
    #[test]
    fn version_4_keeps_runs_under_their_tasks() {
        use baton_core::store::Tx;
        let conn = at_version_2(0, 0);
        conn.execute_batch(MIGRATIONS[2]).expect("version 3");
        conn.execute_batch("PRAGMA user_version = 3").expect("at 3");
        let run = |task: &str, id: &str| {
            serde_json::json!({"id": id, "workspace_id": "ws_1", "task_id": task,
                "agent_id": "agt_1", "attempt": 1, "epoch": 1, "status": "active",
                "seen_version": 1, "started_at": "2026-11-25T00:00:00Z",
                "heartbeat_at": "2026-11-25T00:00:00Z"})
        };
        for (task, id) in [("tsk_a", "run_1"), ("tsk_b", "run_2"), ("tsk_a", "run_3")] {
            conn.execute(
                "INSERT INTO runs (workspace_id, id, task_id, body) VALUES ('ws_1', ?1, ?2, ?3)",
                [id, task, &run(task, id).to_string()],
            )
            .expect("run at version 3");
        }
        migrate(&conn).expect("migrate");
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        let mut tx = crate::tx::SqliteTx::new(&conn, crate::tx::Numbering::default());
        let of_a: Vec<String> = tx
            .runs_of("ws_1", "tsk_a", 10)
            .expect("runs of a")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(of_a, ["run_3", "run_1"]);
        let mut second = tx
            .run("ws_1", "tsk_b", "run_2")
            .expect("read")
            .expect("kept");
        assert!(tx.run("ws_1", "tsk_a", "run_2").expect("read").is_none());
        second.attempt = 2;
        tx.put_run(&second).expect("update");
        let again = tx
            .run("ws_1", "tsk_b", "run_2")
            .expect("read")
            .expect("kept");
        assert_eq!(again.attempt, 2);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 3, "an update replaces the run");
    }

    /// Tasks written at version 4 get their capability set at version 5, in the form a write
    /// stores (sorted by bytes, between commas), and claims find them by it, whatever their
    /// input holds.
    #[test]
    fn version_5_files_tasks_under_their_capabilities() {
        use baton_core::store::{TaskColumns, Tx};
        let conn = at_version_2(0, 0);
        conn.execute_batch(MIGRATIONS[2]).expect("version 3");
        conn.execute_batch(MIGRATIONS[3]).expect("version 4");
        conn.execute_batch("PRAGMA user_version = 4").expect("at 4");
        let task = |id: &str, priority: i64, caps: &[&str]| -> baton_core::model::Task {
            serde_json::from_value(serde_json::json!({"id": id, "workspace_id": "ws_1",
                "project_id": "prj_1", "parent_id": null, "title": id, "type": "task",
                "status": "ready", "priority": priority, "required_capabilities": caps,
                "labels": [], "retry_policy": {"max_attempts": 3, "backoff_initial": "1s",
                "backoff_multiplier": 2.0, "backoff_max": "5m"}, "lease_ttl": "5m",
                "review_required": false, "attempts": 0, "epoch": 0, "version": 1,
                "created_by": "x", "updated_by": "x", "created_at": "2026-11-25T00:00:00Z",
                "updated_at": "2026-11-25T00:00:00Z"}))
            .expect("a task")
        };
        let mut tricky = task("tsk_c", 5, &["gpu"]);
        // A NUL character, and a nested empty `required_capabilities` ahead of its own.
        tricky.input =
            Some(serde_json::json!({"plan": {"required_capabilities": []}, "text": "a\u{0}b"}));
        let tasks = [
            task("tsk_a", 1, &[]),
            task("tsk_b", 9, &["zeta", "gpu", "Äpfel"]),
            tricky,
        ];
        for t in &tasks {
            let c = TaskColumns::of(t);
            conn.execute(
                "INSERT INTO tasks (workspace_id, id, project_id, status, neg_priority, due_key, labels, body)
                 VALUES ('ws_1', ?1, 'prj_1', 'ready', ?2, ?3, '', ?4)",
                rusqlite::params![t.id, c.neg_priority, c.due_key, serde_json::to_string(t).unwrap()],
            )
            .expect("task at version 4");
        }
        migrate(&conn).expect("migrate");
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        for t in &tasks {
            let stored: String = conn
                .query_row("SELECT caps FROM tasks WHERE id = ?1", [&t.id], |r| {
                    r.get(0)
                })
                .expect("caps");
            assert_eq!(stored, TaskColumns::of(t).caps, "{}", t.id);
        }
        assert_eq!(TaskColumns::of(&tasks[1]).caps, ",gpu,zeta,Äpfel,");
        let mut tx = crate::tx::SqliteTx::new(&conn, crate::tx::Numbering::default());
        let mut ids = |caps: Option<&[String]>| -> Vec<String> {
            let found = tx.claim_candidates("ws_1", 0, 10, caps);
            found
                .expect("candidates")
                .into_iter()
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(None), ["tsk_b", "tsk_c", "tsk_a"]);
        assert_eq!(ids(Some(&[])), ["tsk_a"]);
        assert_eq!(ids(Some(&["gpu".to_string()])), ["tsk_c", "tsk_a"]);
    }

    /// A workspace written at version 5 is alive at version 6: its kill switch off in the
    /// column and in the body, as the model writes it (so a replayed row equals it).
    #[test]
    fn version_6_gives_workspaces_their_kill_switch_off() {
        use baton_core::store::Tx;
        let conn = at_version_2(0, 0);
        for (i, sql) in MIGRATIONS[2..5].iter().enumerate() {
            conn.execute_batch(sql).expect("older version");
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 3))
                .expect("version");
        }
        let old = r#"{"id":"ws_1","name":"default","created_at":"2026-11-25T00:00:00.000Z"}"#;
        conn.execute("UPDATE workspaces SET body = ?1", [old])
            .expect("workspace at version 5");
        migrate(&conn).expect("migrate");
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        let (killed, body): (bool, String) = conn
            .query_row("SELECT killed, body FROM workspaces", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("the workspace");
        let mut tx = crate::tx::SqliteTx::new(&conn, crate::tx::Numbering::default());
        let mut ws = tx.workspace("ws_1").expect("read").expect("there");
        assert!(!killed && !ws.killed);
        assert_eq!(serde_json::to_string(&ws).expect("json"), body);
        ws.killed = true;
        tx.put_workspace(&ws).expect("kill");
        assert_eq!(
            tx.kill_switch("ws_1", "prj_1", "agt_1").expect("read"),
            Some(baton_core::store::KillSwitch::Workspace("default".into()))
        );
    }

    /// A counter ahead of its log (numbers handed out that the log lost) stops the migration
    /// with the store left at version 2.
    #[test]
    fn version_3_refuses_a_counter_that_disagrees_with_the_log() {
        let conn = at_version_2(5, 1);
        let refused = migrate(&conn).expect_err("a damaged counter is refused");
        assert!(refused.message.contains("ws_1"), "{}", refused.message);
        assert_eq!(version(&conn), 2);
    }
}
