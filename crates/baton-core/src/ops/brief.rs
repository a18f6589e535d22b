//! The briefing (DESIGN §6): everything another agent needs to pick a task up from where it
//! stands, in one response, most relevant first, within an optional size budget.

use super::Ctx;
use crate::api::BriefOut;
use crate::error::{Error, Result};
use crate::model::*;
use serde_json::{json, Map, Value};

/// Most children a briefing lists (the rest are counted in `omitted`).
const MAX_CHILDREN_LISTED: usize = 1000;

/// Smallest size budget accepted: below this not even the task's core fits.
pub const MIN_BRIEF_BYTES: usize = 512;

/// Context types in order of how much a resuming agent needs them.
const CONTEXT_RANK: [&str; 9] = [
    "blocker",
    "decision",
    "user_input",
    "discovery",
    "rationale",
    "outcome",
    "attempt",
    "reference",
    "note",
];

fn size(v: &Value) -> usize {
    serde_json::to_string(v).map(|s| s.len()).unwrap_or(0)
}

fn summary(task: &Task) -> Value {
    json!({ "id": task.id, "title": task.title, "status": task.status, "type": task.kind })
}

/// Builds the briefing of a task, trimmed to `max_bytes` of JSON when given.
pub fn brief(ctx: &mut Ctx<'_>, id: &str, max_bytes: Option<usize>) -> Result<BriefOut> {
    if let Some(max) = max_bytes {
        if max < MIN_BRIEF_BYTES {
            return Err(Error::invalid(
                format!("max_bytes {max} is too small"),
                format!("give at least {MIN_BRIEF_BYTES} bytes"),
            ));
        }
    }
    let task = ctx.read_task(id)?;
    let ws = ctx.ws;
    let core = json!({
        "id": task.id, "title": task.title, "type": task.kind, "status": task.status,
        "blocked_reason": task.blocked_reason, "reason": task.reason,
        "intent": task.intent, "description": task.description, "plan": task.plan,
        "priority": task.priority, "due_at": task.due_at.map(crate::time::format_rfc3339),
        "labels": task.labels, "required_capabilities": task.required_capabilities,
        "paths": task.paths,
        "attempts": task.attempts, "max_attempts": task.retry_policy.max_attempts,
        "version": task.version, "input": task.input, "output_schema": task.output_schema,
        "output": task.output, "outcome": task.outcome,
        "lease": task.view().lease,
        // What bounds the work: the attempt's deadline, the cost budget, and whether a
        // reviewer will look at it.
        "timeout": task.timeout, "budget": task.budget,
        "review_required": task.review_required,
    });

    let steps: Vec<Value> = ctx
        .tx
        .steps_of(ws, id)?
        .into_iter()
        .map(|s| json!(s))
        .collect();

    let entries = ctx.tx.context_of(ws, id)?;
    let superseded: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.supersedes.as_deref())
        .collect();
    let mut live: Vec<&ContextEntry> = entries
        .iter()
        .filter(|e| !superseded.contains(&e.id.as_str()))
        .collect();
    let rank = |k: &str| {
        CONTEXT_RANK
            .iter()
            .position(|r| *r == k)
            .unwrap_or(CONTEXT_RANK.len())
    };
    live.sort_by(|a, b| {
        rank(&a.kind)
            .cmp(&rank(&b.kind))
            .then(b.created_at.cmp(&a.created_at))
            .then(b.id.cmp(&a.id))
    });
    let context: Vec<Value> = live
        .iter()
        .map(|e| json!({ "id": e.id, "type": e.kind, "content": e.content, "by": e.created_by, "at": crate::time::format_rfc3339(e.created_at), "supersedes": e.supersedes }))
        .collect();

    let mut deps = Vec::new();
    for d in ctx.tx.deps_of(ws, id)? {
        if let Some(t) = ctx.tx.task(ws, &d.blocker_id)? {
            let mut s = summary(&t);
            s["relation"] = json!(match d.kind {
                DepKind::Blocks => "blocked_by",
                DepKind::RelatesTo => "relates_to",
                DepKind::DiscoveredFrom => "discovered_from",
            });
            deps.push(s);
        }
    }
    for d in ctx.tx.dependents_of(ws, id)? {
        if let Some(t) = ctx.tx.task(ws, &d.blocked_id)? {
            let mut s = summary(&t);
            s["relation"] = json!(match d.kind {
                DepKind::Blocks => "blocks",
                DepKind::RelatesTo => "relates_to",
                DepKind::DiscoveredFrom => "source_of",
            });
            deps.push(s);
        }
    }

    let parent = match &task.parent_id {
        Some(pid) => ctx.tx.task(ws, pid)?.map(|p| {
            let mut s = summary(&p);
            s["intent"] = json!(p.intent);
            s
        }),
        None => None,
    };
    // The first children listed; those past them are counted, so `omitted` says so.
    let mut children: Vec<Value> = Vec::new();
    let mut unlisted = 0u64;
    let mut after = None;
    loop {
        let filter = crate::store::TaskFilter {
            parent_id: Some(id.to_string()),
            after_id: after.take(),
            limit: MAX_CHILDREN_LISTED as u32,
            ..Default::default()
        };
        let page = ctx.tx.list_tasks(ws, &filter)?;
        let full = page.len() == MAX_CHILDREN_LISTED;
        after = page.last().map(|t| t.id.clone());
        if children.is_empty() {
            children = page.iter().map(summary).collect();
        } else {
            unlisted += page.len() as u64;
        }
        if !full {
            break;
        }
    }
    let runs: Vec<Value> = ctx
        .tx
        .runs_of(ws, id, 3)?
        .into_iter()
        .map(|r| {
            // A rejected run's output is on the run only (the task dropped it): what the
            // reviewer turned down, for the next attempt to improve on.
            let rejected_output = (r.status == RunStatus::Rejected).then_some(&r.output);
            json!({ "id": r.id, "attempt": r.attempt, "agent_id": r.agent_id, "status": r.status,
                    "progress": r.progress, "message": r.message, "usage": r.usage,
                    "outcome": r.outcome, "output": rejected_output,
                    "error": r.error, "error_class": r.error_class,
                    "started_at": crate::time::format_rfc3339(r.started_at), "ended_at": r.ended_at.map(crate::time::format_rfc3339) })
        })
        .collect();

    // Newest first: the latest output is the one a resuming agent looks at.
    let artifacts: Vec<Value> = ctx
        .tx
        .artifacts_of(ws, id)?
        .into_iter()
        .rev()
        .map(|a| {
            json!({ "id": a.id, "name": a.name, "media_type": a.media_type, "size": a.size,
                    "run_id": a.run_id, "by": a.created_by,
                    "at": crate::time::format_rfc3339(a.created_at) })
        })
        .collect();

    let sections = [
        ("steps", steps),
        ("context", context),
        ("dependencies", deps),
        ("children", children),
        ("runs", runs),
        ("artifacts", artifacts),
    ];
    let mut draft = Draft::new(core, parent, sections);
    if unlisted > 0 {
        draft.count_dropped("children", unlisted);
    }
    if let Some(max) = max_bytes {
        draft.fit(max);
    }
    typed(draft.assemble())
}

/// Items of a section in the order a budget drops them: the tier first (a lower tier goes
/// sooner), then the rank within it.
fn drop_order(section: &str, index: usize, count: usize, item: &Value) -> (u8, usize) {
    let ended = |v: &Value| matches!(v["status"].as_str(), Some("done" | "failed" | "canceled"));
    let last_first = count - index; // the later in the list, the sooner it goes
    match section {
        // The newest run (first) tells what the last attempt got to; older ones go first.
        "runs" if index == 0 => (9, 0),
        "runs" => (1, last_first),
        "children" if ended(item) => (2, index),
        "children" => (8, last_first),
        "dependencies" => match item["relation"].as_str() {
            Some("blocked_by" | "blocks") => (11, last_first),
            _ => (3, last_first),
        },
        // Done steps go oldest first; the steps left to do are the work itself.
        "steps" if item["done"] == true => (4, index),
        "steps" => (12, last_first),
        // Context is sorted by rank then newest: the last goes first within a tier.
        "context" => match item["type"].as_str() {
            Some("blocker") => (14, last_first),
            Some("decision") => (13, last_first),
            Some("discovery" | "user_input") => (10, last_first),
            _ => (5, last_first),
        },
        // What earlier work produced, named (the bytes are a call away): after the minor
        // notes, before the open children.
        "artifacts" => (7, last_first),
        _ => (5, last_first),
    }
}

/// Task fields a budget may drop, least needed first; the rest (id, title, type, status,
/// version) always stay.
const OPTIONAL_FIELDS: [&str; 17] = [
    "input",
    "output_schema",
    "output",
    "labels",
    "required_capabilities",
    "paths",
    "due_at",
    "priority",
    "max_attempts",
    "attempts",
    "outcome",
    "description",
    "plan",
    "reason",
    "blocked_reason",
    "lease",
    "intent",
];

/// One step of fitting a briefing to a budget of so many bytes.
type Stage = fn(&mut Draft, usize);

/// A briefing being fitted to a budget: what is kept, and what was left out.
struct Draft {
    task: Map<String, Value>,
    parent: Option<Map<String, Value>>,
    sections: Vec<(&'static str, Vec<Option<Value>>)>,
    /// Items dropped, per section.
    dropped: Map<String, Value>,
    /// Task fields cut or dropped.
    fields: Map<String, Value>,
    /// Strings cut short in the sections and the parent.
    shortened: u64,
}

impl Draft {
    fn new(core: Value, parent: Option<Value>, sections: [(&'static str, Vec<Value>); 6]) -> Draft {
        // An unset field is left out, as everywhere else in the API.
        let object = |v: Value| match v {
            Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            _ => Map::new(),
        };
        // Every item is the task's, in its workspace: those fields would only repeat it.
        let item = |v: Value| {
            let mut m = object(v);
            m.remove("workspace_id");
            m.remove("task_id");
            Some(Value::Object(m))
        };
        Draft {
            task: object(core),
            parent: parent.map(object),
            sections: sections
                .into_iter()
                .map(|(name, items)| (name, items.into_iter().map(item).collect()))
                .collect(),
            dropped: Map::new(),
            fields: Map::new(),
            shortened: 0,
        }
    }

    fn assemble(&self) -> Value {
        let mut out = json!({ "task": self.task, "parent": self.parent });
        for (name, items) in &self.sections {
            out[*name] = Value::Array(items.iter().flatten().cloned().collect());
        }
        let mut omitted = self.dropped.clone();
        omitted.extend(self.fields.clone());
        if self.shortened > 0 {
            omitted.insert("shortened".into(), json!(self.shortened));
        }
        out["truncated"] = json!(!omitted.is_empty());
        if !omitted.is_empty() {
            out["omitted"] = Value::Object(omitted);
        }
        out
    }

    fn size(&self) -> usize {
        size(&self.assemble())
    }

    /// Counts `n` more items of `section` left out.
    fn count_dropped(&mut self, section: &str, n: u64) {
        let count = self
            .dropped
            .get(section)
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + n;
        self.dropped.insert(section.to_string(), json!(count));
    }

    /// Leaves out the least relevant until the briefing's JSON is at most `max` bytes
    /// (`max` ≥ [`MIN_BRIEF_BYTES`]): long texts are cut (to 2,000, 300, then 80 bytes)
    /// between the tiers of whole items (old runs, ended children, loose relations, done
    /// steps, minor notes and artifacts; then open children, the newest run, discoveries and user
    /// input; then the steps left to do,
    /// the blocking relations, decisions and blockers), then the parent goes, then the
    /// task's optional fields, the intent last.
    fn fit(&mut self, max: usize) {
        let stages: [Stage; 9] = [
            |d, _| d.shorten(2000),
            |d, max| d.drop_items(..=7, max),
            |d, _| d.shorten(300),
            |d, max| d.drop_items(8..=10, max),
            |d, _| d.shorten(80),
            |d, max| d.drop_items(11.., max),
            |d, _| {
                if d.parent.take().is_some() {
                    d.count_dropped("parent", 1);
                }
            },
            |d, max| d.drop_fields(max),
            |d, max| d.core_only(max),
        ];
        for stage in stages {
            if self.size() <= max {
                return;
            }
            stage(self, max);
        }
    }

    /// Cuts every string of the task, the parent and the sections' items to `limit` bytes
    /// of JSON, and drops a structured field of the task (`input`, `output`…) larger than
    /// that: a value is never cut.
    fn shorten(&mut self, limit: usize) {
        let mut too_big = Vec::new();
        for (field, value) in self.task.iter_mut() {
            if field == "id" || field == "status" || field == "type" {
                continue;
            }
            match value {
                Value::String(s) => {
                    if let Some(short) = shortened(s, limit) {
                        *s = short;
                        self.fields
                            .insert(format!("task.{field}"), json!("truncated"));
                    }
                }
                // The lease is small and says who holds the task: it goes with the rest.
                Value::Object(_) | Value::Array(_) if size(value) > limit && field != "lease" => {
                    too_big.push(field.clone());
                }
                _ => {}
            }
        }
        for field in too_big {
            self.task.remove(&field);
            self.fields
                .insert(format!("task.{field}"), json!("dropped"));
        }
        let mut count = 0;
        let items = self
            .sections
            .iter_mut()
            .flat_map(|(_, items)| items.iter_mut().flatten())
            .chain(self.parent.iter_mut().flat_map(|p| p.values_mut()));
        for item in items {
            count += shorten_strings(item, limit);
        }
        self.shortened += count;
    }

    /// Drops items of the tiers in `tiers`, least relevant first, until the briefing fits.
    fn drop_items(&mut self, tiers: impl std::ops::RangeBounds<u8>, max: usize) {
        let mut order = Vec::new();
        for (s, (name, items)) in self.sections.iter().enumerate() {
            let count = items.len();
            for (i, item) in items.iter().enumerate() {
                if let Some(item) = item {
                    let (tier, rank) = drop_order(name, i, count, item);
                    if tiers.contains(&tier) {
                        order.push((tier, rank, s, i));
                    }
                }
            }
        }
        order.sort_unstable();
        let mut total = self.size();
        for (_, _, s, i) in order {
            if total <= max {
                break;
            }
            let (name, items) = &mut self.sections[s];
            let Some(item) = items[i].take() else {
                continue;
            };
            let name = *name;
            self.count_dropped(name, 1);
            total = total.saturating_sub(size(&item) + 1);
            if total <= max {
                // The estimate leaves out `omitted` growing: measure for real.
                total = self.size();
            }
        }
    }

    /// Drops the task's optional fields, least needed first, until the briefing fits.
    fn drop_fields(&mut self, max: usize) {
        for field in OPTIONAL_FIELDS {
            if self.size() <= max {
                return;
            }
            if self.task.remove(field).is_some() {
                self.fields
                    .insert(format!("task.{field}"), json!("dropped"));
            }
        }
    }

    /// The last resort: the task's id, title (cut), type, status and version, and counts.
    fn core_only(&mut self, max: usize) {
        self.task
            .retain(|k, _| matches!(k.as_str(), "id" | "title" | "type" | "status" | "version"));
        if let Some(Value::String(title)) = self.task.get_mut("title") {
            if let Some(short) = shortened(title, 80) {
                *title = short;
            }
        }
        let left: Vec<(&str, u64)> = self
            .sections
            .iter_mut()
            .map(|(name, items)| {
                let left = items.iter().flatten().count() as u64;
                items.clear();
                (*name, left)
            })
            .collect();
        for (name, left) in left.into_iter().filter(|(_, n)| *n > 0) {
            self.count_dropped(name, left);
        }
        self.fields.clear();
        self.fields.insert("task".into(), json!("core only"));
        // Counts can be long numbers: if even they do not fit, the core alone goes.
        if self.size() > max {
            self.dropped.clear();
            self.shortened = 0;
        }
    }
}

/// What ends a text cut to fit a budget.
const MARK: &str = "…[truncated]";

/// `text` cut to at most `limit` bytes of JSON with a mark that it was, or `None` when it
/// fits.
fn shortened(text: &str, limit: usize) -> Option<String> {
    if size(&json!(text)) <= limit {
        return None;
    }
    let room = limit.saturating_sub(MARK.len() + 2);
    let mut kept = String::new();
    let mut used = 0;
    // A text cut before is cut again from what was kept of it.
    for c in text.strip_suffix(MARK).unwrap_or(text).chars() {
        let mut buf = [0u8; 4];
        let width = size(&json!(c.encode_utf8(&mut buf)).to_owned()) - 2;
        if used + width > room {
            break;
        }
        used += width;
        kept.push(c);
    }
    kept.push_str(MARK);
    Some(kept)
}

/// Cuts every string in `value` to `limit` bytes of JSON; returns how many were cut. Ids,
/// statuses and times are short and never reach any limit used.
fn shorten_strings(value: &mut Value, limit: usize) -> u64 {
    match value {
        Value::String(s) => match shortened(s, limit) {
            // A text cut at an earlier stage is counted once.
            Some(short) => {
                let counted = s.ends_with(MARK);
                *s = short;
                u64::from(!counted)
            }
            None => 0,
        },
        Value::Array(items) => items.iter_mut().map(|v| shorten_strings(v, limit)).sum(),
        Value::Object(map) => map.values_mut().map(|v| shorten_strings(v, limit)).sum(),
        _ => 0,
    }
}

fn typed(brief: Value) -> Result<BriefOut> {
    serde_json::from_value(brief)
        .map(|brief| BriefOut { brief })
        .map_err(|e| Error::new(crate::Code::Internal, format!("brief: {e}"), ""))
}
