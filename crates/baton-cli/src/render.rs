//! Human-readable output: one line per task, claim or event; anything else as indented JSON.

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

/// Prints a response for a person.
pub(crate) fn human(value: &Value) {
    if let Some(task) = value
        .get("task")
        .filter(|_| value.as_object().is_some_and(|o| o.len() <= 2))
    {
        say!("{}", task_line(task));
        if let Some(signals) = value.get("signals").and_then(|v| v.as_array()) {
            if !signals.is_empty() {
                say!(
                    "signals: {}",
                    signals
                        .iter()
                        .filter_map(|v| v.as_str().map(line))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
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
    say!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
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
}
