//! The write of a task row that sets only the columns that moved.
//!
//! Every column of `tasks` but the body is derived from the task (`schema.sql`), and each
//! one a statement sets costs SQLite the upkeep of every index on it, even when the value
//! stays the same: an upsert that sets them all rewrites the `tasks_status` entry of a
//! heartbeat, which changes only the lease expiry. So a job remembers the columns of the
//! tasks it read, and writes such a task back with an `UPDATE` of the body and the columns
//! that differ (about a third cheaper per row, and one index page fewer to commit); a task
//! it did not read goes through the upsert.

use baton_core::store::TaskColumns;
use rusqlite::types::ToSql;

/// The values of the upsert's parameters ?3 to ?14 (after workspace and id), in the
/// table's order.
pub(crate) fn values(c: &TaskColumns) -> [&dyn ToSql; 12] {
    [
        &c.project_id,
        &c.parent_id,
        &c.status,
        &c.neg_priority,
        &c.due_key,
        &c.not_before,
        &c.lease_expires_at,
        &c.idem_key,
        &c.labels,
        &c.caps,
        &c.conc_key,
        &c.conc_limit,
    ]
}

/// `UPDATE` of a stored row from `old` to `new`: the statement (the body is ?1, the
/// workspace ?2, the id ?3) and the values of the changed columns, ?4 on.
pub(crate) fn update<'a>(new: &'a TaskColumns, old: &TaskColumns) -> (String, Vec<&'a dyn ToSql>) {
    // Each column with its new value and whether it moved, side by side.
    let columns: [(&str, &dyn ToSql, bool); 12] = [
        (
            "project_id",
            &new.project_id,
            new.project_id != old.project_id,
        ),
        ("parent_id", &new.parent_id, new.parent_id != old.parent_id),
        ("status", &new.status, new.status != old.status),
        (
            "neg_priority",
            &new.neg_priority,
            new.neg_priority != old.neg_priority,
        ),
        ("due_key", &new.due_key, new.due_key != old.due_key),
        (
            "not_before",
            &new.not_before,
            new.not_before != old.not_before,
        ),
        (
            "lease_expires_at",
            &new.lease_expires_at,
            new.lease_expires_at != old.lease_expires_at,
        ),
        ("idem_key", &new.idem_key, new.idem_key != old.idem_key),
        ("labels", &new.labels, new.labels != old.labels),
        ("caps", &new.caps, new.caps != old.caps),
        ("conc_key", &new.conc_key, new.conc_key != old.conc_key),
        (
            "conc_limit",
            &new.conc_limit,
            new.conc_limit != old.conc_limit,
        ),
    ];
    let mut sql = String::from("UPDATE tasks SET body = ?1");
    let mut values = Vec::new();
    for (name, value, changed) in columns {
        if changed {
            values.push(value);
            sql.push_str(&format!(", {name} = ?{}", values.len() + 3));
        }
    }
    sql.push_str(" WHERE workspace_id = +?2 AND id = +?3");
    (sql, values)
}
