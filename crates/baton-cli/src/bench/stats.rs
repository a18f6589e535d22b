//! What every scenario reports: latency percentiles from HDR histograms, and what the
//! server spent doing it (CPU, resident memory, durable commits per task).

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Latency samples of one operation, in microseconds, to three significant digits: p99.9
/// of a million samples costs a few kilobytes, and histograms of many agents add up.
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // 1 µs to 1 hour, 3 significant digits; the bounds are constants, so this holds.
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records one sample (saturating at the histogram's hour).
    pub(crate) fn record(&mut self, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, self.0.high());
        self.0.saturating_record(us);
    }

    /// Adds another histogram's samples.
    pub(crate) fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// A histogram of these samples.
    pub(crate) fn of(samples: &[Duration]) -> Latency {
        let mut lat = Latency::default();
        samples.iter().for_each(|&s| lat.record(s));
        lat
    }

    /// How many samples.
    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// `p50 | p90 | p99 | p99.9` in milliseconds, as table cells.
    pub(crate) fn cells(&self) -> String {
        if self.len() == 0 {
            return " | | | ".into();
        }
        format!(
            "{:.2} | {:.2} | {:.2} | {:.2}",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999)
        )
    }
}

/// The header every table of `baton-bench` shares.
pub(crate) const HEADER: &str = "| operation | ready tasks | durability | agents | throughput | p50 ms | p90 ms | p99 ms | p99.9 ms | notes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

/// Prints one table row.
pub(crate) fn print_row(
    op: &str,
    tasks: u64,
    durability: &str,
    agents: usize,
    rate: Option<f64>,
    lat: &Latency,
    notes: &str,
) {
    let rate = rate.map(|r| format!("{r:.0}/s")).unwrap_or_default();
    println!(
        "| {op} | {tasks} | {durability} | {agents} | {rate} | {} | {notes} |",
        lat.cells()
    );
}

/// CPU time and resident memory of the server processes while a scenario runs, read from
/// `/proc`: the given pids (separate `baton serve` processes), or this process when the
/// server runs in-process (then it includes the agents).
pub(crate) struct Probe {
    /// Each process and its CPU seconds at the start.
    pids: Vec<(String, f64)>,
    started: Instant,
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// A `/proc/PID/status` field in megabytes (VmRSS, VmHWM).
fn status_mb(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl Probe {
    /// Starts measuring `pids`, or this process when there are none.
    pub(crate) fn start(pids: &[u32]) -> Probe {
        let pids: Vec<String> = if pids.is_empty() {
            vec!["self".into()]
        } else {
            pids.iter().map(u32::to_string).collect()
        };
        Probe {
            pids: pids
                .into_iter()
                .map(|p| {
                    let cpu = cpu_seconds(&p).unwrap_or(0.0);
                    (p, cpu)
                })
                .collect(),
            started: Instant::now(),
        }
    }

    /// `server CPU x.xx cores, RSS n MB (peak m)`; the RSS of several servers is their sum.
    /// A process that died meanwhile counts for nothing (and is named).
    pub(crate) fn finish(&self) -> String {
        let (mut cpu, mut rss, mut peak, mut gone) = (0.0, 0.0, 0.0, 0);
        for (pid, from) in &self.pids {
            match (
                cpu_seconds(pid),
                status_mb(pid, "VmRSS:"),
                status_mb(pid, "VmHWM:"),
            ) {
                (Some(now), Some(r), Some(p)) => {
                    cpu += now - from;
                    rss += r;
                    peak += p;
                }
                _ => gone += 1,
            }
        }
        let cores = cpu / self.started.elapsed().as_secs_f64();
        let gone = match gone {
            0 => String::new(),
            n => format!(" ({n} of them died during the run)"),
        };
        let who = if self.pids.len() == 1 && self.pids[0].0 == "self" {
            "process (server and agents)"
        } else {
            "server"
        };
        format!("{who} CPU {cores:.2} cores, RSS {rss:.0} MB (peak {peak:.0}){gone}")
    }
}

/// Counts the fsyncs that made commits durable: the embedded store's own counter (when the
/// server runs in this process), or PostgreSQL's `pg_stat_wal.wal_sync` (read with `psql`).
pub(crate) enum Syncs {
    /// The in-process embedded store.
    Sqlite(std::sync::Arc<baton_store_sqlite::SqliteStore>),
    /// The database URL.
    Postgres(String),
    /// Not measurable (an embedded store served by another process).
    Unknown,
}

impl Syncs {
    fn now(&self) -> Option<u64> {
        match self {
            Syncs::Sqlite(store) => Some(store.write_stats().syncs),
            Syncs::Postgres(url) => {
                let out = std::process::Command::new("psql")
                    .args([url.as_str(), "-tAc", "SELECT wal_sync FROM pg_stat_wal"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            }
            Syncs::Unknown => None,
        }
    }

    /// Transactions committed, where the store counts them (the in-process embedded one):
    /// with group commit, several per fsync.
    fn commits(&self) -> Option<u64> {
        match self {
            Syncs::Sqlite(store) => Some(store.write_stats().commits),
            _ => None,
        }
    }
}

/// The server's costs over one scenario: start it before, read it after.
pub(crate) struct Meter<'a> {
    syncs: &'a Syncs,
    from: Option<u64>,
    commits_from: Option<u64>,
    probe: Probe,
}

impl<'a> Meter<'a> {
    /// Starts measuring.
    pub(crate) fn start(syncs: &'a Syncs, pids: &[u32]) -> Meter<'a> {
        Meter {
            syncs,
            from: syncs.now(),
            commits_from: syncs.commits(),
            probe: Probe::start(pids),
        }
    }

    /// The notes cell: fsyncs per task (durable commits), server CPU and RSS.
    pub(crate) fn notes(&self, tasks: u64) -> String {
        let syncs = match (self.from, self.syncs.now()) {
            (Some(a), Some(b)) if tasks > 0 => {
                format!("{:.3} fsyncs/task; ", (b - a) as f64 / tasks as f64)
            }
            _ => String::new(),
        };
        let commits = match (self.commits_from, self.syncs.commits()) {
            (Some(a), Some(b)) if tasks > 0 => {
                format!("{:.3} commits/task; ", (b - a) as f64 / tasks as f64)
            }
            _ => String::new(),
        };
        format!("{syncs}{commits}{}", self.probe.finish())
    }
}
