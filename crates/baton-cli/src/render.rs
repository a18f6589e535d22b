//! Human-readable output: one line per task, claim, event, step or note, a briefing as
//! sections; anything else as indented JSON.

use serde_json::Value;
use std::borrow::Cow;

/// The string field `key` of `v`, fit for one line of a terminal.
fn s<'a>(v: &'a Value, key: &str) -> Cow<'a, str> {
    line(v.get(key).and_then(|x| x.as_str()).unwrap_or(""))
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a newline or a terminal
/// escape sequence stored in a field must not forge or garble the lines around it.
fn line(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

fn task_line(t: &Value) -> String {
    format!(
        "{}  {:<11}  v{:<3} p{:<3} {}",
        s(t, "id"),
        s(t, "status"),
        t["version"].as_u64().unwrap_or(0),
        t["priority"].as_i64().unwrap_or(0),
        s(t, "title")
    )
}

/// A project, agent or workspace on one line: id, name, and what a supervisor looks for
/// (a kill switch, an agent's status, capabilities and limit).
fn entity_line(kind: &str, e: &Value) -> String {
    let state = match kind {
        "agent" => {
            let caps: Vec<&str> = e["capabilities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .collect();
            let max = e["max_concurrency"]
                .as_u64()
                .map(|m| format!("  at most {m} leases"));
            format!(
                "{}  [{}]{}",
                s(e, "status"),
                line(&caps.join(", ")),
                max.unwrap_or_default()
            )
        }
        _ if e["killed"] == true => "killed".to_string(),
        _ => "live".to_string(),
    };
    format!("{}  {:<20} {}", s(e, "id"), s(e, "name"), state)
}

/// An artifact: id, size, media type and name.
fn artifact_line(a: &Value) -> String {
    format!(
        "{}  {:>9} B  {:<24} {}",
        s(a, "id"),
        a["size"].as_u64().unwrap_or(0),
        s(a, "media_type"),
        s(a, "name")
    )
}

/// A related task (parent, dependency, child): its id, status and title.
fn summary_line(t: &Value) -> String {
    format!("{}  {:<11}  {}", s(t, "id"), s(t, "status"), s(t, "title"))
}

/// `text` as an indented block: its own lines kept, every other control character escaped.
fn block(text: &str) -> String {
    text.split('\n')
        .map(|l| format!("  {}", line(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A briefing for a person: the task, then each section that has something, in the
/// order an agent reads them.
fn brief_text(b: &Value) -> String {
    let t = &b["task"];
    let mut out = vec![task_line(t)];
    for field in ["intent", "description", "plan", "reason", "outcome"] {
        if let Some(text) = t[field].as_str() {
            out.push(format!("{field}:\n{}", block(text)));
        }
    }
    if let Some(lease) = t.get("lease").filter(|l| l.is_object()) {
        out.push(format!(
            "lease: epoch {}, agent {}, expires {}",
            lease["epoch"],
            s(lease, "agent_id"),
            s(lease, "expires_at")
        ));
    }
    if let Some(p) = b.get("parent").filter(|p| p.is_object()) {
        out.push(format!("parent: {}", summary_line(p)));
        if let Some(intent) = p["intent"].as_str() {
            out.push(block(intent));
        }
    }
    let section = |name: &str, row: &dyn Fn(&Value) -> String| -> Option<String> {
        let items = b[name].as_array().filter(|i| !i.is_empty())?;
        let rows: Vec<String> = items.iter().map(|i| format!("  {}", row(i))).collect();
        Some(format!("{name}:\n{}", rows.join("\n")))
    };
    let sections = [
        section("steps", &|st| {
            let mark = if st["done"] == true { "x" } else { " " };
            let notes = st["notes"].as_str().map(|n| format!(" — {}", line(n)));
            let id = st["id"].as_str().map(|i| format!(" ({i})"));
            format!(
                "[{mark}] {}. {}{}{}",
                st["position"],
                s(st, "title"),
                id.unwrap_or_default(),
                notes.unwrap_or_default()
            )
        }),
        section("context", &|c| {
            format!(
                "{:<10} {} ({}, {})",
                s(c, "type"),
                line(c["content"].as_str().unwrap_or("")),
                s(c, "by"),
                s(c, "at")
            )
        }),
        section("dependencies", &|d| {
            format!("{:<15} {}", s(d, "relation"), summary_line(d))
        }),
        section("children", &summary_line),
        section("runs", &|r| {
            let error = r["error"].as_str().map(|e| format!("  error: {}", line(e)));
            format!(
                "attempt {} {:<9} agent {}  started {}{}",
                r["attempt"],
                s(r, "status"),
                s(r, "agent_id"),
                s(r, "started_at"),
                error.unwrap_or_default()
            )
        }),
        section("artifacts", &|a| {
            format!("{} ({}, {})", artifact_line(a), s(a, "by"), s(a, "at"))
        }),
    ];
    out.extend(sections.into_iter().flatten());
    if let Some(omitted) = b["omitted"].as_object() {
        let what: Vec<String> = omitted
            .iter()
            .map(|(k, v)| match v {
                Value::String(how) => format!("{} {}", line(k), line(how)),
                other => format!("{} {other}", line(k)),
            })
            .collect();
        out.push(format!("left out to fit: {}", what.join(", ")));
    }
    out.join("\n")
}

/// Prints a response for a person.
pub(crate) fn human(value: &Value) {
    if let Some(brief) = value.get("brief").filter(|b| b.is_object()) {
        say!("{}", brief_text(brief));
        return;
    }
    if let Some(step) = value.get("step").filter(|st| st.is_object()) {
        let mark = if step["done"] == true { "x" } else { " " };
        say!(
            "{}  [{mark}] {}. {}",
            s(step, "id"),
            step["position"],
            s(step, "title")
        );
        return;
    }
    if let Some(a) = value.get("artifact").filter(|a| a.is_object()) {
        say!("{}", artifact_line(a));
        return;
    }
    if let Some(list) = value
        .get("artifacts")
        .filter(|_| value.get("task").is_none())
    {
        for a in list.as_array().into_iter().flatten() {
            say!("{}", artifact_line(a));
        }
        return;
    }
    if let Some(entry) = value.get("context").filter(|c| c.is_object()) {
        say!(
            "{}  {} on {}",
            s(entry, "id"),
            s(entry, "type"),
            s(entry, "task_id")
        );
        return;
    }
    // A heartbeat's answer: what to act on first, then the lease.
    if let (Some(task), Some(signals)) = (
        value.get("task"),
        value.get("signals").and_then(|v| v.as_array()),
    ) {
        let signals: Vec<_> = signals
            .iter()
            .filter_map(|v| v.as_str().map(line))
            .collect();
        if signals.is_empty() {
            say!("signals: none");
        } else {
            say!("signals: {}", signals.join(", "));
        }
        say!("lease until {}", s(value, "expires_at"));
        say!("{}", task_line(task));
        return;
    }
    // One project, agent or workspace: its line.
    for kind in ["project", "agent", "workspace"] {
        if let Some(one) = value
            .get(kind)
            .filter(|_| value.as_object().is_some_and(|o| o.len() == 1))
        {
            say!("{}", entity_line(kind, one));
            return;
        }
    }
    if let Some(many) = ["projects", "agents"]
        .iter()
        .find_map(|k| value.get(*k).and_then(|v| v.as_array()).map(|v| (*k, v)))
    {
        let kind = &many.0[..many.0.len() - 1];
        for one in many.1 {
            say!("{}", entity_line(kind, one));
        }
        return;
    }
    // A plan applied: the counts, then each task with what was done to it.
    if let (Some(created), Some(tasks)) = (
        value.get("created"),
        value.get("tasks").and_then(|v| v.as_array()),
    ) {
        say!(
            "plan: {} created, {} updated, {} unchanged",
            created,
            value["updated"],
            value["unchanged"]
        );
        for t in tasks {
            say!(
                "  {:<16} {:<9} {}",
                s(t, "ref"),
                s(t, "result"),
                task_line(&t["task"])
            );
            for w in t
                .get("warnings")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                say!("  {:<16} warning: {}", "", line(w.as_str().unwrap_or("")));
            }
        }
        return;
    }
    if let Some(task) = value
        .get("task")
        .filter(|_| value.as_object().is_some_and(|o| o.len() <= 2))
    {
        say!("{}", task_line(task));
        for w in value
            .get("warnings")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            say!("warning: {}", line(w.as_str().unwrap_or("")));
        }
        return;
    }
    if let Some(tasks) = value
        .get("tasks")
        .and_then(|v| v.as_array())
        .filter(|_| value.get("created").is_none())
    {
        if tasks.is_empty() {
            say!("(no tasks)");
        }
        for t in tasks {
            say!("{}", task_line(t));
        }
        if let Some(c) = value.get("next_cursor").and_then(|v| v.as_str()) {
            say!("(more: --after {})", line(c));
        }
        return;
    }
    if let Some(claims) = value.get("claims").and_then(|v| v.as_array()) {
        if claims.is_empty() {
            say!("(nothing claimable)");
        }
        for c in claims {
            say!("claimed {}", task_line(&c["task"]));
            say!(
                "  lease {}  epoch {}  expires {}",
                s(&c["lease"], "token"),
                c["lease"]["epoch"],
                s(&c["lease"], "expires_at")
            );
        }
        return;
    }
    if let Some(events) = value.get("events").and_then(|v| v.as_array()) {
        for e in events {
            say!(
                "{:>6}  {}  {:<24} {:<10} {}",
                e["seq"],
                s(e, "at"),
                s(e, "type"),
                s(e, "actor"),
                s(e, "task_id")
            );
        }
        return;
    }
    // JSON escapes C0 controls but not DEL nor C1 (U+0080 to U+009F, a CSI among them):
    // those are escaped here, its own line breaks kept.
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    say!(
        "{}",
        pretty.split('\n').map(line).collect::<Vec<_>>().join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored field with a newline or a terminal escape prints as one inert line; others
    /// print as they are.
    #[test]
    fn control_characters_print_escaped() {
        assert_eq!(line("plain \"quoted\" ü"), "plain \"quoted\" ü");
        assert_eq!(line("evil\u{1b}[2J\nfake"), "evil\\u{1b}[2J\\nfake");
        let task = serde_json::json!({"id": "tsk_1", "status": "ready", "title": "a\rb"});
        assert!(task_line(&task).ends_with("a\\rb"), "{}", task_line(&task));
    }

    /// A briefing prints as text: the task's line, its texts as indented blocks (their own
    /// lines kept, escapes made inert), then each non-empty section and what was left out.
    #[test]
    fn a_briefing_prints_as_sections() {
        let brief = serde_json::json!({
            "task": {"id": "tsk_1", "status": "in_progress", "version": 4, "priority": 0,
                     "title": "Parse plans", "intent": "Plans as files\nso agents \u{1b}[2J share them",
                     "lease": {"epoch": 2, "agent_id": "agt_1", "expires_at": "2026-11-26T06:00:00Z"}},
            "parent": null,
            "steps": [{"id": "stp_1", "position": 1, "title": "read YAML", "done": true},
                      {"position": 2, "title": "report errors", "done": false}],
            "context": [{"type": "decision", "content": "use serde_yaml", "by": "w1", "at": "t"}],
            "dependencies": [], "children": [], "runs": [], "artifacts": [],
            "truncated": true, "omitted": {"context": 2, "task.plan": "truncated"}
        });
        let text = brief_text(&brief);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("tsk_1  in_progress"), "{text}");
        assert_eq!(lines[1], "intent:");
        assert_eq!(lines[2], "  Plans as files");
        assert_eq!(lines[3], "  so agents \\u{1b}[2J share them");
        assert!(
            lines[4].starts_with("lease: epoch 2, agent agt_1"),
            "{text}"
        );
        assert_eq!(lines[5], "steps:");
        assert_eq!(lines[6], "  [x] 1. read YAML (stp_1)");
        assert_eq!(lines[7], "  [ ] 2. report errors");
        assert_eq!(lines[8], "context:");
        assert!(lines[9].contains("decision") && lines[9].contains("use serde_yaml"));
        assert_eq!(lines[10], "left out to fit: context 2, task.plan truncated");
        assert_eq!(lines.len(), 11, "{text}");
    }
}
