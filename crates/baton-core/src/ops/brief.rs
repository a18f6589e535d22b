//! The briefing (DESIGN §6): everything another agent needs to pick a task up from where it
//! stands, in one response, most relevant first, within an optional size budget.

use super::Ctx;
use crate::api::BriefOut;
use crate::error::{Error, Result};
use crate::model::*;
use serde_json::{json, Map, Value};

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
    let mut core = json!({
        "id": task.id, "title": task.title, "type": task.kind, "status": task.status,
        "blocked_reason": task.blocked_reason, "reason": task.reason,
        "intent": task.intent, "description": task.description, "plan": task.plan,
        "priority": task.priority, "due_at": task.due_at.map(crate::time::format_rfc3339),
        "labels": task.labels, "required_capabilities": task.required_capabilities,
        "attempts": task.attempts, "max_attempts": task.retry_policy.max_attempts,
        "version": task.version, "input": task.input, "output_schema": task.output_schema,
        "output": task.output, "outcome": task.outcome,
        "lease": task.view().lease,
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
    let filter = crate::store::TaskFilter {
        parent_id: Some(id.to_string()),
        limit: 1000,
        ..Default::default()
    };
    let children: Vec<Value> = ctx
        .tx
        .list_tasks(ws, &filter)?
        .iter()
        .map(summary)
        .collect();
    let runs: Vec<Value> = ctx
        .tx
        .runs_of(ws, id, 3)?
        .into_iter()
        .map(|r| {
            json!({ "id": r.id, "attempt": r.attempt, "agent_id": r.agent_id, "status": r.status,
                    "progress": r.progress, "message": r.message, "error": r.error, "error_class": r.error_class,
                    "started_at": crate::time::format_rfc3339(r.started_at), "ended_at": r.ended_at.map(crate::time::format_rfc3339) })
        })
        .collect();

    // Sections from most to least relevant; trimming takes from the end.
    let mut sections: Vec<(&str, Vec<Value>)> = vec![
        ("steps", steps),
        ("context", context),
        ("dependencies", deps),
        ("children", children),
        ("runs", runs),
    ];
    let assemble = |core: &Value, sections: &[(&str, Vec<Value>)], omitted: &Map<String, Value>| {
        let mut out = json!({ "task": core, "parent": parent, "artifacts": [] });
        for (name, items) in sections {
            out[*name] = Value::Array(items.clone());
        }
        out["truncated"] = json!(!omitted.is_empty());
        if !omitted.is_empty() {
            out["omitted"] = Value::Object(omitted.clone());
        }
        out
    };
    let mut omitted = Map::new();
    let mut out = assemble(&core, &sections, &omitted);
    let Some(max) = max_bytes else {
        return typed(out);
    };
    let mut total = size(&out);
    // Drop whole items from the least relevant end first.
    while total > max {
        let Some((name, items)) = sections
            .iter_mut()
            .rev()
            .find(|(_, items)| !items.is_empty())
        else {
            break;
        };
        let item = items.pop().unwrap_or(Value::Null);
        total = total.saturating_sub(size(&item) + 1);
        let count = omitted.get(*name).and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        omitted.insert(name.to_string(), json!(count));
        if total <= max {
            // The running estimate ignores the `omitted` map: measure for real.
            out = assemble(&core, &sections, &omitted);
            total = size(&out);
        }
    }
    out = assemble(&core, &sections, &omitted);
    total = size(&out);
    // Still too big: shorten, then drop, the long or optional fields of the task itself.
    for field in [
        "plan",
        "description",
        "input",
        "output",
        "output_schema",
        "intent",
        "lease",
        "labels",
        "required_capabilities",
        "reason",
    ] {
        if total <= max {
            break;
        }
        if core[field].is_null() {
            continue;
        }
        let text = match &core[field] {
            Value::String(s) => s.clone(),
            _ => String::new(), // structured values are dropped whole, never cut
        };
        let keep = text.len().saturating_sub(total - max + 32);
        let mut cut = keep;
        while cut > 0 && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        core[field] = if cut == 0 {
            Value::Null
        } else {
            json!(format!("{}…[truncated]", &text[..cut]))
        };
        omitted.insert(
            format!("task.{field}"),
            json!(if cut == 0 { "dropped" } else { "truncated" }),
        );
        out = assemble(&core, &sections, &omitted);
        total = size(&out);
    }
    typed(out)
}

fn typed(brief: Value) -> Result<BriefOut> {
    serde_json::from_value(brief)
        .map(|brief| BriefOut { brief })
        .map_err(|e| Error::new(crate::Code::Internal, format!("brief: {e}"), ""))
}
