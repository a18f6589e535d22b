//! The operation layer: every mutation and query of DESIGN §3–§6 as a function over a
//! [`Tx`]. Each function validates its input, checks the state machine, writes the
//! projections and appends the events in the one transaction it is given. Nothing here does
//! IO of its own or reads a clock: `now` comes in with the [`Ctx`].

pub mod brief;
pub mod graph;
pub mod knowledge;
pub mod lease;
pub mod plan;
pub mod registry;
pub mod task;

use crate::error::{Error, Result};
use crate::model::*;
use crate::store::{NewEvent, Tx};
use crate::time::Millis;
use serde_json::Value;

/// Largest title, in bytes.
pub const MAX_TITLE: usize = 1_000;
/// Largest free-text field (description, plan, context content), in bytes.
pub const MAX_TEXT: usize = 256 * 1024;
/// Largest JSON value (input, output, schema), serialized, in bytes.
pub const MAX_JSON: usize = 1024 * 1024;
/// Most labels or capabilities on one task.
pub const MAX_TAGS: usize = 64;

/// What an operation runs with: the transaction, the time, and who is calling where.
pub struct Ctx<'a> {
    /// The open transaction.
    pub tx: &'a mut dyn Tx,
    /// The time of the operation.
    pub now: Millis,
    /// Workspace id.
    pub ws: &'a str,
    /// Caller name, recorded in events.
    pub actor: &'a str,
}

impl Ctx<'_> {
    /// Appends an event in this transaction.
    pub fn emit(&mut self, kind: &str, task_id: Option<&str>, data: Value) -> Result<()> {
        self.emit_raw(kind, task_id, &data.to_string())
    }

    /// Appends an event whose data is already JSON text.
    pub fn emit_raw(&mut self, kind: &str, task_id: Option<&str>, data: &str) -> Result<()> {
        self.tx.append_event(NewEvent {
            workspace_id: self.ws,
            kind,
            at: self.now,
            actor: self.actor,
            task_id,
            data,
        })
    }

    /// Writes a task (serializing it once) and returns its JSON body.
    pub fn put_task(&mut self, task: &Task) -> Result<String> {
        let body = encode(task)?;
        self.tx.put_task(task, &body)?;
        Ok(body)
    }

    /// Loads a task for writing, or fails with `NOT_FOUND`. A lease that has lapsed is
    /// expired first, so no write ever honours an expired lease, reaper or not.
    pub fn task(&mut self, id: &str) -> Result<Task> {
        let mut task = self
            .tx
            .task_for_update(self.ws, id)?
            .ok_or_else(|| Error::not_found("task", id))?;
        lease::expire_if_due(self, &mut task)?;
        Ok(task)
    }

    /// Stores a changed task: bumps its version, stamps who and when, writes it and appends
    /// `kind` with the task (and any `extra` snapshots) as the event's data.
    pub fn save(&mut self, task: &mut Task, kind: &str, extra: &[Snap]) -> Result<()> {
        task.version += 1;
        self.save_unversioned(task, kind, extra)
    }

    /// As [`Ctx::save`] without a version bump: for lease bookkeeping (heartbeats) that
    /// changes nothing a planner edits, so it must not make their `If-Match` fail.
    pub fn save_unversioned(&mut self, task: &mut Task, kind: &str, extra: &[Snap]) -> Result<()> {
        self.stamp(task);
        let body = self.put_task(task)?;
        self.emit_task(kind, task, &body, extra)
    }

    /// As [`Ctx::save`] for a step on the way to another change of the same task in the same
    /// job (an automatic start before a completion): the log gets the step's event, and the
    /// row is left to the save that follows, which would overwrite it. The caller must save
    /// the task before the job ends.
    pub fn save_step(&mut self, task: &mut Task, kind: &str, extra: &[Snap]) -> Result<()> {
        task.version += 1;
        self.stamp(task);
        let body = encode(task)?;
        self.emit_task(kind, task, &body, extra)
    }

    /// Marks `task` as changed now, by this actor.
    fn stamp(&self, task: &mut Task) {
        task.updated_at = self.now;
        task.updated_by = self.actor.to_string();
    }

    /// Appends `kind` about `task`, serialized as `body`, with `extra` snapshots.
    fn emit_task(&mut self, kind: &str, task: &Task, body: &str, extra: &[Snap]) -> Result<()> {
        // {"task": <body>, ...extra}: the task is serialized once, for the row and the event.
        let mut data = format!("{{\"task\":{body}");
        for (key, json) in extra {
            data.push_str(&format!(",\"{key}\":{json}"));
        }
        data.push('}');
        self.emit_raw(kind, Some(&task.id), &data)
    }
}

/// A task's JSON body, as stored and as put in events.
fn encode(task: &Task) -> Result<String> {
    serde_json::to_string(task).map_err(|e| Error::new(crate::Code::Internal, e.to_string(), ""))
}

/// A snapshot of one more entity for an event's data: its key and its JSON.
pub type Snap = (&'static str, String);

/// Serializes an entity for an event, under `key`.
pub fn snap<T: serde::Serialize>(key: &'static str, value: &T) -> Snap {
    (
        key,
        serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
    )
}

/// Checks a required text field: present, not blank, within `max` bytes.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            format!("{field} must not be empty"),
            format!("give a {field}"),
        ));
    }
    check_len(field, value, max)
}

/// Checks an optional text field's size.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::new(
            crate::Code::TooLarge,
            format!("{field} is {} bytes; the limit is {max}", value.len()),
            format!("shorten the {field}, or attach the bulk as an artifact or reference"),
        ));
    }
    Ok(())
}

/// Checks a JSON value's serialized size.
pub fn check_json(field: &str, value: &Option<Value>) -> Result<()> {
    if let Some(v) = value {
        let len = serde_json::to_string(v)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if len > MAX_JSON {
            return Err(Error::new(
                crate::Code::TooLarge,
                format!("{field} is {len} bytes of JSON; the limit is {MAX_JSON}"),
                "store large data as an artifact and pass a reference",
            ));
        }
    }
    Ok(())
}

/// Checks and normalizes labels or capabilities: non-empty, short, no duplicates.
pub fn check_tags(field: &str, tags: &[String]) -> Result<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(Error::new(
            crate::Code::TooLarge,
            format!("{} {field}; the limit is {MAX_TAGS}", tags.len()),
            format!("use fewer {field}"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty() || tag.len() > 200 || tag.chars().any(|c| c.is_control() || c == ',') {
            return Err(Error::invalid(
                format!("'{tag}' is not a valid entry in {field}"),
                "use short names without commas or control characters, e.g. rust, review",
            ));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

/// The workspace's default project, or the named one.
pub fn project(ctx: &mut Ctx<'_>, id_or_name: Option<&str>) -> Result<Project> {
    let key = id_or_name.unwrap_or(DEFAULT_PROJECT);
    ctx.tx
        .project(ctx.ws, key)?
        .ok_or_else(|| Error::not_found("project", key))
}
