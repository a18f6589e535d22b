//! The tasks this process's write transactions hold from their claims' queries.
//!
//! A claim's scan reads the claim index as of its statement's snapshot. When it reaches a
//! task another transaction claimed and committed after that snapshot, PostgreSQL does not
//! skip it: it follows the row to its newest (claimed) version, locks that, and only then
//! finds it no longer ready. The row stays locked, not returned, until the claim's
//! transaction ends, and the agent that did claim it waits that long to complete it (in a
//! batch-1 drain with two writers, ~3% of completions waited ~1.3 ms each, and with them
//! the rest of their batch). So each writer records the tasks its transaction's claim
//! queries locked, until the transaction ends, and a claim passes over, by id, those the
//! other writers hold, before it locks anything. Claims racing from other replicas can
//! still do that; this process's own cannot.

use baton_core::model::Task;
use std::sync::Mutex;

/// The claims of this process's write transactions (see the module's documentation).
#[derive(Default)]
pub(crate) struct Claiming {
    /// (writer, workspace, task) for each task a transaction holds from a claim's query.
    held: Mutex<Vec<(usize, String, String)>>,
}

/// A writer's place among this process's claims.
#[derive(Clone, Copy)]
pub(crate) struct ClaimSlot<'c> {
    pub(crate) claiming: &'c Claiming,
    pub(crate) writer: usize,
}

impl Claiming {
    pub(crate) fn hold<'t>(&self, writer: usize, ws: &str, tasks: impl Iterator<Item = &'t Task>) {
        if let Ok(mut held) = self.held.lock() {
            held.extend(tasks.map(|task| (writer, ws.to_string(), task.id.clone())));
        }
    }

    pub(crate) fn release(&self, writer: usize) {
        if let Ok(mut held) = self.held.lock() {
            held.retain(|(w, ..)| *w != writer);
        }
    }

    /// How many tasks `writer`'s transaction holds (to undo a job's: see
    /// [`Claiming::release_after`]).
    pub(crate) fn held_count(&self, writer: usize) -> usize {
        self.held
            .lock()
            .map(|held| held.iter().filter(|(w, ..)| *w == writer).count())
            .unwrap_or(0)
    }

    /// Keeps the first `kept` tasks `writer`'s transaction holds and lets the rest go (a
    /// job rolled back to its savepoint, which released their locks).
    pub(crate) fn release_after(&self, writer: usize, kept: usize) {
        if let Ok(mut held) = self.held.lock() {
            let mut seen = 0;
            held.retain(|(w, ..)| {
                if *w != writer {
                    return true;
                }
                seen += 1;
                seen <= kept
            });
        }
    }

    /// The tasks of `ws` that the other writers' transactions hold.
    pub(crate) fn held_by_others(&self, writer: usize, ws: &str) -> Vec<String> {
        self.held
            .lock()
            .map(|held| {
                held.iter()
                    .filter(|(w, held_ws, _)| *w != writer && held_ws == ws)
                    .map(|(.., id)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_job_rolled_back_lets_its_tasks_go() {
        let claiming = Claiming::default();
        let hold = |writer: usize, id: &str| {
            let mut held = claiming.held.lock().unwrap();
            held.push((writer, "ws".to_string(), id.to_string()));
        };
        hold(0, "a");
        hold(1, "x");
        let kept = claiming.held_count(0);
        hold(0, "b");
        hold(1, "y");
        claiming.release_after(0, kept);
        assert_eq!(claiming.held_by_others(1, "ws"), ["a"]);
        assert_eq!(claiming.held_by_others(0, "ws"), ["x", "y"]);
        claiming.release(0);
        assert!(claiming.held_by_others(1, "ws").is_empty());
    }
}
