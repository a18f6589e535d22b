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
