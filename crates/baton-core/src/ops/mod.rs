//! The operation layer: every mutation and query of DESIGN §3–§6 as a function over a
//! [`Tx`]. Each function validates its input, checks the state machine, writes the
//! projections and appends the events in the one transaction it is given. Nothing here does
//! IO of its own or reads a clock: `now` comes in with the [`Ctx`].

pub mod artifact;
pub mod brief;
pub mod concurrency;
pub mod graph;
pub mod knowledge;
pub mod lease;
pub mod plan;
pub mod registry;
pub mod scope;
pub mod task;

use crate::error::{Error, Result};
use crate::model::*;
use crate::state::Status;
use crate::store::{NewEvent, TaskFilter, Tx};
use crate::time::Millis;
use serde_json::Value;

/// Largest title, in bytes.
pub const MAX_TITLE: usize = 1_000;
/// Largest free-text field (description, plan, context content), in bytes.
pub const MAX_TEXT: usize = 256 * 1024;
/// Largest JSON value (input, output, schema), serialized, in bytes.
pub const MAX_JSON: usize = 1024 * 1024;
/// Deepest nesting of a JSON value (input, output, schema), in arrays and objects. A value
/// comes back inside other objects (a task in an answer, a snapshot in an event); at most
/// this deep, it stays within what JSON readers accept (serde's 128 levels, for one).
pub const MAX_JSON_DEPTH: usize = 64;
/// Most labels or capabilities on one task.
pub const MAX_TAGS: usize = 64;
/// Largest id or label a caller may name in a reference or a filter, in bytes: far above
/// any id Baton makes, low enough that a lookup by it stays cheap.
pub const MAX_ID: usize = 256;

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
    /// The agent the caller's key is bound to, if it is ([`crate::api::Actor::agent`]).
    pub agent: Option<&'a str>,
    /// The request being served, recorded on the events appended ([`crate::api::Actor`]).
    pub request_id: Option<&'a str>,
}

impl Ctx<'_> {
    /// Appends an event in this transaction.
    pub fn emit(&mut self, kind: &str, task_id: Option<&str>, data: Value) -> Result<()> {
        self.emit_raw(kind, task_id, &data.to_string())
    }

    /// Appends an event whose data is already JSON text.
    pub fn emit_raw(&mut self, kind: &str, task_id: Option<&str>, data: &str) -> Result<()> {
        crate::metrics::note(self.ws, kind);
        self.tx.append_event(NewEvent {
            workspace_id: self.ws,
            kind,
            at: self.now,
            actor: self.actor,
            task_id,
            data,
            request_id: self.request_id,
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
        check_id("task id", id)?;
        let mut task = self
            .tx
            .task_for_update(self.ws, id)?
            .ok_or_else(|| Error::not_found("task", id))?;
        lease::expire_if_due(self, &mut task)?;
        Ok(task)
    }

    /// Task `id` as stored, to be read: neither locked nor brought up to date (a lapsed
    /// lease stays as it is). `NOT_FOUND` if there is none.
    pub fn read_task(&mut self, id: &str) -> Result<Task> {
        check_id("task id", id)?;
        self.tx
            .task(self.ws, id)?
            .ok_or_else(|| Error::not_found("task", id))
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
            format!("give {} {field}", article(field)),
        ));
    }
    check_len(field, value, max)
}

/// Checks a one-line text (a title, a name): required, and without control characters once
/// trimmed (as it is stored), since it is shown on one line: a newline or a terminal escape
/// inside it would forge or garble the lines of a listing. A tab is let through.
pub fn check_line(field: &str, value: &str, max: usize) -> Result<()> {
    check_text(field, value, max)?;
    if value.trim().chars().any(|c| breaks_a_line(c) && c != '\t') {
        return Err(control_character(field));
    }
    Ok(())
}

/// Checks a name (of an agent, a project, a workspace) as it is looked up: required, with
/// no control character.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    check_text(field, value, max)?;
    if value.chars().any(breaks_a_line) {
        return Err(control_character(field));
    }
    Ok(())
}

/// Whether `c` may not stand in text shown on one line: a control character, Unicode's
/// line and paragraph separators (lines to whatever splits text the Unicode way), and the
/// bidirectional embeddings, overrides and isolates (which reorder what follows them on
/// screen, so a line shows other than what it holds).
fn breaks_a_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The refusal of a one-line field holding a control character.
fn control_character(field: &str) -> Error {
    Error::invalid(
        format!("{field} contains a control character, a line separator or a direction override"),
        format!(
            "give {} {field} of printable characters on one line",
            article(field)
        ),
    )
}

/// Checks the name of something being created: [`check_name`], and no spaces around it,
/// since names are keys (`" a "` would be another agent than `"a"`). Only at creation: a
/// name stored before this rule is still looked up as it is.
pub fn check_new_name(field: &str, value: &str, max: usize) -> Result<()> {
    check_name(field, value, max)?;
    if value.trim() != value {
        return Err(Error::invalid(
            format!("{field} {value:?} starts or ends with white space"),
            format!("give {} {field} without spaces around it", article(field)),
        ));
    }
    // Things are named by id or name alike: a name shaped like an id would be read as
    // that id (another thing's, or none).
    if crate::id::is_id_shaped(value) {
        return Err(Error::invalid(
            format!("{field} {value:?} is shaped like an id"),
            format!(
                "give {} {field} that is not a prefix, '_' and 32 hex digits",
                article(field)
            ),
        ));
    }
    Ok(())
}

/// "a" or "an", for a hint that names a field.
fn article(field: &str) -> &'static str {
    if field.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Checks an id (or label) a caller names to look something up: within [`MAX_ID`] and
/// without NUL, so both stores answer alike (PostgreSQL cannot compare text with a NUL).
/// An overlong one is `INVALID_INPUT`, not `TOO_LARGE`: it names nothing, whatever its size.
pub fn check_ref(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_ID {
        return Err(Error::invalid(
            format!(
                "{field} is {} bytes, longer than any id or name (at most {MAX_ID})",
                value.len()
            ),
            format!("give the {field} as a listing or a create answered it"),
        ));
    }
    check_len(field, value, MAX_ID)
}

/// Checks the id a call is about: an empty one is `INVALID_INPUT` on every surface (over
/// HTTP it would name another route, so the CLI refuses it before sending; the embedded
/// store says the same rather than "not found").
pub fn check_id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(
            format!("the {field} is empty"),
            format!("give the {field} (the id a create or a listing answered)"),
        ));
    }
    check_ref(field, value)
}

/// Checks an optional text field's size, and that it holds no NUL character (which
/// PostgreSQL cannot store in text).
pub fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::new(
            crate::Code::TooLarge,
            format!("{field} is {} bytes; the limit is {max}", value.len()),
            format!("shorten the {field} to at most {max} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(
            format!("{field} contains a NUL character"),
            format!("remove the NUL (\\u0000) from the {field}"),
        ));
    }
    Ok(())
}

/// Checks a duration a caller gave (a lease, a timeout): at least a second, since the
/// reaper and the clocks of agents work to the second.
pub fn check_duration(field: &str, value: Option<crate::time::Duration>) -> Result<()> {
    if value.is_some_and(|d| d.0 < 1000) {
        return Err(Error::new(
            crate::Code::InvalidDuration,
            format!("{field} must be at least 1s"),
            "give e.g. 30s, 5m or 2h",
        ));
    }
    Ok(())
}

/// The most items one page of a listing holds.
pub const MAX_PAGE: u32 = 1000;

/// Checks the page size a caller asked for: 1 to [`MAX_PAGE`]. Clamping it instead would
/// hand back a page other than the one asked for, without saying so.
pub fn check_limit(field: &str, limit: u32) -> Result<u32> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::invalid(
            format!("{field} is {limit}; it must be 1 to {MAX_PAGE}"),
            format!("ask for 1 to {MAX_PAGE}; for more, read page after page"),
        ));
    }
    Ok(limit)
}

/// Checks an event sequence number to read after. The log numbers events with signed
/// 64-bit integers; a larger number read as one would wrap to a negative and replay
/// everything.
pub fn check_after(after: u64) -> Result<u64> {
    if after > i64::MAX as u64 {
        return Err(Error::invalid(
            format!("after is {after}, beyond any event number"),
            "resume after the last sequence number you saw (0 replays from the start)",
        ));
    }
    Ok(after)
}

/// Most attempts a task may be given: far beyond any useful retrying, and within what every
/// client reads as a 32-bit integer.
pub const MAX_ATTEMPTS: u32 = 1_000;

/// Checks an attempt limit: 1 to [`MAX_ATTEMPTS`].
pub fn check_max_attempts(max: u32) -> Result<()> {
    if !(1..=MAX_ATTEMPTS).contains(&max) {
        return Err(Error::invalid(
            format!("max_attempts is {max}; it must be 1 to {MAX_ATTEMPTS}"),
            "give the number of runs the task may have in all, e.g. 3",
        ));
    }
    Ok(())
}

/// Checks a retry policy: at least one attempt, a delay that grows (1× to 10× per attempt)
/// up to a cap no shorter than the first delay.
pub fn check_retry_policy(policy: &crate::model::RetryPolicy) -> Result<()> {
    check_max_attempts(policy.max_attempts)?;
    if !(1.0..=10.0).contains(&policy.backoff_multiplier)
        || policy.backoff_max.0 < policy.backoff_initial.0
    {
        return Err(Error::invalid(
            "retry_policy needs a backoff_multiplier from 1 to 10 and a backoff_max no shorter \
             than backoff_initial",
            "e.g. {\"max_attempts\": 3, \"backoff_initial\": \"1s\", \"backoff_multiplier\": 2, \"backoff_max\": \"5m\"}",
        ));
    }
    Ok(())
}

/// Checks a JSON field that must be an object (a budget, a usage report), within the size
/// limit; `numbers` are its keys that, when present, must be numbers of at least 0.
pub fn check_object(field: &str, value: &Option<Value>, numbers: &[&str]) -> Result<()> {
    check_json(field, value)?;
    let Some(v) = value else { return Ok(()) };
    let Some(object) = v.as_object() else {
        return Err(Error::invalid(
            format!("{field} must be a JSON object"),
            format!(
                "send {field} as an object, e.g. {{\"{}\": 1.5}}",
                numbers.first().unwrap_or(&"key")
            ),
        ));
    };
    for key in numbers {
        if let Some(n) = object.get(*key) {
            if !n.as_f64().is_some_and(|n| n >= 0.0) {
                return Err(Error::invalid(
                    format!("{field}.{key} must be a number of at least 0"),
                    format!("send {field}.{key} as a number, e.g. 1.5"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a JSON value's serialized size and its nesting.
pub fn check_json(field: &str, value: &Option<Value>) -> Result<()> {
    if let Some(v) = value {
        let depth = json_depth(v);
        if depth > MAX_JSON_DEPTH {
            return Err(Error::invalid(
                format!("{field} nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"),
                "flatten the value, or store it elsewhere (a file, a repository) and pass a reference",
            ));
        }
        let len = serde_json::to_string(v)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if len > MAX_JSON {
            return Err(Error::new(
                crate::Code::TooLarge,
                format!("{field} is {len} bytes of JSON; the limit is {MAX_JSON}"),
                "store large data elsewhere (a file, a repository) and pass a reference",
            ));
        }
    }
    Ok(())
}

/// Whether `r` may name a task of a batch: 1 to 200 bytes, no control characters, and not
/// shaped like a task id (such a ref would hide the existing task of that id from the
/// batch's `blocked_by`). Plans hold their refs to a narrower set of characters.
pub fn is_batch_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 200
        && !r.chars().any(char::is_control)
        && !crate::id::has_prefix(r, "tsk")
}

/// How deep arrays and objects nest in `value` (a scalar is 0, `[]` is 1).
fn json_depth(value: &Value) -> usize {
    let inner = match value {
        Value::Array(items) => items.iter().map(json_depth).max(),
        Value::Object(fields) => fields.values().map(json_depth).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
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
    check_id("project", key)?;
    ctx.tx
        .project(ctx.ws, key)?
        .ok_or_else(|| Error::not_found("project", key))
}

/// Calls `f` on every task `filter` matches, reading them a page at a time (`filter`'s
/// own `after_id` and `limit` are replaced). A page is read whole before `f` sees any of
/// it, so `f` may change the tasks (not their ids).
pub(crate) fn each_task(
    ctx: &mut Ctx<'_>,
    mut filter: TaskFilter,
    mut f: impl FnMut(&mut Ctx<'_>, Task) -> Result<()>,
) -> Result<()> {
    filter.limit = MAX_PAGE;
    filter.after_id = None;
    loop {
        let page = ctx.tx.list_tasks(ctx.ws, &filter)?;
        let full = page.len() == MAX_PAGE as usize;
        filter.after_id = page.last().map(|t| t.id.clone());
        for task in page {
            f(ctx, task)?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Calls `f` on every task in one of `statuses` (of `project_id`, or of the workspace).
pub(crate) fn for_each_task(
    ctx: &mut Ctx<'_>,
    statuses: &[Status],
    project_id: Option<&str>,
    mut f: impl FnMut(&mut Ctx<'_>, Task) -> Result<()>,
) -> Result<()> {
    for status in statuses {
        let filter = TaskFilter {
            status: Some(*status),
            project_id: project_id.map(str::to_string),
            ..Default::default()
        };
        each_task(ctx, filter, &mut f)?;
    }
    Ok(())
}
