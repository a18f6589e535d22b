//! What a replica measures of its own work, per workspace, for `GET /metrics` (DESIGN §7):
//! the events it committed, by type (claims, completions, failures, lease expiries,
//! retries: their rates and ratios are PromQL over these counters), and how long its claims
//! took. The queue's depth is read from the store when scraped ([`Tasks`]).
//!
//! Counters live in memory and start at zero with the process, as Prometheus expects of a
//! counter: each replica reports what it did, and a fleet's figure is the sum over replicas.
//! Events are counted only once their transaction has committed: a write job notes what its
//! operation emitted while it runs ([`noted`]), and hands the notes to the [`Meter`] when
//! the commit succeeds, so an operation refused or rolled back counts nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the claim-latency histogram's buckets, in seconds: from a commit on a
/// quiet embedded store (~1 ms) to the 50 ms the claim p99 target allows and well past it.
pub const CLAIM_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

thread_local! {
    /// The events the operation running on this thread has emitted: (workspace, type).
    static EMITTED: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Notes an event an operation has emitted, for its job to count once committed.
pub(crate) fn note(workspace: &str, kind: &str) {
    EMITTED.with(|e| {
        e.borrow_mut()
            .push((workspace.to_string(), kind.to_string()))
    });
}

/// Runs `op`, returning its result and the events it noted (write jobs run their operation
/// on the writer's thread, synchronously, so the thread's notes are the operation's).
pub(crate) fn noted<T>(op: impl FnOnce() -> T) -> (T, Vec<(String, String)>) {
    EMITTED.with(|e| e.borrow_mut().clear());
    let out = op();
    (out, EMITTED.with(|e| std::mem::take(&mut *e.borrow_mut())))
}

/// A replica's counters and histograms, per workspace.
#[derive(Debug, Default)]
pub struct Meter {
    workspaces: Mutex<HashMap<String, Measured>>,
}

/// What a replica measured in one workspace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Committed events, by type.
    pub events: BTreeMap<String, u64>,
    /// How long claims took, from submission to the committed answer (long-poll waits for
    /// work to appear left out).
    pub claims: Histogram,
}

impl Meter {
    /// Counts events whose transaction has committed.
    pub(crate) fn committed(&self, events: &[(String, String)]) {
        if events.is_empty() {
            return;
        }
        let mut all = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        for (ws, kind) in events {
            let measured = all.entry(ws.clone()).or_default();
            match measured.events.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    measured.events.insert(kind.clone(), 1);
                }
            }
        }
    }

    /// Records how long a claim took, in seconds.
    pub(crate) fn claimed(&self, workspace: &str, seconds: f64) {
        let mut all = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(workspace.to_string())
            .or_default()
            .claims
            .observe(seconds);
    }

    /// What this replica measured in `workspace` so far.
    pub fn of(&self, workspace: &str) -> Measured {
        let all = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        all.get(workspace).cloned().unwrap_or_default()
    }
}

/// A cumulative histogram over [`CLAIM_BUCKETS`], as Prometheus reads one.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Observations at or under each bound, in [`CLAIM_BUCKETS`] order (not cumulative).
    counts: [u64; CLAIM_BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; CLAIM_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = CLAIM_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// (upper bound, observations at or under it), cumulative, as `le` buckets are.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        CLAIM_BUCKETS
            .iter()
            .zip(self.counts.iter())
            .scan(0, |total, (bound, n)| {
                *total += n;
                Some((*bound, *total))
            })
    }
}

/// How many of a workspace's tasks are in each open status, read from the store when
/// scraped (finished tasks are history, counted by the events that finished them).
pub type Tasks = Vec<(crate::state::Status, u64)>;

/// A workspace's metrics, for [`Metrics::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Tasks in each open status, now.
    pub tasks: Tasks,
    /// Agents by status (`active`, `disabled`, `killed`), now.
    pub agents: BTreeMap<String, u64>,
    /// What this replica measured.
    pub measured: Measured,
}

impl Metrics {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        header(
            o,
            "baton_tasks",
            "gauge",
            "Tasks in each open status (ready: the queue's depth).",
        );
        for (status, n) in &self.tasks {
            let _ = writeln!(o, "baton_tasks{{status=\"{}\"}} {n}", status.as_str());
        }
        header(o, "baton_agents", "gauge", "Registered agents by status.");
        for (status, n) in &self.agents {
            let _ = writeln!(o, "baton_agents{{status=\"{}\"}} {n}", escape(status));
        }
        header(
            o,
            "baton_events_total",
            "counter",
            "Events this replica committed, by type.",
        );
        for (kind, n) in &self.measured.events {
            let _ = writeln!(o, "baton_events_total{{type=\"{}\"}} {n}", escape(kind));
        }
        let claims = &self.measured.claims;
        header(
            o,
            "baton_claim_seconds",
            "histogram",
            "How long this replica's claims took to answer, waits for work left out.",
        );
        for (bound, n) in claims.buckets() {
            let _ = writeln!(o, "baton_claim_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "baton_claim_seconds_bucket{{le=\"+Inf\"}} {}",
            claims.count
        );
        let _ = writeln!(o, "baton_claim_seconds_sum {}", claims.sum);
        let _ = writeln!(o, "baton_claim_seconds_count {}", claims.count);
        out
    }
}

/// A metric family's `HELP` and `TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;

    #[test]
    fn only_committed_notes_count() {
        let meter = Meter::default();
        let ((), notes) = noted(|| {
            note("ws1", "task.claimed");
            note("ws1", "task.claimed");
            note("ws2", "task.created");
        });
        // A job whose commit failed hands nothing over; a later one starts afresh.
        let ((), later) = noted(|| note("ws1", "task.completed"));
        meter.committed(&later);
        assert_eq!(meter.of("ws1").events.get("task.claimed"), None);
        meter.committed(&notes);
        let ws1 = meter.of("ws1");
        assert_eq!(ws1.events["task.claimed"], 2);
        assert_eq!(ws1.events["task.completed"], 1);
        assert_eq!(meter.of("ws2").events["task.created"], 1);
        assert_eq!(meter.of("ws3"), Measured::default());
    }

    #[test]
    fn renders_the_exposition_format() {
        let meter = Meter::default();
        meter.committed(&[("w".into(), "task.claimed".into())]);
        meter.claimed("w", 0.003);
        meter.claimed("w", 0.04);
        meter.claimed("w", 9.0);
        let text = Metrics {
            tasks: vec![(Status::Ready, 4), (Status::InProgress, 1)],
            agents: BTreeMap::from([("active".to_string(), 2)]),
            measured: meter.of("w"),
        }
        .render();
        for line in [
            "# TYPE baton_tasks gauge",
            "baton_tasks{status=\"ready\"} 4",
            "baton_tasks{status=\"in_progress\"} 1",
            "baton_agents{status=\"active\"} 2",
            "# TYPE baton_events_total counter",
            "baton_events_total{type=\"task.claimed\"} 1",
            "# TYPE baton_claim_seconds histogram",
            "baton_claim_seconds_bucket{le=\"0.002\"} 0",
            "baton_claim_seconds_bucket{le=\"0.005\"} 1",
            "baton_claim_seconds_bucket{le=\"0.05\"} 2",
            "baton_claim_seconds_bucket{le=\"5\"} 2",
            "baton_claim_seconds_bucket{le=\"+Inf\"} 3",
            "baton_claim_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with('\n'));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
