//! Forward-only, versioned migrations, tracked in `PRAGMA user_version`. Each runs in an
//! immediate transaction that re-checks the version, so processes starting at once on a new
//! file apply each migration exactly once.

use crate::tx::db_err;
use baton_core::{Code, Error, Result};
use rusqlite::Connection;

/// The migrations in order; index + 1 is the version each leaves the schema at.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2_keys.sql"),
    include_str!("schema_3_pages.sql"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written at version 2 keeps its runs and its event numbering at version 3:
    /// the next event follows the last one stored, with the workspace's counter gone.
    #[test]
    fn version_3_keeps_runs_and_numbering() {
        let conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("older version");
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO workspaces (id, name, last_seq, body) VALUES ('ws_1', 'default', 2, '{}');
             INSERT INTO events (workspace_id, seq, type, at, actor, data)
                 VALUES ('ws_1', 1, 'a', 0, 'x', '{}'), ('ws_1', 2, 'b', 0, 'x', '{}');
             INSERT INTO runs (workspace_id, id, task_id, body) VALUES ('ws_1', 'run_1', 'tsk_1', '{\"n\":1}');",
        )
        .expect("data at version 2");
        migrate(&conn).expect("migrate");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let run: String = conn
            .query_row(
                "SELECT body FROM runs WHERE workspace_id = 'ws_1' AND id = 'run_1'",
                [],
                |r| r.get(0),
            )
            .expect("the run survives");
        assert_eq!(run, "{\"n\":1}");
        let mut numbering = crate::tx::Numbering::default();
        assert_eq!(numbering.next(&conn, "ws_1").expect("next"), 3);
        assert!(numbering.next(&conn, "ws_unknown").is_err());
        // Migrating again changes nothing.
        migrate(&conn).expect("migrate again");
    }
}
