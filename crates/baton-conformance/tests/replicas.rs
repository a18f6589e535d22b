//! Several writers on one database at once: PostgreSQL replicas, here in one process (one
//! store, so one writer connection, per replica) so that their transactions truly overlap.
//! The embedded store has one writer, so these run on PostgreSQL only. Each test races the
//! operations that run beside each other (claims and lease operations, `LockMode::Shared`)
//! against each other and against the ones that run alone (planning), then checks what
//! no interleaving may break: each task claimed once, DAG release exactly once, one agent per
//! name, idempotent replies, and a gap-free event log.

use baton_conformance::{open_replicas, T0};
use baton_core::api::*;
use baton_core::model::{Event, Task};
use baton_core::state::Status;
use baton_core::time::ManualClock;
use baton_core::{Baton, LeaseOp};
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;

/// Replicas of one workspace: each engine with its own store, and its planner actor.
struct Fleet {
    nodes: Vec<(Baton, Actor)>,
}

async fn fleet(n: usize) -> Option<Fleet> {
    let clock = ManualClock::new(T0);
    let mut nodes = Vec::new();
    for store in open_replicas(n)? {
        let baton = Baton::new(store, Arc::new(clock.clone()));
        let actor = baton.actor("default", "planner").await.expect("actor");
        nodes.push((baton, actor));
    }
    Some(Fleet { nodes })
}

impl Fleet {
    fn node(&self, i: usize) -> (&Baton, &Actor) {
        let (b, a) = &self.nodes[i % self.nodes.len()];
        (b, a)
    }

    async fn create(&self, title: &str, blocked_by: Vec<String>) -> Task {
        let (b, a) = self.node(0);
        let req = CreateTask {
            title: title.into(),
            blocked_by,
            ..Default::default()
        };
        b.create_task(a, None, req).await.expect("create").task
    }

    fn get(&self, id: &str) -> Task {
        let (b, a) = self.node(1);
        b.get_task(a, id).expect("get").task
    }

    /// Every event, read through one replica, checked to be numbered 1, 2, 3… with no gap.
    fn events(&self) -> Vec<Event> {
        let (b, a) = self.node(1);
        let mut out: Vec<Event> = Vec::new();
        loop {
            let after = out.last().map(|e| e.seq).unwrap_or(0);
            let page = b.events(a, after, 1000).expect("events").events;
            if page.is_empty() {
                break;
            }
            out.extend(page);
        }
        for (i, e) in out.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "event log has a gap or a repeat");
        }
        out
    }
}

fn count(events: &[Event], kind: &str, task: &str) -> usize {
    events
        .iter()
        .filter(|e| e.kind == kind && e.task_id.as_deref() == Some(task))
        .count()
}

async fn claim(b: &Baton, a: &Actor, agent: &str, count: u32) -> Vec<Claim> {
    let req = ClaimRequest {
        agent: agent.into(),
        count: Some(count),
        ..Default::default()
    };
    b.claim(a, None, req).await.expect("claim").claims
}

async fn complete(b: &Baton, a: &Actor, c: &Claim) {
    b.lease_op(
        a,
        None,
        &c.task.id,
        &c.lease.token,
        LeaseOp::Complete(Complete::default()),
    )
    .await
    .expect("complete");
}

/// Claimers on four replicas drain one queue: every task is claimed and completed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claimers_on_every_replica_take_each_task_once() {
    let Some(fleet) = fleet(4).await else { return };
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(fleet.create(&format!("t{i}"), vec![]).await.id);
    }
    let fleet = Arc::new(fleet);
    let workers = (0..16).map(|w| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let (b, a) = fleet.node(w);
            let mut done = Vec::new();
            loop {
                let claims = claim(b, a, &format!("w{w}"), 1 + (w as u32 % 3)).await;
                if claims.is_empty() {
                    return done;
                }
                for c in &claims {
                    complete(b, a, c).await;
                    done.push(c.task.id.clone());
                }
            }
        })
    });
    let mut times: HashMap<String, usize> = HashMap::new();
    for done in join_all(workers).await {
        for id in done.expect("worker") {
            *times.entry(id).or_default() += 1;
        }
    }
    let events = fleet.events();
    for id in &ids {
        assert_eq!(
            times.get(id),
            Some(&1),
            "task {id} completed {:?} times",
            times.get(id)
        );
        assert_eq!(fleet.get(id).status, Status::Done);
        assert_eq!(count(&events, "task.claimed", id), 1);
    }
}

/// Claimers on four replicas drain a queue while planners on two of them keep adding
/// tasks, each more urgent than the last, so ahead of every claim floor the claims have
/// raised: each is claimed and completed once, and none is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_made_ready_below_the_claim_floor_are_claimed() {
    let Some(fleet) = fleet(4).await else { return };
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(fleet.create(&format!("t{i}"), vec![]).await.id);
    }
    let fleet = Arc::new(fleet);
    let planned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let planners = (1..3).map(|p| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let (b, a) = fleet.node(p);
            let mut ids = Vec::new();
            for i in 0..30 {
                let req = CreateTask {
                    title: format!("urgent {p}.{i}"),
                    priority: Some(1 + i),
                    ..Default::default()
                };
                ids.push(b.create_task(a, None, req).await.expect("create").task.id);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            ids
        })
    });
    let workers = (0..8).map(|w| {
        let (fleet, planned) = (fleet.clone(), planned.clone());
        tokio::spawn(async move {
            let (b, a) = fleet.node(w);
            let mut done = Vec::new();
            loop {
                let all_planned = planned.load(std::sync::atomic::Ordering::SeqCst);
                let claims = claim(b, a, &format!("w{w}"), 1 + (w as u32 % 2)).await;
                if claims.is_empty() && all_planned {
                    return done;
                }
                for c in &claims {
                    complete(b, a, c).await;
                    done.push(c.task.id.clone());
                }
                tokio::task::yield_now().await;
            }
        })
    });
    let workers: Vec<_> = workers.collect();
    for created in join_all(planners).await {
        ids.extend(created.expect("planner"));
    }
    planned.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut times: HashMap<String, usize> = HashMap::new();
    for done in join_all(workers).await {
        for id in done.expect("worker") {
            *times.entry(id).or_default() += 1;
        }
    }
    assert_eq!(ids.len(), 100);
    for id in &ids {
        assert_eq!(
            fleet.get(id).status,
            Status::Done,
            "task {id} was left behind"
        );
        assert_eq!(times.get(id), Some(&1), "task {id}");
    }
}

/// Thirty blockers of one task completed at once through four replicas: the last one to
/// commit releases it, exactly once, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_in_is_released_exactly_once() {
    let Some(fleet) = fleet(4).await else { return };
    for round in 0..4 {
        let mut blockers = Vec::new();
        for i in 0..30 {
            blockers.push(fleet.create(&format!("r{round} b{i}"), vec![]).await.id);
        }
        let join = fleet
            .create(&format!("r{round} join"), blockers.clone())
            .await;
        assert_eq!(join.status, Status::Blocked);
        let (b, a) = fleet.node(0);
        let claims = claim(b, a, "holder", 30).await;
        assert_eq!(claims.len(), 30);
        join_all(claims.iter().enumerate().map(|(i, c)| {
            let (b, a) = fleet.node(i);
            complete(b, a, c)
        }))
        .await;
        assert_eq!(fleet.get(&join.id).status, Status::Ready, "round {round}");
        let events = fleet.events();
        assert_eq!(
            count(&events, "task.released", &join.id),
            1,
            "round {round}"
        );
        // Take the join out of the queue for the next round.
        let claims = claim(b, a, "holder", 1).await;
        assert_eq!(claims[0].task.id, join.id);
        complete(b, a, &claims[0]).await;
    }
}

/// A new agent's first claims on four replicas at once register it once; one idempotent
/// claim sent to four replicas at once claims once and answers all four alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_or_create_races_create_once() {
    let Some(fleet) = fleet(4).await else { return };
    let answers = join_all((0..4).map(|i| {
        let (b, a) = fleet.node(i);
        claim(b, a, "newcomer", 1)
    }))
    .await;
    assert!(answers.iter().all(|c| c.is_empty()));
    let (b, a) = fleet.node(2);
    let agents = b.agents(a).expect("agents").agents;
    assert_eq!(agents.iter().filter(|x| x.name == "newcomer").count(), 1);

    let task = fleet.create("once", vec![]).await;
    let req = ClaimRequest {
        agent: "newcomer".into(),
        ..Default::default()
    };
    let answers = join_all((0..4).map(|i| {
        let (b, a) = fleet.node(i);
        let req = req.clone();
        async move { b.claim(a, Some("claim-once"), req).await.expect("claim") }
    }))
    .await;
    for c in &answers {
        assert_eq!(c.claims.len(), 1);
        assert_eq!(c.claims[0].task.id, task.id);
        assert_eq!(c.claims[0].lease.token, answers[0].claims[0].lease.token);
    }
    assert_eq!(count(&fleet.events(), "task.claimed", &task.id), 1);
}

/// A planner extends a chain of dependencies on one replica while workers on the others
/// complete its links as soon as they are released: planning (which runs alone) and
/// completing (which runs beside other completions) interleave, and no link is stranded
/// blocked behind a blocker that is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planning_beside_completions_strands_nothing() {
    let Some(fleet) = fleet(3).await else { return };
    let fleet = Arc::new(fleet);
    const LINKS: usize = 40;
    let planner = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let mut chain: Vec<String> = Vec::new();
            for i in 0..LINKS {
                let blocked_by = chain.last().cloned().into_iter().collect();
                chain.push(fleet.create(&format!("link {i}"), blocked_by).await.id);
            }
            chain
        })
    };
    let workers = (1..=4).map(|w| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let (b, a) = fleet.node(1 + w % 2);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut done = 0;
            while done < LINKS && tokio::time::Instant::now() < deadline {
                match claim(b, a, &format!("w{w}"), 1).await.first() {
                    Some(c) => complete(b, a, c).await,
                    None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
                done = fleet
                    .events()
                    .iter()
                    .filter(|e| e.kind == "task.completed")
                    .count();
            }
        })
    });
    let chain = planner.await.expect("planner");
    join_all(workers).await;
    let events = fleet.events();
    let mut last_completed = 0;
    for id in &chain {
        assert_eq!(fleet.get(id).status, Status::Done, "link {id} was stranded");
        let seq = events
            .iter()
            .find(|e| e.kind == "task.completed" && e.task_id.as_deref() == Some(id))
            .expect("completed")
            .seq;
        assert!(seq > last_completed, "a link completed before its blocker");
        last_completed = seq;
    }
}

/// A heartbeat and the completion of one task on two replicas at once: whatever order
/// they commit in, a heartbeat that was answered is in the run the completion ends (its
/// usage is not written over by a copy of the run read before it committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completion_keeps_the_heartbeat_committed_before_it() {
    let Some(fleet) = fleet(2).await else { return };
    for i in 0..60 {
        fleet.create(&format!("t{i}"), vec![]).await;
    }
    let (b0, a0) = fleet.node(0);
    let mut claims = claim(b0, a0, "w", 60).await;
    claims.extend(claim(b0, a0, "w", 60).await);
    assert_eq!(claims.len(), 60);
    let races = claims.iter().enumerate().map(|(i, c)| {
        let (hb_node, done_node) = (fleet.node(i), fleet.node(i + 1));
        async move {
            let hb = Heartbeat {
                usage: Some(serde_json::json!({ "cost": i })),
                ..Default::default()
            };
            let (beat, _) = tokio::join!(
                hb_node.0.lease_op(
                    hb_node.1,
                    None,
                    &c.task.id,
                    &c.lease.token,
                    LeaseOp::Heartbeat(hb)
                ),
                complete(done_node.0, done_node.1, c),
            );
            beat.is_ok()
        }
    });
    let beats = join_all(races).await;
    let events = fleet.events();
    let mut answered = 0;
    for (i, (c, beat)) in claims.iter().zip(beats).enumerate() {
        let completed = events
            .iter()
            .find(|e| e.kind == "task.completed" && e.task_id.as_deref() == Some(&c.task.id))
            .expect("completed");
        if beat {
            answered += 1;
            assert_eq!(
                completed.data["run"]["usage"]["cost"], i,
                "task {i}: the answered heartbeat's usage is lost"
            );
        }
    }
    assert!(answered > 0, "no heartbeat came before its completion");
}

/// Claimers on four replicas drain tasks that share a concurrency key with a limit of 2,
/// several tasks a claim: the event log, which orders every commit, never shows more than
/// two of them leased at once, and every task is completed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_key_holds_across_replicas() {
    let Some(fleet) = fleet(4).await else { return };
    const LIMIT: u32 = 2;
    let mut ids = Vec::new();
    for i in 0..30 {
        let (b, a) = fleet.node(0);
        let req = CreateTask {
            title: format!("migration {i}"),
            concurrency_key: Some("area:db".into()),
            concurrency_limit: Some(LIMIT),
            ..Default::default()
        };
        ids.push(b.create_task(a, None, req).await.expect("create").task.id);
    }
    let fleet = Arc::new(fleet);
    drain_with_limits(&fleet, &ids, LIMIT as usize).await;
    let most = most_leased_at_once(&fleet.events(), &ids);
    assert_eq!(
        most, LIMIT as usize,
        "at most {LIMIT} at once, and the limit used"
    );
}

/// One agent with a max_concurrency of 3 claims from sixteen workers on four replicas at
/// once: three tasks are granted in all, every other claim is AT_CAPACITY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agents_max_concurrency_holds_across_replicas() {
    let Some(fleet) = fleet(4).await else { return };
    for i in 0..20 {
        fleet.create(&format!("t{i}"), vec![]).await;
    }
    let (b, a) = fleet.node(0);
    let register = RegisterAgent {
        agent: "w".into(),
        max_concurrency: Some(3),
        ..Default::default()
    };
    b.register_agent(a, None, register).await.expect("register");
    let fleet = Arc::new(fleet);
    let claims = (0..16).map(|w| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let (b, a) = fleet.node(w);
            let req = ClaimRequest {
                agent: "w".into(),
                count: Some(2),
                ..Default::default()
            };
            b.claim(a, None, req).await.map(|c| c.claims.len())
        })
    });
    let mut granted = 0;
    for outcome in join_all(claims).await {
        match outcome.expect("claimer") {
            Ok(n) => granted += n,
            Err(e) => assert_eq!(e.code, baton_core::Code::AtCapacity, "{e:?}"),
        }
    }
    assert_eq!(granted, 3);
    let held = fleet
        .events()
        .iter()
        .filter(|e| e.kind == "task.claimed")
        .count();
    assert_eq!(held, 3);
}

/// Sixteen workers on the fleet's replicas claim (one to three tasks a claim) and complete
/// until every task of `ids` is done, each claim granting at most `per_claim`; every task
/// must be completed exactly once.
async fn drain_with_limits(fleet: &Arc<Fleet>, ids: &[String], per_claim: usize) {
    let total = ids.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..16).map(|w| {
        let (fleet, done) = (fleet.clone(), done.clone());
        tokio::spawn(async move {
            let (b, a) = fleet.node(w);
            let mut completed = Vec::new();
            while done.load(std::sync::atomic::Ordering::SeqCst) < total {
                let claims = claim(b, a, &format!("w{w}"), 1 + (w as u32 % 3)).await;
                if claims.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    continue;
                }
                assert!(claims.len() <= per_claim, "one claim took {}", claims.len());
                for c in &claims {
                    complete(b, a, c).await;
                    completed.push(c.task.id.clone());
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            completed
        })
    });
    let mut times: HashMap<String, usize> = HashMap::new();
    for completed in join_all(workers).await {
        for id in completed.expect("worker") {
            *times.entry(id).or_default() += 1;
        }
    }
    for id in ids {
        assert_eq!(times.get(id), Some(&1), "task {id}");
    }
}

/// The most of `ids` leased at once in the log's view, which orders every commit: a task is
/// leased from the event that leaves it claimed (or in progress, or waiting) to the one
/// that leaves it otherwise.
fn most_leased_at_once(events: &[Event], ids: &[String]) -> usize {
    let mut leased = std::collections::HashSet::new();
    let mut most = 0;
    for e in events {
        let Some(task) = e
            .task_id
            .as_deref()
            .filter(|t| ids.iter().any(|id| id == t))
        else {
            continue;
        };
        let Some(status) = e.data["task"]["status"].as_str() else {
            continue;
        };
        if matches!(status, "claimed" | "in_progress" | "waiting") {
            leased.insert(task.to_string());
        } else {
            leased.remove(task);
        }
        most = most.max(leased.len());
    }
    most
}

/// Tasks of a project whose file scopes are exclusive, all over the same files, drained
/// by sixteen workers on four replicas: the log never shows two of them leased at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_scopes_hold_across_replicas() {
    let Some(fleet) = fleet(4).await else { return };
    let (b, a) = fleet.node(0);
    let strict = CreateProject {
        name: "strict".into(),
        exclusive_scopes: Some(true),
        ..Default::default()
    };
    b.create_project(a, None, strict).await.expect("project");
    let mut ids = Vec::new();
    for i in 0..20 {
        let req = CreateTask {
            title: format!("edit {i}"),
            project: Some("strict".into()),
            paths: vec![
                format!("src/{}/**", ["db", "api"][i % 2]),
                "src/lib.rs".into(),
            ],
            ..Default::default()
        };
        ids.push(b.create_task(a, None, req).await.expect("create").task.id);
    }
    let fleet = Arc::new(fleet);
    drain_with_limits(&fleet, &ids, 1).await;
    assert_eq!(most_leased_at_once(&fleet.events(), &ids), 1);
}

/// A project limited to three leases at once, drained by sixteen workers on four replicas
/// claiming one to three tasks each: every task done once, and the log never shows more
/// than three of the project's tasks leased at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projects_max_concurrency_holds_across_replicas() {
    let Some(fleet) = fleet(4).await else { return };
    let (b, a) = fleet.node(0);
    let narrow = CreateProject {
        name: "narrow".into(),
        max_concurrency: Some(3),
        ..Default::default()
    };
    b.create_project(a, None, narrow).await.expect("project");
    let mut ids = Vec::new();
    for i in 0..30 {
        let req = CreateTask {
            title: format!("t{i}"),
            project: Some("narrow".into()),
            ..Default::default()
        };
        ids.push(b.create_task(a, None, req).await.expect("create").task.id);
    }
    let fleet = Arc::new(fleet);
    drain_with_limits(&fleet, &ids, 3).await;
    let most = most_leased_at_once(&fleet.events(), &ids);
    assert!((2..=3).contains(&most), "{most} leased at once");
}
