//! Admission control: a store that falls behind refuses new work before its queue grows
//! without bound, and keeps taking the writes that finish work already handed out.
//!
//! Without it, a server offered more than its store commits queues every request: memory
//! grows with the backlog, and heartbeats wait behind new claims until leases lapse, so
//! work already done is thrown away. Here every write job holds a [`Slot`] from submission
//! until its answer; beyond [`WriteLimits::new_work`] queued jobs, claims and planning are
//! refused with `RATE_LIMITED` (429, retryable, with `retry_after_ms`), and beyond
//! [`WriteLimits::held_work`] so is everything else.

use crate::error::{Code, Error, Result};
use serde_json::json;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many write jobs may wait for the store, per process.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Beyond this many, new work is refused: claims, task creation, planning, edits.
    pub new_work: usize,
    /// Beyond this many, everything is refused, including heartbeats and completions.
    pub held_work: usize,
}

impl Default for WriteLimits {
    /// Far above what a healthy server queues (one job per agent's call in flight; a
    /// batched completion is one job per item), low enough that a backlog stays a few
    /// seconds of work and a few megabytes.
    fn default() -> Self {
        WriteLimits {
            new_work: 2_048,
            held_work: 16_384,
        }
    }
}

/// Which writes give way first when the store falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Taking on or changing work: claims, creation, planning, edits. Refused first.
    NewWork,
    /// Keeping a held lease alive or ending it (heartbeat, complete, fail, release, …) and
    /// the reaper: refused only at the hard limit, so work in hand is not lost to lapsed
    /// leases while the backlog drains.
    HeldWork,
}

/// The write jobs waiting for the store, and how long recent ones took to be answered.
#[derive(Debug)]
pub(crate) struct Backlog {
    limits: WriteLimits,
    queued: AtomicUsize,
    /// Moving average of submission-to-answer time, in microseconds.
    latency_us: AtomicU64,
}

/// A place in the backlog, held by a write job until it is answered (or dropped).
#[derive(Debug)]
pub(crate) struct Slot {
    backlog: Arc<Backlog>,
    since: Instant,
}

impl Backlog {
    pub(crate) fn new(limits: WriteLimits) -> Arc<Backlog> {
        Arc::new(Backlog {
            limits,
            queued: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
        })
    }

    /// A slot for one more write job, or `RATE_LIMITED` when the backlog is past the limit
    /// for its kind.
    pub(crate) fn admit(self: &Arc<Self>, kind: Admission) -> Result<Slot> {
        let limit = match kind {
            Admission::NewWork => self.limits.new_work,
            Admission::HeldWork => self.limits.held_work,
        };
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refusal(queued, kind));
        }
        Ok(Slot {
            backlog: self.clone(),
            since: Instant::now(),
        })
    }

    fn refusal(&self, queued: usize, kind: Admission) -> Error {
        // About the time the writes ahead take to be answered, within reason.
        let retry_after_ms = (self.latency_us.load(Ordering::Relaxed) / 1000).clamp(100, 10_000);
        let what = match kind {
            Admission::NewWork => "new work (claims, creation, planning) is",
            Admission::HeldWork => "every write is",
        };
        Error::new(
            Code::RateLimited,
            format!("the store is {queued} writes behind; {what} refused until it catches up"),
            format!("retry the same call after {retry_after_ms} ms (details.retry_after_ms)"),
        )
        .with_details(json!({ "retry_after_ms": retry_after_ms, "queued_writes": queued }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let took = self.since.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let backlog = &self.backlog;
        // An average over roughly the last 16 answers; a lost update between racing drops
        // only makes it a little less smooth.
        let old = backlog.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 16 + took / 16
        };
        backlog.latency_us.store(new, Ordering::Relaxed);
        backlog.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_work_gives_way_before_held_work() {
        let backlog = Backlog::new(WriteLimits {
            new_work: 2,
            held_work: 3,
        });
        let a = backlog.admit(Admission::NewWork).unwrap();
        let _b = backlog.admit(Admission::NewWork).unwrap();
        let refused = backlog.admit(Admission::NewWork).unwrap_err();
        assert_eq!(refused.code, Code::RateLimited);
        assert!(refused.retryable());
        let details = refused.details.unwrap();
        assert_eq!(details["queued_writes"], 2);
        assert!(details["retry_after_ms"].as_u64().unwrap() >= 100);
        let _c = backlog.admit(Admission::HeldWork).unwrap();
        assert_eq!(
            backlog.admit(Admission::HeldWork).unwrap_err().code,
            Code::RateLimited
        );
        // An answered job gives its place back.
        drop(a);
        assert_eq!(backlog.queued.load(Ordering::Acquire), 2);
        backlog.admit(Admission::HeldWork).unwrap();
    }
}
