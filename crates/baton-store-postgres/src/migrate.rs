//! Forward-only, versioned migrations in `baton_schema`, applied under an advisory lock so
//! that replicas starting at once apply each exactly once.

use crate::tx::db_err;
use crate::{Conn, LOCK_TIMEOUT};
use baton_core::store::caps_key;
use baton_core::{Code, Error, Result};

/// The migrations in order; index + 1 is the version each leaves the schema at.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2_status.sql"),
    include_str!("schema_3_runs.sql"),
    include_str!("schema_4_caps.sql"),
    include_str!("schema_5_floor.sql"),
    include_str!("schema_6_kill.sql"),
    include_str!("schema_7_artifacts.sql"),
    include_str!("schema_8_concurrency.sql"),
    include_str!("schema_9_requests.sql"),
    include_str!("schema_10_project_limits.sql"),
];

/// An arbitrary constant: the advisory lock that serialises migrations.
pub(crate) const LOCK: i64 = 0x6261_746f_6e00;

/// Brings the schema up to the newest version.
///
/// Without the connection's lock timeout and round-trip limit while it runs: a migration
/// that builds an index over a large table holds the advisory lock (and its table locks)
/// for as long as that takes, and a replica starting meanwhile must wait for it rather
/// than fail to start.
pub(crate) fn migrate(conn: &mut Conn) -> Result<()> {
    let limit = conn.limit.take();
    let result = (|| {
        conn.batch("SET lock_timeout = 0")?;
        conn.batch(&format!("SELECT pg_advisory_lock({LOCK})"))?;
        let result = apply(conn);
        let unlock = conn.batch(&format!("SELECT pg_advisory_unlock({LOCK})"));
        let restore = conn.batch(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"));
        result.and(unlock).and(restore)
    })();
    conn.limit = limit;
    result
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
        let step = (|| {
            conn.batch(&format!("BEGIN; {sql};"))?;
            if version == 4 {
                file_tasks_under_their_capabilities(conn)?;
            }
            conn.batch(&format!(
                "INSERT INTO baton_schema (version) VALUES ({version}); COMMIT;"
            ))
        })();
        if step.is_err() {
            let _ = conn.batch("ROLLBACK");
        }
        step?;
    }
    Ok(())
}

/// Version 4's `caps` for the tasks written before it: each task's capability set as a
/// write stores it ([`caps_key`]). Read here, not cast in SQL: a body may carry `\u0000`
/// in its input or output, which PostgreSQL's `jsonb` refuses, and a substring test alone
/// cannot tell the task's own capabilities from a nested object's.
fn file_tasks_under_their_capabilities(conn: &mut Conn) -> Result<()> {
    let (rt, pg) = conn.parts()?;
    let mut after = (String::new(), String::new());
    loop {
        // Every task that requires a capability holds this text (bodies are compact JSON);
        // a few more may, in nested values, and are read to find out.
        let rows: Vec<(String, String, String)> = rt
            .block_on(
                sqlx::query_as(
                    "SELECT workspace_id, id, body FROM tasks
                     WHERE (workspace_id, id) > ($1, $2)
                       AND strpos(body, '\"required_capabilities\":[\"') > 0
                     ORDER BY workspace_id, id LIMIT 1000",
                )
                .bind(&after.0)
                .bind(&after.1)
                .fetch_all(&mut *pg),
            )
            .map_err(db_err)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.0.clone(), last.1.clone());
        let (mut workspaces, mut ids, mut sets) = (Vec::new(), Vec::new(), Vec::new());
        for (ws, id, body) in rows {
            let task: serde_json::Value =
                baton_core::store::from_stored_json(&body).map_err(|e| {
                    Error::new(
                        Code::Storage,
                        format!("task {id} of workspace {ws}: its stored body is not JSON ({e})"),
                        "run `baton replay --verify` with the previous baton to find the damage",
                    )
                })?;
            let capabilities: Vec<String> = task["required_capabilities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let set = caps_key(&capabilities);
            if !set.is_empty() {
                workspaces.push(ws);
                ids.push(id);
                sets.push(set);
            }
        }
        rt.block_on(
            sqlx::query(
                "UPDATE tasks AS t SET caps = u.caps
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u (workspace_id, id, caps)
                 WHERE t.workspace_id = u.workspace_id AND t.id = u.id",
            )
            .bind(workspaces)
            .bind(ids)
            .bind(sets)
            .execute(&mut *pg),
        )
        .map_err(db_err)?;
    }
}

/// The schema version the database is at (0 before the first migration).
pub(crate) fn version(conn: &mut Conn) -> Result<i64> {
    let (rt, pg) = conn.parts()?;
    let version: Option<i64> = rt
        .block_on(sqlx::query_scalar("SELECT max(version) FROM baton_schema").fetch_one(&mut *pg))
        .map_err(crate::tx::db_err)?;
    Ok(version.unwrap_or(0))
}
