//! Long-poll claims waiting for work, and the dispatcher that wakes as many of them as
//! there is work for.
//!
//! Waking every waiting claim on every commit made each commit cost one claim transaction
//! per idle agent: with a hundred agents long-polling, a queue doing a few hundred tasks a
//! second spent most of its writes finding nothing (and on PostgreSQL each of those writes
//! takes the workspace lock). Instead, one dispatcher per engine wakes up on a commit (or a
//! tick, for commits of other processes and backoffs running out), reads how many tasks
//! each group of idle waiters could take, and wakes that many, oldest first. A woken
//! waiter still claims in a write transaction: the read only decides who tries.

use crate::error::Result;
use crate::store::Store;
use crate::time::Clock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

/// How often the dispatcher looks without a wake-up: covers commits made by other
/// processes on the same file and backoffs running out.
pub(crate) const TICK_MS: u64 = 250;

/// Every claim waiting in one engine.
#[derive(Default)]
pub(crate) struct Waiters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// In arrival order: the oldest waiter is woken first.
    waiting: Vec<Waiter>,
    /// Whether a dispatcher task runs (it ends when nobody waits).
    dispatching: bool,
}

struct Waiter {
    id: u64,
    workspace_id: String,
    /// The claiming agent, as the claim names it: woken when it is killed or disabled.
    agent: String,
    /// The agent's capabilities, sorted: waiters with the same set form a group.
    capabilities: Vec<String>,
    wake: Arc<Notify>,
    /// Woken and not yet back to waiting: not counted as idle.
    woken: bool,
}

/// A claim's place among the waiters; it leaves when dropped.
pub(crate) struct Registration {
    waiters: Arc<Waiters>,
    id: u64,
    wake: Arc<Notify>,
}

impl Registration {
    /// Marks the waiter idle again, before it looks for work: a dispatch that happens while
    /// it looks leaves a wake-up behind, so nothing made claimable in between is missed.
    pub(crate) fn rearm(&self) {
        if let Some(w) = self
            .waiters
            .lock()
            .waiting
            .iter_mut()
            .find(|w| w.id == self.id)
        {
            w.woken = false;
        }
    }

    /// Resolves when the dispatcher has work this waiter may take.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waiters.lock().waiting.retain(|w| w.id != self.id);
    }
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a waiting claim, starting the dispatcher if none runs.
    pub(crate) fn register(
        self: &Arc<Self>,
        workspace_id: &str,
        agent: &str,
        mut capabilities: Vec<String>,
        store: &Arc<dyn Store>,
        clock: &Arc<dyn Clock>,
        closing: watch::Receiver<bool>,
    ) -> Registration {
        capabilities.sort_unstable();
        capabilities.dedup();
        let wake = Arc::new(Notify::new());
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.waiting.push(Waiter {
            id,
            workspace_id: workspace_id.to_string(),
            agent: agent.to_string(),
            capabilities,
            wake: wake.clone(),
            woken: false,
        });
        if !inner.dispatching {
            inner.dispatching = true;
            let (store, clock) = (store.clone(), clock.clone());
            tokio::spawn(dispatch(self.clone(), store, clock, closing));
        }
        Registration {
            waiters: self.clone(),
            id,
            wake,
        }
    }

    /// Idle waiters grouped by workspace and capabilities, each group oldest first; `None`
    /// when nobody waits, which also ends the dispatcher (under the same lock as
    /// [`Waiters::register`], so a newcomer starts another).
    fn idle_groups(&self) -> Option<BTreeMap<(String, Vec<String>), usize>> {
        let mut inner = self.lock();
        if inner.waiting.is_empty() {
            inner.dispatching = false;
            return None;
        }
        let mut groups = BTreeMap::new();
        for w in inner.waiting.iter().filter(|w| !w.woken) {
            *groups
                .entry((w.workspace_id.clone(), w.capabilities.clone()))
                .or_insert(0) += 1;
        }
        Some(groups)
    }

    /// The agents of idle waiters, by workspace, each once.
    fn idle_agents(&self) -> BTreeMap<String, Vec<String>> {
        let mut agents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in self.lock().waiting.iter().filter(|w| !w.woken) {
            let names = agents.entry(w.workspace_id.clone()).or_default();
            if !names.contains(&w.agent) {
                names.push(w.agent.clone());
            }
        }
        agents
    }

    /// Wakes every idle waiter of `agent` in a workspace.
    fn wake_agent(&self, workspace_id: &str, agent: &str) {
        let mut inner = self.lock();
        let theirs = inner
            .waiting
            .iter_mut()
            .filter(|w| !w.woken && w.workspace_id == workspace_id && w.agent == agent);
        for w in theirs {
            w.woken = true;
            w.wake.notify_one();
        }
    }

    /// Wakes up to `count` idle waiters of a group, oldest first.
    fn wake(&self, workspace_id: &str, capabilities: &[String], count: usize) {
        let mut inner = self.lock();
        let group = inner.waiting.iter_mut().filter(|w| {
            !w.woken && w.workspace_id == workspace_id && w.capabilities == capabilities
        });
        for w in group.take(count) {
            w.woken = true;
            w.wake.notify_one();
        }
    }
}

/// The dispatcher: after each commit or tick, wakes as many idle waiters of each group as
/// the group could claim tasks. Ends when nobody waits, or when the engine closes (a
/// server shutting down: its runtime's timers may be gone by the next tick, and the
/// waiting claims are answered by the close).
async fn dispatch(
    waiters: Arc<Waiters>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut closing: watch::Receiver<bool>,
) {
    // However this task ends (its runtime shutting down, a panic), the next waiter to
    // register starts another.
    let mut running = Running {
        waiters: waiters.clone(),
        armed: true,
    };
    let tick = std::time::Duration::from_millis(TICK_MS);
    let mut agents_checked = tokio::time::Instant::now();
    loop {
        // Registered before looking, so a commit during the look wakes the next round.
        let committed = store.commits().notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let Some(groups) = waiters.idle_groups() else {
            running.armed = false; // stopped under the waiters' lock already
            return;
        };
        for ((workspace_id, capabilities), idle) in groups {
            // A failed read wakes one waiter: its own claim reports the error.
            let work = claimable(&*store, &*clock, &workspace_id, &capabilities, idle).unwrap_or(1);
            if work > 0 {
                waiters.wake(&workspace_id, &capabilities, work.min(idle));
            }
        }
        // A waiting agent killed or disabled (here or by another process or replica) is
        // woken, to be told so by its claim. Looked at once a tick at most, however often
        // commits wake the dispatcher: a read per waiting agent, too many for every commit.
        if agents_checked.elapsed() >= tick {
            agents_checked = tokio::time::Instant::now();
            for (workspace_id, agents) in waiters.idle_agents() {
                for agent in stopped_agents(&*store, &workspace_id, agents).unwrap_or_default() {
                    waiters.wake_agent(&workspace_id, &agent);
                }
            }
        }
        // Looked at after the reads above, which block: the close may have come meanwhile.
        if *closing.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = &mut committed => {}
            _ = tokio::time::sleep(tick) => {}
            changed = closing.changed() => {
                if changed.is_err() {
                    return; // the engine is gone
                }
            }
        }
    }
}

/// Marks the dispatcher stopped if it ends other than by finding nobody waiting.
struct Running {
    waiters: Arc<Waiters>,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            self.waiters.lock().dispatching = false;
        }
    }
}

/// Those of `agents` (names, as claims give them) that may not claim now: killed or
/// disabled.
fn stopped_agents(
    store: &dyn Store,
    workspace_id: &str,
    agents: Vec<String>,
) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    store.read(&mut |tx| {
        stopped.clear();
        for name in &agents {
            if tx
                .agent(workspace_id, name)?
                .is_some_and(|a| a.status != "active")
            {
                stopped.push(name.clone());
            }
        }
        Ok(())
    })?;
    Ok(stopped)
}

/// How many tasks (up to `idle`) an agent with `capabilities` could claim now, counting a
/// lapsed lease as one (the claim expires it).
fn claimable(
    store: &dyn Store,
    clock: &dyn Clock,
    workspace_id: &str,
    capabilities: &[String],
    idle: usize,
) -> Result<usize> {
    let now = clock.now();
    let page = (idle as u32).clamp(1, 1024).next_power_of_two();
    let mut count = 0;
    store.read(&mut |tx| {
        // A killed workspace: every waiter is woken, to be told so by its claim.
        if tx.workspace(workspace_id)?.is_some_and(|w| w.killed) {
            count = idle;
            return Ok(());
        }
        // Only tasks the agent can take: the store seeks the capability sets it serves.
        count = tx
            .claim_candidates(workspace_id, now, page, Some(capabilities))?
            .len();
        if count == 0 && !tx.expired_leases(workspace_id, now, 1)?.is_empty() {
            count = 1;
        }
        Ok(())
    })?;
    Ok(count)
}
