//! What a replica measures of its own work, per workspace, for `GET /metrics` (DESIGN §7):
//! the events it committed, by type (claims, completions, failures, lease expiries,
//! retries: their rates and ratios are PromQL over these counters), how long its claims
//! took, the cycle time of the runs it completed and the cost agents reported. The queue's
//! depth is read from the store when scraped ([`Tasks`]).
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

/// Upper bounds of the cycle-time histogram's buckets, in seconds: an agent's run takes
/// from seconds (a lookup) to a day (a long investigation).
pub const CYCLE_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// One thing an operation measured, counted once its transaction commits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Note {
    /// An event of this type was emitted.
    Event(String),
    /// A run completed, this many seconds after its claim.
    Cycle(f64),
    /// An agent reported this much more cost.
    Cost(f64),
}

thread_local! {
    /// What the operation running on this thread has measured: (workspace, note).
    static NOTED: RefCell<Vec<(String, Note)>> = const { RefCell::new(Vec::new()) };
}

/// Notes what an operation measured, for its job to count once committed.
fn note_in(workspace: &str, note: Note) {
    NOTED.with(|n| n.borrow_mut().push((workspace.to_string(), note)));
}

/// Notes an event an operation has emitted.
pub(crate) fn note(workspace: &str, kind: &str) {
    note_in(workspace, Note::Event(kind.to_string()));
}

/// Notes a run completed `seconds` after its claim.
pub(crate) fn note_cycle(workspace: &str, seconds: f64) {
    note_in(workspace, Note::Cycle(seconds));
}

/// Notes cost an agent reported beyond what its run had reported before.
pub(crate) fn note_cost(workspace: &str, amount: f64) {
    if amount > 0.0 && amount.is_finite() {
        note_in(workspace, Note::Cost(amount));
    }
}

/// Runs `op`, returning its result and what it noted (write jobs run their operation on the
/// writer's thread, synchronously, so the thread's notes are the operation's).
pub(crate) fn noted<T>(op: impl FnOnce() -> T) -> (T, Vec<(String, Note)>) {
    NOTED.with(|n| n.borrow_mut().clear());
    let out = op();
    (out, NOTED.with(|n| std::mem::take(&mut *n.borrow_mut())))
}

/// A replica's counters and histograms, per workspace.
#[derive(Debug, Default)]
pub struct Meter {
    workspaces: Mutex<HashMap<String, Measured>>,
}

/// What a replica measured in one workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Committed events, by type.
    pub events: BTreeMap<String, u64>,
    /// How long claims took, from submission to the committed answer (long-poll waits for
    /// work to appear left out).
    pub claims: Histogram,
    /// How long completed runs took, from claim to completion.
    pub cycles: Histogram,
    /// The cost agents reported (each run's increases, summed).
    pub cost: f64,
}

impl Default for Measured {
    fn default() -> Self {
        Measured {
            events: BTreeMap::new(),
            claims: Histogram::new(&CLAIM_BUCKETS),
            cycles: Histogram::new(&CYCLE_BUCKETS),
            cost: 0.0,
        }
    }
}

impl Meter {
    /// Counts what operations whose transaction has committed measured.
    pub(crate) fn committed(&self, notes: &[(String, Note)]) {
        if notes.is_empty() {
            return;
        }
        let mut all = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        for (ws, note) in notes {
            let measured = all.entry(ws.clone()).or_default();
            match note {
                Note::Event(kind) => match measured.events.get_mut(kind) {
                    Some(n) => *n += 1,
                    None => {
                        measured.events.insert(kind.clone(), 1);
                    }
                },
                Note::Cycle(seconds) => measured.cycles.observe(*seconds),
                Note::Cost(amount) => measured.cost += amount,
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

/// A cumulative histogram over fixed bucket bounds, as Prometheus reads one.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of its buckets, in seconds, ascending.
    bounds: &'static [f64],
    /// Observations at or under each bound, in `bounds` order (not cumulative).
    counts: Vec<u64>,
    /// Every observation.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over these bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// (upper bound, observations at or under it), cumulative, as `le` buckets are.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
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
        histogram(
            o,
            "baton_claim_seconds",
            "How long this replica's claims took to answer, waits for work left out.",
            &self.measured.claims,
        );
        histogram(
            o,
            "baton_cycle_seconds",
            "How long the runs this replica completed took, from claim to completion.",
            &self.measured.cycles,
        );
        header(
            o,
            "baton_cost_total",
            "counter",
            "Cost agents reported to this replica (increases of their runs' usage.cost).",
        );
        let _ = writeln!(o, "baton_cost_total {}", number(self.measured.cost));
        out
    }
}

/// A histogram's family: header, cumulative buckets, sum and count.
fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    for (bound, n) in h.buckets() {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", number(h.sum));
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// A sample's value as the exposition format spells it (`+Inf` past `f64::MAX`: reported
/// costs are the agents' numbers, summed without bound).
fn number(value: f64) -> String {
    match value {
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v if v.is_nan() => "NaN".into(),
        v => v.to_string(),
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
        let ((), later) = noted(|| {
            note("ws1", "task.completed");
            note_cycle("ws1", 42.0);
            note_cost("ws1", 0.25);
            note_cost("ws1", -1.0); // a lower total reported: no cost taken back
        });
        meter.committed(&later);
        assert_eq!(meter.of("ws1").events.get("task.claimed"), None);
        meter.committed(&notes);
        let ws1 = meter.of("ws1");
        assert_eq!(ws1.events["task.claimed"], 2);
        assert_eq!(ws1.events["task.completed"], 1);
        assert_eq!(
            (ws1.cycles.count, ws1.cycles.sum, ws1.cost),
            (1, 42.0, 0.25)
        );
        assert_eq!(meter.of("ws2").events["task.created"], 1);
        assert_eq!(meter.of("ws3"), Measured::default());
    }

    #[test]
    fn renders_the_exposition_format() {
        let meter = Meter::default();
        meter.committed(&[("w".into(), Note::Event("task.claimed".into()))]);
        meter.claimed("w", 0.003);
        meter.claimed("w", 0.04);
        meter.claimed("w", 9.0);
        meter.committed(&[
            ("w".into(), Note::Cycle(90.0)),
            ("w".into(), Note::Cost(1.5)),
        ]);
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
            "# TYPE baton_cycle_seconds histogram",
            "baton_cycle_seconds_bucket{le=\"60\"} 0",
            "baton_cycle_seconds_bucket{le=\"300\"} 1",
            "baton_cycle_seconds_count 1",
            "# TYPE baton_cost_total counter",
            "baton_cost_total 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with('\n'));
        assert_eq!(number(f64::MAX * 2.0), "+Inf");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
