//! The `query` tool's named queries, each built from the HTTP API's list and event routes.

use crate::gateway::Via;
use crate::server::{compact, enc, no_more, opt_str, BatonMcp};
use baton_core::time::{format_rfc3339, Duration};
use baton_core::Error;
use serde_json::{json, Map, Value};

/// Runs the named query in `args`.
pub(crate) async fn run(
    mcp: &BatonMcp,
    mut args: Map<String, Value>,
    detail: bool,
    via: Via<'_>,
) -> Result<Value, Error> {
    let name = opt_str(&mut args, "name")?.unwrap_or_default();
    // Only the queries about a task take one; the others refuse it as an unknown argument.
    let task = match name.as_str() {
        "tasks" | "children_of" | "descendants_of" | "ancestors_of" => {
            opt_str(&mut args, "task_id")?
        }
        _ => None,
    };
    let limit = match args.remove("limit") {
        None | Some(Value::Null) => 50,
        Some(Value::Number(n)) if n.is_u64() => {
            let n = n.as_u64().unwrap_or_default();
            u64::from(baton_core::ops::check_limit(
                "limit",
                u32::try_from(n).unwrap_or(u32::MAX),
            )?)
        }
        Some(_) => {
            return Err(Error::invalid(
                "limit must be an integer from 1 to 1000",
                "e.g. 50",
            ))
        }
    };
    let need_task = || {
        task.clone()
            .ok_or_else(|| Error::invalid(format!("query {name} needs task_id"), "pass task_id"))
    };
    let tasks = |v: Value| shape_tasks(v, detail);
    let out = match name.as_str() {
        "ready" => {
            no_more(&args)?;
            tasks(mcp.get(&format!("/v1/tasks/ready?limit={limit}"), via).await?)
        }
        "tasks" | "blocked" | "children_of" => {
            let mut q = format!("limit={limit}");
            let status = if name == "blocked" { Some("blocked".to_string()) } else { opt_str(&mut args, "status")? };
            if let Some(s) = status {
                q.push_str(&format!("&status={}", enc(&s)));
            }
            if let Some(l) = opt_str(&mut args, "label")? {
                q.push_str(&format!("&label={}", enc(&l)));
            }
            if let Some(c) = opt_str(&mut args, "cursor")? {
                q.push_str(&format!("&cursor={}", enc(&c)));
            }
            let parent = if name == "children_of" { Some(need_task()?) } else { task.clone() };
            if let Some(p) = &parent {
                mcp.get(&format!("/v1/tasks/{}", enc(p)), via).await?;
            }
            if let Some(p) = parent {
                q.push_str(&format!("&parent={}", enc(&p)));
            }
            no_more(&args)?;
            tasks(mcp.get(&format!("/v1/tasks?{q}"), via).await?)
        }
        "descendants_of" => {
            no_more(&args)?;
            let root = need_task()?;
            // As ancestors_of: a task that is not there is NOT_FOUND, not an empty list.
            mcp.get(&format!("/v1/tasks/{}", enc(&root)), via).await?;
            let mut found = Vec::new();
            let mut frontier = vec![root];
            while let Some(parent) = frontier.pop() {
                let page = mcp.get(&format!("/v1/tasks?parent={}&limit=1000", enc(&parent)), via).await?;
                for t in page["tasks"].as_array().cloned().unwrap_or_default() {
                    if found.len() as u64 >= limit {
                        break;
                    }
                    frontier.push(t["id"].as_str().unwrap_or_default().to_string());
                    found.push(t);
                }
            }
            tasks(json!({ "tasks": found }))
        }
        "ancestors_of" => {
            no_more(&args)?;
            let mut found = Vec::new();
            let mut next = mcp.get(&format!("/v1/tasks/{}", enc(&need_task()?)), via).await?["task"]["parent_id"].clone();
            while let Some(id) = next.as_str().map(str::to_string) {
                if found.len() as u64 >= limit {
                    break;
                }
                let t = mcp.get(&format!("/v1/tasks/{}", enc(&id)), via).await?["task"].clone();
                next = t["parent_id"].clone();
                found.push(t);
            }
            tasks(json!({ "tasks": found }))
        }
        "stale" => {
            let older = opt_str(&mut args, "older_than")?.unwrap_or_else(|| "1h".into());
            no_more(&args)?;
            let age = Duration::parse(&older)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let cutoff = format_rfc3339(now - age.ms());
            let mut found = Vec::new();
            for status in ["claimed", "in_progress", "waiting", "blocked", "review", "ready"] {
                let page = mcp.get(&format!("/v1/tasks?status={status}&limit=1000"), via).await?;
                for t in page["tasks"].as_array().cloned().unwrap_or_default() {
                    // Timestamps share one fixed UTC format, so they compare as text.
                    if t["updated_at"].as_str().is_some_and(|u| u < cutoff.as_str()) && (found.len() as u64) < limit {
                        found.push(t);
                    }
                }
            }
            tasks(json!({ "tasks": found }))
        }
        "recent_activity" | "events_since" => {
            // recent_activity is the newest events: it takes no after (left for no_more).
            let after = match (name == "events_since").then(|| args.remove("after")).flatten() {
                None | Some(Value::Null) => 0,
                Some(Value::Number(n)) if n.is_u64() => n.as_u64().unwrap_or(0),
                Some(_) => {
                    return Err(Error::invalid(
                        "after must be a whole number of 0 or more",
                        "pass the sequence number of the last event you saw (0 for the start)",
                    ))
                }
            };
            no_more(&args)?;
            let path = if name == "recent_activity" {
                format!("/v1/events?last={limit}")
            } else {
                format!("/v1/events?after={after}&limit={limit}")
            };
            let mut out = mcp.get(&path, via).await?;
            if !detail {
                if let Some(events) = out["events"].as_array_mut() {
                    for e in events.iter_mut() {
                        *e = json!({"seq": e["seq"], "type": e["type"], "task_id": e["task_id"], "actor": e["actor"], "at": e["at"]});
                    }
                }
            }
            out
        }
        other => {
            return Err(Error::invalid(
                format!("unknown query '{other}'"),
                "use ready, tasks, children_of, descendants_of, ancestors_of, blocked, stale, recent_activity or events_since",
            ))
        }
    };
    Ok(out)
}

fn shape_tasks(mut v: Value, detail: bool) -> Value {
    if !detail {
        if let Some(tasks) = v["tasks"].as_array_mut() {
            for t in tasks.iter_mut() {
                *t = compact(t);
            }
        }
    }
    v
}
