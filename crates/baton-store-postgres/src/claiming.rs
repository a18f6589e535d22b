//! What this process's write transactions share about claims: the tasks each holds from a
//! claim's query, and where in the claim index a claim's scan can start.
//!
//! # Tasks held
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
//!
//! # Floors
//! A claimed task leaves a dead entry at the head of the claim index (a change of status is
//! never a HOT update), and only vacuum removes it: between two vacuums every claim read
//! past all the tasks claimed since the last (~160 index pages a claim, midway through a
//! 20,000-task drain). So a claim of an agent without capabilities starts its scan at the
//! workspace's *floor*: a claim key below which no task is ready. Each such claim also
//! reads, in the same statement, the first ready entry at or past the floor (claimable or
//! not: held by another claim, waiting for `not_before`, a parent with open children), and
//! once its transaction has committed that entry's key is the new floor, unless a commit
//! made a task ready meanwhile (the *epoch* moved). Every commit of this process that made
//! a task ready lowers the floor to that task's key (and moves the epoch), and within a
//! transaction its own such writes lower it at once; a commit of another replica, which
//! this process learns of from its `NOTIFY`, forgets every floor. A floor is trusted for
//! [`FLOOR_LIFETIME`] at most, counted from the scan from the first entry it descends from
//! (each is found by a claim that read only from the floor before it), so whatever else
//! could make a task ready unseen (a lost notification) is seen that much later at worst. The price: another replica's task ready below the floor is seen
//! once its notification arrives (its notifier sends one every 2 ms at most).

use baton_core::model::Task;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a floor is trusted without being learned again.
pub(crate) const FLOOR_LIFETIME: Duration = Duration::from_millis(250);

/// A task's place in claim order: `(neg_priority, due_key, id)`, as the claim index sorts.
/// Keys are compared here by bytes and there by the database's collation; task ids are
/// generated (`tsk_` and lowercase hex, all one length), which every collation orders as
/// bytes do.
pub(crate) type Key = (i64, i64, String);

/// Where a claim's scan of a workspace's tasks without capabilities starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Floor {
    /// Not known: from the first entry.
    Start,
    /// No task without capabilities sorting before this key is ready.
    At(Key),
    /// No task without capabilities is ready.
    End,
}

impl Floor {
    /// The lower of two floors (both true, the lower is true).
    fn min(self, other: Floor) -> Floor {
        match (self, other) {
            (Floor::Start, _) | (_, Floor::Start) => Floor::Start,
            (Floor::End, f) | (f, Floor::End) => f,
            (Floor::At(a), Floor::At(b)) => Floor::At(a.min(b)),
        }
    }

    /// The higher of two floors (both true, the higher is true).
    fn max(self, other: Floor) -> Floor {
        match (self, other) {
            (Floor::End, _) | (_, Floor::End) => Floor::End,
            (Floor::Start, f) | (f, Floor::Start) => f,
            (Floor::At(a), Floor::At(b)) => Floor::At(a.max(b)),
        }
    }

    /// This floor lowered to `key` where it sorts after it.
    pub(crate) fn lowered_to(self, key: &Key) -> Floor {
        self.min(Floor::At(key.clone()))
    }
}

/// The claims of this process's write transactions (see the module's documentation).
#[derive(Default)]
pub(crate) struct Claiming {
    /// (writer, workspace, task) for each task a transaction holds from a claim's query.
    held: Mutex<Vec<(usize, String, String)>>,
    floors: Mutex<Floors>,
}

#[derive(Default)]
struct Floors {
    /// Per workspace: its floor, and when the scan from the first entry that it was
    /// learned from (through the floors between) began. Each floor is learned by a claim
    /// that read only from the floor before it, so its age is that first scan's.
    by_workspace: HashMap<String, (Floor, Instant)>,
    /// Moves with every commit that made a task ready and every floor forgotten.
    epoch: u64,
}

/// What a floor read by a claim is learned against: the epoch when the claim began, and
/// when the scan from the first entry behind the floor it started from began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Basis {
    epoch: u64,
    since: Instant,
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

    /// Where a claim of `ws` starts ([`Floor::Start`] when unknown, or when the scan from
    /// the first entry it comes from is [`FLOOR_LIFETIME`] old), and what to learn what it
    /// finds against ([`Claiming::learn`]).
    pub(crate) fn floor(&self, ws: &str) -> (Floor, Basis) {
        let now = Instant::now();
        let Ok(floors) = self.floors.lock() else {
            let basis = Basis {
                epoch: u64::MAX,
                since: now,
            };
            return (Floor::Start, basis);
        };
        let (floor, since) = match floors.by_workspace.get(ws) {
            Some((floor, since)) if since.elapsed() < FLOOR_LIFETIME => (floor.clone(), *since),
            _ => (Floor::Start, now),
        };
        let basis = Basis {
            epoch: floors.epoch,
            since,
        };
        (floor, basis)
    }

    /// After a commit: `floor`, read in that transaction by a claim that started from the
    /// floor [`Claiming::floor`] gave with `basis`, becomes the floor of `ws`, unless the
    /// epoch has moved since (a commit made a task ready, or floors were forgotten).
    pub(crate) fn learn(&self, ws: &str, floor: Floor, basis: Basis) {
        let Ok(mut floors) = self.floors.lock() else {
            return;
        };
        if floors.epoch != basis.epoch {
            return;
        }
        let entry = floors
            .by_workspace
            .entry(ws.to_string())
            .or_insert((Floor::Start, basis.since));
        let (current, since) = std::mem::replace(entry, (Floor::Start, basis.since));
        *entry = if since.elapsed() < FLOOR_LIFETIME {
            // Another floor learned at the same epoch is as true: keep the higher, and the
            // age of the older.
            (current.max(floor), since.min(basis.since))
        } else {
            (floor, basis.since)
        };
    }

    /// After a transaction that made the tasks `readied` ready (workspace and key each)
    /// has ended: lowers their workspaces' floors to them.
    pub(crate) fn lower(&self, readied: &[(String, Key)]) {
        if readied.is_empty() {
            return;
        }
        let Ok(mut floors) = self.floors.lock() else {
            return;
        };
        floors.epoch += 1;
        for (ws, key) in readied {
            if let Some((floor, _)) = floors.by_workspace.get_mut(ws) {
                *floor = std::mem::replace(floor, Floor::Start).lowered_to(key);
            }
        }
    }

    /// Forgets every floor: another replica committed, perhaps making any task ready.
    pub(crate) fn forget(&self) {
        if let Ok(mut floors) = self.floors.lock() {
            floors.epoch += 1;
            floors.by_workspace.clear();
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn key(n: i64) -> Key {
        (0, 0, format!("tsk_{n:03}"))
    }

    #[test]
    fn floors_are_learned_lowered_and_forgotten() {
        let claiming = Claiming::default();
        let (floor, basis) = claiming.floor("ws");
        assert_eq!(floor, Floor::Start);
        claiming.learn("ws", Floor::At(key(5)), basis);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(5)));

        // Learned at an older epoch: a commit made a task ready meanwhile.
        claiming.lower(&[("ws".into(), key(3))]);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(3)));
        claiming.learn("ws", Floor::At(key(9)), basis);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(3)));

        // Two floors learned at one epoch: the higher; a task ready past it: unchanged.
        let (_, basis) = claiming.floor("ws");
        claiming.learn("ws", Floor::At(key(8)), basis);
        claiming.learn("ws", Floor::At(key(6)), basis);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(8)));
        claiming.lower(&[("ws".into(), key(12))]);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(8)));

        // Nothing ready, then a task ready: the floor is that task.
        let (_, basis) = claiming.floor("ws");
        claiming.learn("ws", Floor::End, basis);
        assert_eq!(claiming.floor("ws").0, Floor::End);
        claiming.lower(&[("ws".into(), key(1))]);
        assert_eq!(claiming.floor("ws").0, Floor::At(key(1)));
        assert_eq!(claiming.floor("other").0, Floor::Start);

        let (_, basis) = claiming.floor("ws");
        claiming.forget();
        assert_eq!(claiming.floor("ws").0, Floor::Start);
        claiming.learn("ws", Floor::At(key(2)), basis);
        assert_eq!(
            claiming.floor("ws").0,
            Floor::Start,
            "learned before forgetting"
        );
    }

    /// Claims coming faster than the lifetime do not keep a floor alive: its age is the
    /// age of the scan from the first entry it comes from.
    #[test]
    fn a_floor_ages_from_the_scan_it_comes_from() {
        let claiming = Claiming::default();
        let (_, basis) = claiming.floor("ws");
        let Some(since) = Instant::now().checked_sub(FLOOR_LIFETIME) else {
            return;
        };
        let old = Basis { since, ..basis };
        claiming.learn("ws", Floor::At(key(1)), old);
        assert_eq!(
            claiming.floor("ws").0,
            Floor::Start,
            "as old as its first scan"
        );
        claiming.learn("ws", Floor::At(key(1)), basis);
        let (floor, next) = claiming.floor("ws");
        assert_eq!(floor, Floor::At(key(1)));
        assert_eq!(
            next.since, basis.since,
            "a claim from it learns as old a floor"
        );
    }

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
