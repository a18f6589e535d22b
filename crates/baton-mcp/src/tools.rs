//! The tool list: few general verbs with enums, one or two sentences each, small schemas.
//! It sits in every agent's context window, so its size is a budget (a test holds it under
//! 12,000 bytes of JSON).

use serde_json::{json, Value};

/// A tool's name, description and input schema.
pub(crate) struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn id() -> Value {
    json!({"type": "string", "description": "tsk_…"})
}

fn lease() -> Value {
    json!({"type": "string", "description": "Lease token; omit to use the one this server got from your claim"})
}

/// Every tool, in the order they are listed.
pub(crate) fn all() -> Vec<ToolDef> {
    let task_fields = json!({
        "title": {"type": "string"},
        "intent": {"type": "string", "description": "Why it exists (immutable)"},
        "description": {"type": "string"},
        "plan": {"type": "string"},
        "type": {"type": "string", "description": "task, epic, feature, bug, investigation, chore…"},
        "parent_id": {"type": "string"},
        "priority": {"type": "integer", "default": 0},
        "blocked_by": {"type": "array", "items": {"type": "string"}},
        "required_capabilities": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "array", "items": {"type": "string"}},
        "paths": {"type": "array", "items": {"type": "string"}, "description": "Files it will touch, as globs: a claim warns of overlap"},
        "concurrency_key": {"type": "string", "description": "At most concurrency_limit tasks with this key leased at once"},
        "concurrency_limit": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1},
        "input": {},
        "output_schema": {"type": "object"},
        "lease_ttl": {"type": "string", "description": "e.g. 5m"},
        "timeout": {"type": "string", "description": "The longest one attempt may run, e.g. 2h"},
        "max_attempts": {"type": "integer", "minimum": 1},
        "due_at": {"type": "string", "description": "Deadline, RFC 3339"},
        "budget": {"type": "object", "description": "{\"max_cost\": N}: heartbeats signal budget_warning near it, budget_exhausted past it"},
        "review_required": {"type": "boolean"},
        "draft": {"type": "boolean", "default": false}
    });
    let mut update_fields = task_fields.clone();
    let u = update_fields.as_object_mut().expect("an object");
    for k in ["intent", "parent_id", "blocked_by", "draft"] {
        u.remove(k);
    }
    // null clears what a task may be without (PATCH's merge-patch reading).
    for k in [
        "description",
        "plan",
        "due_at",
        "timeout",
        "input",
        "output_schema",
        "budget",
        "labels",
        "paths",
        "concurrency_key",
        "required_capabilities",
    ] {
        let field = u[k].as_object_mut().expect("an object");
        if let Some(kind) = field.get("type").cloned() {
            field.insert("type".into(), json!([kind, "null"]));
        }
    }
    u.insert("task_id".into(), id());
    u.insert(
        "action".into(),
        json!({"enum": ["update", "publish", "start", "wait", "resume", "block", "unblock", "cancel", "retry", "approve", "reject"], "default": "update"}),
    );
    u.insert(
        "concurrency_limit".into(),
        json!({"type": "integer", "minimum": 1}),
    );
    u.insert("reason".into(), json!({"type": "string"}));
    u.insert(
        "version".into(),
        json!({"type": "integer", "description": "Fail with VERSION_CONFLICT unless the task is at this version"}),
    );
    u.insert("lease".into(), lease());
    let mut tools = vec![
        ToolDef {
            name: "task_create",
            description: "Create a task. It is claimable at once unless blocked_by tasks are open or draft is set.",
            schema: obj(&["title"], task_fields),
        },
        ToolDef {
            name: "task_get",
            description: "Read a task (compact; detail=true for every field; as_of=SEQ: as it stood at that event).",
            schema: obj(&["task_id"], json!({"task_id": id(), "detail": {"type": "boolean", "default": false}, "as_of": {"type": "integer", "minimum": 0}})),
        },
        ToolDef {
            name: "task_update",
            description: "Change a task's fields (action=update: only those given change; null clears an optional one, a concurrency_key with its limit), or move it through the state machine with another action.",
            schema: obj(&["task_id"], update_fields),
        },
        ToolDef {
            name: "task_brief",
            description: "Everything needed to pick a task up: intent, plan, steps, decisions, discoveries, dependencies, children, runs. Read it before working on a task.",
            schema: obj(&["task_id"], json!({"task_id": id(), "max_bytes": {"type": "integer", "minimum": 512}})),
        },
        ToolDef {
            name: "plan_apply",
            description: "Create a task tree in one call: tasks with ref, title, blocked_by (refs), context, steps and children. Re-applying updates only what changed.",
            schema: obj(&["tasks"], json!({
                "name": {"type": "string", "default": "plan"},
                "project": {"type": "string"},
                "tasks": {"type": "array", "items": {"type": "object", "required": ["ref", "title"], "properties": {"ref": {"type": "string"}, "title": {"type": "string"}}}}
            })),
        },
        ToolDef {
            name: "claim",
            description: "Claim your next task(s), highest priority first. Returns claims with the task and lease; empty when nothing is ready (wait long-polls).",
            schema: obj(&[], json!({
                "capabilities": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "integer", "default": 1, "minimum": 1, "maximum": 100},
                "wait": {"type": "string", "description": "Wait up to this long for work, e.g. 30s (max 60s)"},
                "lease_ttl": {"type": "string"}
            })),
        },
        ToolDef {
            name: "heartbeat",
            description: "Extend your lease and report progress. Act on the returned signals; KILLED or LEASE_LOST: stop.",
            schema: obj(&["task_id"], json!({
                "task_id": id(), "lease": lease(),
                "progress": {"type": "number", "minimum": 0, "maximum": 1},
                "message": {"type": "string"},
                "usage": {"type": "object", "description": "this run's totals so far, e.g. {\"cost\": 0.12, \"tokens_in\": 900}"}
            })),
        },
        ToolDef {
            name: "complete",
            description: "Finish your task with its output and a one-line outcome.",
            schema: obj(&["task_id"], json!({"task_id": id(), "lease": lease(), "output": {}, "outcome": {"type": "string"}, "force": {"type": "boolean", "description": "complete despite open children"}})),
        },
        ToolDef {
            name: "fail",
            description: "Report that your task failed; it is retried while attempts remain unless the class is permanent.",
            schema: obj(&["task_id", "error"], json!({
                "task_id": id(), "lease": lease(), "error": {"type": "string"},
                "class": {"enum": ["transient", "timeout", "resource", "permanent", "invalid_input"], "default": "transient"}
            })),
        },
        ToolDef {
            name: "release",
            description: "Give your task back to the queue unfinished (no attempt used).",
            schema: obj(&["task_id"], json!({"task_id": id(), "lease": lease()})),
        },
        ToolDef {
            name: "context_add",
            description: "Record knowledge on a task for whoever works on it next. supersedes replaces an older entry.",
            schema: obj(&["task_id", "type", "content"], json!({
                "task_id": id(),
                "type": {"enum": ["decision", "rationale", "discovery", "attempt", "outcome", "blocker", "note", "reference", "user_input"]},
                "content": {"type": "string"}, "supersedes": {"type": "string"}
            })),
        },
        ToolDef {
            name: "steps",
            description: "Add a step to a task's plan, or mark one done.",
            schema: obj(&["task_id", "action"], json!({
                "task_id": id(), "action": {"enum": ["add", "done"]},
                "title": {"type": "string"}, "details": {"type": "string"},
                "step_id": {"type": "string", "description": "done: the step's id (stp_…) or its position (1 for the first)"},
                "notes": {"type": "string"}
            })),
        },
        ToolDef {
            name: "artifacts",
            description: "Attach a file to a task (content as text, or content_base64; up to 2 MiB), list a task's files, or get one with its bytes.",
            schema: obj(&["action"], json!({
                "action": {"enum": ["add", "list", "get"]},
                "task_id": id(), "name": {"type": "string"}, "media_type": {"type": "string"},
                "content": {"type": "string"}, "content_base64": {"type": "string"},
                "artifact_id": {"type": "string", "description": "get: art_…"}
            })),
        },
        ToolDef {
            name: "deps",
            description: "Add or remove a dependency: task_id waits for blocker_id (kind blocks), or a soft link.",
            schema: obj(&["task_id", "action", "blocker_id"], json!({
                "task_id": id(), "action": {"enum": ["add", "remove"]}, "blocker_id": {"type": "string"},
                "kind": {"enum": ["blocks", "relates_to", "discovered_from"], "default": "blocks"}
            })),
        },
        ToolDef {
            name: "query",
            description: "Named queries over tasks and events (compact; detail=true for every field).",
            schema: obj(&["name"], json!({
                "name": {"enum": ["ready", "tasks", "children_of", "descendants_of", "ancestors_of", "blocked", "stale", "recent_activity", "events_since"]},
                "task_id": {"type": "string", "description": "For children_of, descendants_of, ancestors_of"},
                "status": {"type": "string", "description": "For tasks, children_of"},
                "label": {"type": "string", "description": "For tasks, blocked, children_of"},
                "after": {"type": "integer", "description": "events_since: sequence number"},
                "older_than": {"type": "string", "default": "1h", "description": "stale: unchanged for this long"},
                "limit": {"type": "integer", "default": 50, "maximum": 1000},
                "cursor": {"type": "string", "description": "For tasks, blocked, children_of: next_cursor of the previous page (ready has none: it answers the first tasks in claim order)"},
                "detail": {"type": "boolean", "default": false}
            })),
        },
    ];
    for tool in &mut tools {
        if !READ_ONLY.contains(&tool.name) {
            tool.schema["properties"]["idempotency_key"] = json!({
                "type": "string",
                "maxLength": MAX_IDEMPOTENCY_KEY,
                "description": "A UUID: a call repeated with it is answered as before"
            });
        }
    }
    tools
}

/// The tools that only read: they take no idempotency key.
const READ_ONLY: [&str; 3] = ["task_get", "task_brief", "query"];

/// The longest idempotency key a tool call takes: a call's first write is sent under the
/// key, any later one under the key and `/N`, within the API's 200.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 180;
