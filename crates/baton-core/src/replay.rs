//! Replay (DESIGN §1, §7): the event log is the source of truth. Every event carries the
//! state of each entity it touched after the change, so applying the log in order to an
//! empty store rebuilds every projection; comparing that with the live store proves that no
//! write bypassed the log and that the log lost nothing.

use crate::error::{Code, Error, Result};
use crate::model::*;
use crate::store::{NewEvent, Store, Tx};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

fn decode<T: DeserializeOwned>(event: &Event, key: &str, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("event {} ({}) has a bad {key}: {e}", event.seq, event.kind),
            "the log is damaged",
        )
    })
}

/// Applies one event to a store being rebuilt: its projections, then the event itself, which
/// must land at the same sequence number.
pub fn apply(tx: &mut dyn Tx, event: &Event) -> Result<()> {
    let Value::Object(data) = &event.data else {
        return Ok(());
    };
    // The workspace row must exist before its first event can be numbered.
    if let Some(v) = data.get("workspace") {
        tx.put_workspace(&decode(event, "workspace", v)?)?;
    }
    let data_text = event.data.to_string();
    tx.append_event(NewEvent {
        workspace_id: &event.workspace_id,
        kind: &event.kind,
        at: event.at,
        actor: &event.actor,
        task_id: event.task_id.as_deref(),
        data: &data_text,
        request_id: event.request_id.as_deref(),
    })?;
    let seq = tx.last_seq(&event.workspace_id)?;
    if seq != event.seq {
        return Err(Error::new(
            Code::Internal,
            format!("event {} replayed as {seq}: the log has a gap", event.seq),
            "the event log is damaged",
        ));
    }
    for (key, v) in data {
        let items: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            Value::Null => vec![],
            other => vec![other],
        };
        for item in items {
            match key.as_str() {
                "project" => tx.put_project(&decode(event, key, item)?)?,
                "agent" => tx.put_agent(&decode(event, key, item)?)?,
                "key" => tx.put_key(&decode(event, key, item)?)?,
                "task" | "tasks" => {
                    let task: Task = decode(event, key, item)?;
                    let body = serde_json::to_string(&task)
                        .map_err(|e| Error::new(Code::Internal, e.to_string(), ""))?;
                    tx.put_task(&task, &body)?
                }
                "run" | "runs" => tx.put_run(&decode(event, key, item)?)?,
                "context" => tx.put_context(&decode(event, key, item)?)?,
                "step" => tx.put_step(&decode(event, key, item)?)?,
                "artifact" => tx.put_artifact(&decode(event, key, item)?)?,
                "dependency" | "dependencies" => {
                    let dep: Dependency = decode(event, key, item)?;
                    if event.kind == "dependency.removed" {
                        tx.delete_dep(
                            &dep.workspace_id,
                            &dep.blocker_id,
                            &dep.blocked_id,
                            dep.kind,
                        )?;
                    } else {
                        tx.put_dep(&dep)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The first row where two projection dumps differ, described for a person; `None` if equal.
pub fn first_difference(live: &[(String, String)], rebuilt: &[(String, String)]) -> Option<String> {
    let mut a = live.iter();
    let mut b = rebuilt.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (Some((k, _)), None) => {
                return Some(format!("{k}: present live, missing after replay"))
            }
            (None, Some((k, _))) => {
                return Some(format!("{k}: missing live, present after replay"))
            }
            (Some((ka, va)), Some((kb, vb))) => {
                if ka != kb {
                    let (first, which) = if ka < kb {
                        (ka, "missing after replay")
                    } else {
                        (kb, "missing live")
                    };
                    return Some(format!("{first}: {which}"));
                }
                if va != vb {
                    return Some(format!("{ka}: differs\n  live:     {va}\n  replayed: {vb}"));
                }
            }
        }
    }
}

/// The outcome of a verified replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Events replayed.
    pub events: usize,
    /// Live projection rows compared.
    pub rows: usize,
    /// The first row that differs, if any.
    pub difference: Option<String>,
}

/// Replays the whole log of `live` into the empty store `scratch` and compares their
/// projections. The log and the live rows are read in one read transaction, so they are one
/// consistent snapshot even while writers go on.
pub async fn verify(live: &dyn Store, scratch: Arc<dyn Store>) -> Result<Verification> {
    let mut snapshot = None;
    live.read(&mut |tx| {
        let mut events = Vec::new();
        for ws in tx.workspaces()? {
            let mut after = 0;
            loop {
                let page = tx.events(&ws.id, after, 10_000)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                events.extend(page);
            }
        }
        snapshot = Some((events, tx.projection_rows()?));
        Ok(())
    })?;
    let (events, live_rows) =
        snapshot.ok_or_else(|| Error::new(Code::Internal, "live store was not read", ""))?;
    let rebuilder = crate::Baton::new(scratch.clone(), Arc::new(crate::time::SystemClock));
    for chunk in events.chunks(2_000) {
        let chunk = chunk.to_vec();
        rebuilder
            .write_tx(move |tx| {
                for event in &chunk {
                    apply(tx, event)?;
                }
                Ok(())
            })
            .await?;
    }
    let mut rebuilt = Vec::new();
    scratch.read(&mut |tx| {
        rebuilt = tx.projection_rows()?;
        Ok(())
    })?;
    Ok(Verification {
        events: events.len(),
        rows: live_rows.len(),
        difference: first_difference(&live_rows, &rebuilt),
    })
}
