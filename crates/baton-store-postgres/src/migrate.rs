//! Forward-only, versioned migrations in `baton_schema`, applied under an advisory lock so
//! that replicas starting at once apply each exactly once.

use crate::{Conn, LOCK_TIMEOUT};
use baton_core::{Code, Error, Result};

/// The migrations in order; index + 1 is the version each leaves the schema at.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2_status.sql"),
    include_str!("schema_3_runs.sql"),
    include_str!("schema_4_caps.sql"),
];

/// An arbitrary constant: the advisory lock that serialises migrations.
pub(crate) const LOCK: i64 = 0x6261_746f_6e00;

/// Brings the schema up to the newest version.
///
/// Without the connection's lock timeout while it runs: a migration that builds an index
/// over a large table holds the advisory lock (and its table locks) for as long as that
/// takes, and a replica starting meanwhile must wait for it rather than fail to start.
pub(crate) fn migrate(conn: &mut Conn) -> Result<()> {
    conn.batch("SET lock_timeout = 0")?;
    conn.batch(&format!("SELECT pg_advisory_lock({LOCK})"))?;
    let result = apply(conn);
    let unlock = conn.batch(&format!("SELECT pg_advisory_unlock({LOCK})"));
    let restore = conn.batch(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"));
    result.and(unlock).and(restore)
}

fn apply(conn: &mut Conn) -> Result<()> {
    conn.batch("CREATE TABLE IF NOT EXISTS baton_schema (version BIGINT NOT NULL)")?;
    let current = version(conn)?;
    if current > MIGRATIONS.len() as i64 {
        return Err(Error::new(
            Code::Storage,
            format!("the database is at schema version {current}, newer than this baton knows"),
            "upgrade baton",
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        conn.batch(&format!(
            "BEGIN; {sql}; INSERT INTO baton_schema (version) VALUES ({version}); COMMIT;"
        ))?;
    }
    Ok(())
}

/// The schema version the database is at (0 before the first migration).
pub(crate) fn version(conn: &mut Conn) -> Result<i64> {
    let Conn { rt, pg } = conn;
    let version: Option<i64> = rt
        .block_on(sqlx::query_scalar("SELECT max(version) FROM baton_schema").fetch_one(&mut *pg))
        .map_err(crate::tx::db_err)?;
    Ok(version.unwrap_or(0))
}
