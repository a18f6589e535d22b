//! Property test: random sequences of operations, checked step by step against a small
//! reference model of the protocol. Invariants after every step: the engine agrees with the
//! model on each task's status, attempts and epoch; at most one live lease per task; epochs
//! only grow; a stale token is refused and changes nothing; the event log has no gaps; and
//! at the end, replay rebuilds exactly the live state.

use baton_conformance::{backends, Env};
use baton_core::api::*;
use baton_core::model::RetryPolicy;
use baton_core::state::{Op, Status};
use baton_core::time::Duration;
use baton_core::{Code, LeaseOp};
use proptest::prelude::*;

const TTL: i64 = 10_000;

#[derive(Debug, Clone)]
enum Action {
    Create { priority: i64 },
    Claim,
    Heartbeat { task: usize, stale: bool },
    Complete { task: usize, stale: bool },
    Fail { task: usize, stale: bool },
    Release { task: usize, stale: bool },
    Cancel { task: usize },
    Retry { task: usize },
    Advance { ms: i64 },
}

fn action() -> impl Strategy<Value = Action> {
    let task = 0usize..6;
    prop_oneof![
        3 => (0i64..3).prop_map(|priority| Action::Create { priority }),
        4 => Just(Action::Claim),
        2 => (task.clone(), any::<bool>()).prop_map(|(task, stale)| Action::Heartbeat { task, stale }),
        2 => (task.clone(), any::<bool>()).prop_map(|(task, stale)| Action::Complete { task, stale }),
        2 => (task.clone(), any::<bool>()).prop_map(|(task, stale)| Action::Fail { task, stale }),
        1 => (task.clone(), any::<bool>()).prop_map(|(task, stale)| Action::Release { task, stale }),
        1 => task.clone().prop_map(|task| Action::Cancel { task }),
        1 => task.prop_map(|task| Action::Retry { task }),
        2 => prop_oneof![Just(3_000i64), Just(12_000), Just(400_000)].prop_map(|ms| Action::Advance { ms }),
    ]
}

/// The reference model of one task.
#[derive(Debug, Clone)]
struct Model {
    id: String,
    priority: i64,
    status: Status,
    attempts: u32,
    epoch: u64,
    not_before: i64,
    lease: Option<(String, i64)>,
    old_tokens: Vec<String>,
}

struct World {
    clock: baton_core::time::ManualClock,
    tasks: Vec<Model>,
    policy: RetryPolicy,
}

impl World {
    fn now(&self) -> i64 {
        use baton_core::time::Clock;
        self.clock.now()
    }

    /// Lease expiry as the engine computes it: as of the expiry time.
    fn expire(&mut self, i: usize) {
        let policy = self.policy;
        let t = &mut self.tasks[i];
        if let Some((token, exp)) = t.lease.clone() {
            t.old_tokens.push(token);
            t.lease = None;
            if t.attempts >= policy.max_attempts {
                t.status = Status::Failed;
            } else {
                t.status = Status::Ready;
                t.not_before = exp + policy.backoff(t.attempts, &t.id);
            }
        }
    }

    fn expire_due(&mut self, i: usize) {
        let now = self.now();
        if self.tasks[i]
            .lease
            .as_ref()
            .is_some_and(|(_, exp)| *exp <= now)
        {
            self.expire(i);
        }
    }

    fn token(&self, i: usize, stale: bool) -> (String, bool) {
        let t = &self.tasks[i];
        match (&t.lease, stale, t.old_tokens.last()) {
            (Some((tok, exp)), false, _) if *exp > self.now() => (tok.clone(), true),
            (_, _, Some(old)) => (old.clone(), false),
            (Some((tok, exp)), _, None) if *exp <= self.now() => (tok.clone(), false), // expired
            _ => ("lse_never_issued".into(), false),
        }
    }
}

async fn step(env: &Env, w: &mut World, action: &Action) {
    match *action {
        Action::Create { priority } => {
            if w.tasks.len() >= 6 {
                return;
            }
            let req = CreateTask {
                title: "t".into(),
                priority: Some(priority),
                lease_ttl: Some(Duration(TTL as u64)),
                ..Default::default()
            };
            let t = env.create(req).await.unwrap();
            w.tasks.push(Model {
                id: t.id,
                priority,
                status: Status::Ready,
                attempts: 0,
                epoch: 0,
                not_before: 0,
                lease: None,
                old_tokens: vec![],
            });
        }
        Action::Claim => {
            for i in 0..w.tasks.len() {
                w.expire_due(i);
            }
            let now = w.now();
            let expected = w
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.status == Status::Ready && t.not_before <= now)
                .max_by_key(|(i, t)| (t.priority, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            let got = env.claim("agent").await;
            match (expected, got) {
                (None, None) => {}
                (Some(i), Some(c)) => {
                    let t = &mut w.tasks[i];
                    assert_eq!(c.task.id, t.id, "claim order");
                    assert_eq!(c.lease.epoch, t.epoch + 1, "epoch grows by one per claim");
                    t.epoch += 1;
                    t.attempts += 1;
                    t.status = Status::Claimed;
                    t.lease = Some((c.lease.token, c.lease.expires_at));
                }
                (e, g) => panic!(
                    "claim: model expected {e:?}, engine gave {:?}",
                    g.map(|c| c.task.id)
                ),
            }
        }
        Action::Heartbeat { task, stale }
        | Action::Complete { task, stale }
        | Action::Fail { task, stale }
        | Action::Release { task, stale } => {
            if task >= w.tasks.len() {
                return;
            }
            w.expire_due(task);
            let (token, valid) = w.token(task, stale);
            let id = w.tasks[task].id.clone();
            let op = match action {
                Action::Heartbeat { .. } => LeaseOp::Heartbeat(Heartbeat::default()),
                Action::Complete { .. } => LeaseOp::Complete(Complete::default()),
                Action::Fail { .. } => LeaseOp::Fail(Fail {
                    error: "x".into(),
                    ..Default::default()
                }),
                _ => LeaseOp::Release,
            };
            let events_before = env.event_count();
            let result = env.lease(&id, &token, op).await;
            if !valid {
                let err = result.expect_err("a stale or expired token must be refused");
                assert_eq!(err.code, Code::LeaseLost);
                assert_eq!(
                    env.event_count(),
                    events_before,
                    "a stale token changes nothing"
                );
                return;
            }
            result.unwrap();
            let now = w.now();
            let policy = w.policy;
            let t = &mut w.tasks[task];
            match action {
                Action::Heartbeat { .. } => t.lease = Some((token, now + TTL)),
                Action::Complete { .. } => {
                    t.old_tokens.push(token);
                    t.lease = None;
                    t.status = Status::Done;
                }
                Action::Fail { .. } => {
                    t.old_tokens.push(token);
                    t.lease = None;
                    if t.attempts < policy.max_attempts {
                        t.status = Status::Ready;
                        t.not_before = now + policy.backoff(t.attempts, &t.id);
                    } else {
                        t.status = Status::Failed;
                    }
                }
                _ => {
                    t.old_tokens.push(token);
                    t.lease = None;
                    t.attempts -= 1;
                    t.status = Status::Ready;
                    t.not_before = 0;
                }
            }
        }
        Action::Cancel { task } | Action::Retry { task } => {
            if task >= w.tasks.len() {
                return;
            }
            w.expire_due(task);
            let op = if matches!(action, Action::Cancel { .. }) {
                Op::Cancel
            } else {
                Op::Retry
            };
            let id = w.tasks[task].id.clone();
            let allowed = baton_core::state::is_allowed(w.tasks[task].status, op);
            let result = env.baton.transition(&env.actor, None, op, &id, None).await;
            assert_eq!(
                result.is_ok(),
                allowed,
                "{op:?} on {:?}: {result:?}",
                w.tasks[task].status
            );
            if allowed {
                let t = &mut w.tasks[task];
                if let Some((tok, _)) = t.lease.take() {
                    t.old_tokens.push(tok);
                }
                if op == Op::Cancel {
                    t.status = Status::Canceled;
                } else {
                    t.status = Status::Ready;
                    t.attempts = 0;
                    t.not_before = 0;
                }
            }
        }
        Action::Advance { ms } => env.clock.advance(ms),
    }
}

fn check_invariants(env: &Env, w: &World) {
    let events = env.all_events();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "event sequence has no gaps");
    }
    for m in &w.tasks {
        let t = env.get(&m.id);
        assert_eq!(t.epoch, m.epoch, "epoch of {}", m.id);
        assert_eq!(t.attempts, m.attempts, "attempts of {}", m.id);
        // The engine expires lazily: a lapsed lease still shows until a write touches the task
        // (a refused write rolls its expiry back), so status is compared once settled.
        let lapsed = m.lease.as_ref().is_some_and(|(_, exp)| *exp <= w.now())
            || t.lease.as_ref().is_some_and(|l| l.expires_at <= w.now());
        if !lapsed {
            let status = if t.status == Status::InProgress {
                Status::Claimed
            } else {
                t.status
            };
            assert_eq!(status, m.status, "status of {}", m.id);
        }
        assert_eq!(
            t.lease.is_some(),
            t.status.is_leased(),
            "a lease exactly while leased"
        );
        if let Some(lease) = &t.lease {
            assert_eq!(lease.epoch, t.epoch, "the live lease is the newest epoch");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn protocol_matches_model(actions in proptest::collection::vec(action(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for backend in backends() {
                let env = Env::new(backend).await;
                let mut w = World { clock: env.clock.clone(), tasks: vec![], policy: RetryPolicy::default() };
                for a in &actions {
                    step(&env, &mut w, a).await;
                    check_invariants(&env, &w);
                }
                assert_eq!(env.replay_difference().await, None, "replay equals live state");
            }
        });
    }
}
